"""Prediction targets: turn a raw label into the quantity a regressor models, and back.

A label (a field of the region layer, or points counted per region) can be modelled as a **count**
(the raw value), a **density** (value per km2 of the region) or a **rate** (value per unit of a
denominator field, e.g. per resident), optionally through ``log1p``. Raw counts over census units
drawn to hold similar populations are nearly unpredictable, while log1p densities are learnable
(see SPEC section 5), so the transform matters as much as the model.

:func:`make_target` drops the regions whose target is undefined (missing value, missing or
non-positive area or denominator, a quotient that overflows) and returns a :class:`Target` whose
:meth:`Target.inverse` maps model-space predictions back to the label's own units (the units written to
the predictions layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend.config import LabelSpec
from backend.errors import ConfigError, InputError
from regionlens_common import TARGETS, label_units

__all__ = ["Target", "make_target", "MIN_REGIONS", "TARGET_KINDS"]

#: Fewest regions with a defined target that a label needs to be evaluated at all.
MIN_REGIONS = 10
#: Accepted values of :attr:`backend.config.LabelSpec.target`.
TARGET_KINDS = TARGETS


@dataclass
class Target:
    """A label in model space.

    Attributes:
        label: The label's name (:attr:`LabelSpec.name`).
        kind: ``"count"``, ``"density"`` or ``"rate"``.
        log1p: Whether ``y`` went through ``log1p``.
        y: Modelled values, indexed by ``region_id``, only regions where the target is defined (no NaN).
        description: Human-readable model-space quantity, e.g. ``"log1p(Population per km2)"``; fills
            the ``target`` column of the metrics table.
        scale: Per-region factor that turns a target value back into the label's units (area in km2
            for a density, the denominator for a rate, 1 for a count), indexed like ``y``.
        n_dropped: Number of input regions dropped because the target is undefined there.
        n_overflow: Of those, regions whose value divided by area or denominator is not finite.
        units: Units of ``y`` as a planner reads them (:func:`regionlens_common.label_units`): ``count``,
            ``per km²``, ``per Population``, wrapped as ``log1p(...)``; fills the ``units`` column of the
            metrics table, the space every metric is computed in.
    """

    label: str
    kind: str
    log1p: bool
    y: pd.Series
    description: str
    scale: pd.Series
    n_dropped: int
    n_overflow: int = 0
    units: str = ""

    def inverse(self, y_model: pd.Series | np.ndarray | Sequence[float]) -> pd.Series:
        """Map model-space values back to the label's own units.

        ``expm1`` first when the target is log1p, then multiply by the region's area (density) or
        denominator (rate); a count is returned as it is.

        Args:
            y_model: Model-space values. A Series is aligned on its ``region_id`` index (regions not in
                :attr:`y` get NaN); an array or sequence must follow the order of :attr:`y`.

        Returns:
            Values in the label's units, a float Series indexed like the input (or like :attr:`y`).

        Raises:
            ValueError: If an array's length differs from the number of regions in :attr:`y`.
        """
        if isinstance(y_model, pd.Series):
            values = y_model.astype(float)
        else:
            arr = np.asarray(y_model, dtype=float).ravel()
            if len(arr) != len(self.y):
                raise ValueError(
                    f"Label '{self.label}': got {len(arr)} predictions for {len(self.y)} regions; pass a "
                    "Series indexed by region_id or an array in the order of Target.y."
                )
            values = pd.Series(arr, index=self.y.index)
        if self.log1p:
            values = np.expm1(values)
        out = values * self.scale.reindex(values.index)
        out.name = self.label
        return out.astype(float)


def _numeric(series: pd.Series, what: str, label: str) -> pd.Series:
    """Convert to float, raising if a non-missing value is not a number."""
    try:
        out = pd.to_numeric(series, errors="raise")
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"Label '{label}': the {what} holds values that are not numbers ({exc}); choose a numeric field."
        ) from exc
    out = out.astype(float)
    return out.where(np.isfinite(out))


def make_target(
    raw: pd.Series,
    spec: LabelSpec,
    areas_km2: pd.Series,
    per: pd.Series | None = None,
) -> Target:
    """Build the model-space target of one label.

    Args:
        raw: The label's raw values indexed by ``region_id`` (a field of the region layer, or counted
            points). Missing values are NaN/None.
        spec: The label's specification (``target`` kind, ``log1p``, ``per_field``).
        areas_km2: Region areas in km2 indexed by ``region_id``; used for densities. Regions with a
            missing or non-positive area are dropped from a density target.
        per: Denominator values indexed by ``region_id`` (the ``per_field`` column) for a rate.
            Regions with a missing or non-positive denominator are dropped from a rate target.

    Returns:
        The :class:`Target`; ``n_dropped`` counts the regions of ``raw`` that were left out.

    Raises:
        ConfigError: If ``spec.target`` is unknown, or a rate is asked for without ``per`` values.
        InputError: If the label, area or denominator values are not numeric, a log1p target has
            values at or below -1, or fewer than :data:`MIN_REGIONS` regions remain.
    """
    if spec.target not in TARGET_KINDS:
        raise ConfigError(f"Label '{spec.name}': target must be one of {TARGET_KINDS}, not '{spec.target}'.")
    index = pd.Index(raw.index, name="region_id")
    values = _numeric(pd.Series(raw.to_numpy(), index=index), "label", spec.name)
    quantity = spec.field or spec.name

    if spec.target == "count":
        scale = pd.Series(1.0, index=index)
        description = quantity
    elif spec.target == "density":
        scale = _numeric(areas_km2, "region area", spec.name).reindex(index)
        description = f"{quantity} {label_units('density')}"  # the words the metrics dialog shows
    else:
        if per is None:
            raise ConfigError(f"Label '{spec.name}': target 'rate' needs the values of per_field ({spec.per_field!r}).")
        scale = _numeric(per, f"denominator field '{spec.per_field}'", spec.name).reindex(index)
        description = f"{quantity} per {spec.per_field or 'unit'}"
    scale = scale.where(scale > 0)

    valid = values.notna() & scale.notna()
    with np.errstate(over="ignore"):
        y = (values[valid] / scale[valid]).astype(float)
    overflow = y.index[~np.isfinite(y.to_numpy())]  # e.g. 1e308 people on a fraction of a km2
    if len(overflow):
        valid[overflow] = False
        y = y.drop(overflow)
    if spec.log1p:
        if (y <= -1).any():
            raise InputError(
                f"Label '{spec.name}': log1p needs values above -1, but {int((y <= -1).sum())} regions have "
                f"{description} <= -1; turn log1p off for this label."
            )
        y = np.log1p(y)
        description = f"log1p({description})"
    y.name = spec.name
    n_dropped = int((~valid).sum())
    if len(y) < MIN_REGIONS:
        raise InputError(
            f"Label '{spec.name}': only {len(y)} regions have a usable {description} ({n_dropped} dropped for "
            f"missing values, areas or denominators); at least {MIN_REGIONS} are needed."
        )
    return Target(
        label=spec.name,
        kind=spec.target,
        log1p=bool(spec.log1p),
        y=y,
        description=description,
        scale=scale[valid].astype(float),
        n_dropped=n_dropped,
        n_overflow=len(overflow),
        units=label_units(spec.target, bool(spec.log1p), spec.per_field),
    )
