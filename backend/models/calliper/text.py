"""POI descriptions for CaLLiPer (templates, names).

CaLLiPer (Wang, Cheng, Feng, Chen and Zhang, "CaLLiPer: Contrastive Language-Location Pre-training for
urban region representations", arXiv 2411.06229) pairs every POI's location with a short templated
description of the POI, e.g. "A place of cafe" or, with names, "Blue Bottle, a place of cafe". The
descriptions go through a frozen sentence encoder (default: the packaged all-MiniLM-L6-v2, 384-d) and its
on-disk cache, both in :mod:`backend.encoders.text`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import ConfigError

__all__ = [
    "DEFAULT_NAME_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "NAMES_CHOICES",
    "TEMPLATE_FIELDS",
    "build_texts",
    "describe_pois",
    "category_label",
    "check_template",
    "use_names",
]

#: Description of a POI without a name (``{category}``, ``{article}`` and ``{name}`` can be used).
DEFAULT_TEMPLATE = "A place of {category}"
#: Description of a named POI when names are used.
DEFAULT_NAME_TEMPLATE = "{name}, a place of {category}"
#: Values of the ``names`` parameter: ``auto`` uses names when the POI layer has any.
NAMES_CHOICES = ("auto", "yes", "no")
#: Placeholders a template may use.
TEMPLATE_FIELDS = ("category", "name", "article")


def category_label(category: Any) -> str:
    """``"place_of_worship"`` -> ``"place of worship"`` (underscores to spaces, trimmed)."""
    return " ".join(str(category).replace("_", " ").split())


def check_template(template: str, what: str = "template") -> None:
    """Check that ``template`` only uses :data:`TEMPLATE_FIELDS` and holds ``{category}`` or ``{name}``.

    Raises:
        ConfigError: On an unknown placeholder, a malformed template, or one without any placeholder.
    """
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"calliper: the {what} '{template}' is malformed ({exc}).") from exc
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            f"calliper: the {what} '{template}' uses unknown placeholders {unknown}; "
            f"allowed: {{category}}, {{name}}, {{article}}."
        )
    if not {"category", "name"} & set(names):
        raise ConfigError(f"calliper: the {what} '{template}' must contain {{category}} (or {{name}}).")


def use_names(names: str, values: Iterable[Any] | None) -> bool:
    """Whether descriptions include POI names.

    Args:
        names: ``"auto"`` (when any POI has a name), ``"yes"`` or ``"no"``.
        values: The POI names (None or empty strings where a POI has none), or None without a name field.
    """
    if names == "no" or values is None:
        return False
    has_any = any(isinstance(v, str) and v.strip() for v in values)
    return has_any if names in ("auto", "yes") else False


def describe_pois(
    categories: Sequence[Any] | pd.Series,
    names: Sequence[Any] | pd.Series | None = None,
    template: str = DEFAULT_TEMPLATE,
    name_template: str = DEFAULT_NAME_TEMPLATE,
) -> tuple[list[str], np.ndarray]:
    """The distinct POI descriptions and, for every POI, its description's position among them.

    Each distinct (category, name) is described once and no per-POI string is formed: millions of POIs share
    a few thousand texts, and a Python list of 10 M descriptions (and hashing them again) took seconds
    without a progress event.

    Args:
        categories: POI categories (underscores become spaces).
        names: POI names (None or blank for a POI without a name), or None to leave names out.
        template: Description of a POI without a name.
        name_template: Description of a named POI (used only when ``names`` is given).

    Returns:
        ``(texts, index)``: the distinct descriptions in order of first appearance, and the int64 index of every
        POI's description in ``texts``.

    Raises:
        ConfigError: If a template is invalid.
        ValueError: If ``names`` and ``categories`` differ in length.
    """
    check_template(template)
    if names is not None:
        check_template(name_template, "name template")
    cat_codes, cats = _factorize(_series(categories), lambda chunk: chunk.astype(object))
    if names is None:
        name_codes, uniq_names = np.zeros(len(cat_codes), dtype=np.int64), [""]
    else:
        if len(names) != len(cat_codes):
            raise ValueError(f"{len(names)} names for {len(cat_codes)} categories.")
        name_codes, uniq_names = _factorize(_series(names), _clean_names)
    width = max(len(uniq_names), 1)
    codes, pairs = _factorize(pd.Series(cat_codes * width + name_codes))
    described = []
    for pair in pairs:
        label = category_label(cats[pair // width])
        article = "an" if label[:1].lower() in {"a", "e", "i", "o", "u"} else "a"
        name = str(uniq_names[pair % width])
        chosen = name_template if name else template
        described.append(chosen.format(category=label, name=name, article=article).strip())
    # two pairs can read the same (e.g. a blank name and the plain template): one text each
    text_codes, texts = pd.factorize(pd.Series(described, dtype=object))
    return [str(t) for t in texts], np.asarray(text_codes, dtype=np.int64)[codes]


def _series(values: Sequence[Any] | pd.Series) -> pd.Series:
    """Values as a Series (a Series as it is, without a Python list of its values)."""
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    return pd.Series(list(values), dtype=object)


def _clean_names(chunk: pd.Series) -> pd.Series:
    """Names stripped; "" for a missing, blank or non-text name."""
    raw = chunk.astype(object)
    return raw.where(raw.map(lambda v: isinstance(v, str)).astype(bool)).str.strip().fillna("").astype(object)


#: Values factorised per call of :func:`_factorize`: one ``pd.factorize`` of 10 M POI categories held the GIL for
#: 5 s of CPU (no progress heartbeat meanwhile).
FACTORIZE_CHUNK = 500_000


def _factorize(values: pd.Series, prepare: Any = None) -> tuple[np.ndarray, list[Any]]:
    """``pd.factorize(prepare(values), use_na_sentinel=False)`` (missing values are a value too, uniques in order
    of first appearance), :data:`FACTORIZE_CHUNK` values at a time."""
    index: dict[Any, int] = {}
    uniques: list[Any] = []
    parts = []
    for start in range(0, len(values), FACTORIZE_CHUNK):
        chunk = values.iloc[start:start + FACTORIZE_CHUNK]
        codes, local = pd.factorize(prepare(chunk) if prepare is not None else chunk, use_na_sentinel=False)
        remap = np.empty(len(local), dtype=np.int64)
        for i, value in enumerate(local):
            key = _MISSING if pd.isna(value) else value  # every NaN or NA one key
            if key not in index:
                index[key] = len(uniques)
                uniques.append(value)
            remap[i] = index[key]
        parts.append(remap[codes])
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), uniques


_MISSING = object()


def build_texts(
    categories: Sequence[Any],
    names: Sequence[Any] | None = None,
    template: str = DEFAULT_TEMPLATE,
    name_template: str = DEFAULT_NAME_TEMPLATE,
) -> list[str]:
    """One description per POI, in input order (:func:`describe_pois` without the index; small inputs).

    Raises:
        ConfigError: If a template is invalid.
    """
    texts, index = describe_pois(categories, names, template, name_template)
    return [texts[i] for i in index]
