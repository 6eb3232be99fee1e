"""Base class of every region embedder (scikit-learn-like, in the style of srai's embedders).

An embedder declares which views it can use, learns from :class:`~backend.views.Views` in
:meth:`Embedder.fit`, returns a frame of embeddings indexed by ``region_id`` from
:meth:`Embedder.transform`, and saves itself as ``config.json`` (parameters and the vocabulary of
every view, so new regions get the same columns) plus a weights file.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

import numpy as np
import pandas as pd

from backend.errors import ConfigError, InputError
from backend.progress import Progress
from backend.views._base import Views
from backend.views.build import VIEW_SOURCES, view_input  # view -> its configuration section; its input
from regionlens_common import embedding_column

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "INPUT_FIELDS",
    "Embedder",
    "EmbedderParams",
    "SOURCE_NAMES",
    "VIEW_SOURCES",
    "describe_params",
    "embedding_frame",
    "inputs_for",
    "cache_param",
    "param",
    "text_encoder_param",
]

#: A saved model's parameters, vocabulary and inputs (:meth:`Embedder.save`).
CONFIG_FILE = "config.json"
#: A saved model's arrays (safetensors; no pickle), next to :data:`CONFIG_FILE`.
WEIGHTS_FILE = "weights.safetensors"

#: How to name each source when asking the user to add it.
SOURCE_NAMES: dict[str, str] = {
    "pois": "a POI layer ([pois])", "rasters": "imagery ([[rasters]])", "od": "an OD table ([od])",
    "landuse": "a land-use layer ([landuse])", "regions": "more regions",
}


def inputs_for(views: tuple[str, ...]) -> str:
    """The inputs that give ``views``, for a message: ``a POI layer ([pois]) or imagery ([[rasters]])``."""
    names = [SOURCE_NAMES[s] for s in dict.fromkeys(VIEW_SOURCES.get(v, "regions") for v in views)
             if s != "regions"]
    return " or ".join(names) or "more inputs"

#: Per input (a section of ``backend.config``): the fields it must name and those it may name.
INPUT_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "regions": (("id_field",), ()),
    "pois": (("category_field",), ("name_field",)),
    "rasters": ((), ()),
    "landuse": (("class_field",), ()),
    "od": (("origin_field", "destination_field", "count_field"), ()),
}
_STAT_COLUMN = re.compile(r"^(.*)_b\d+_[A-Za-z0-9]+$")  # image statistics: <raster>_b<band>_<stat>


def param(
    default: Any,
    label: str,
    help: str,  # noqa: A002 - the word the description uses
    *,
    choices: tuple[str, ...] | list[str] = (),
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A parameter field with what a menu needs to offer it (see :func:`describe_params`).

    Args:
        default: The default value (bool, int, float or str).
        label: A short readable name ("Hidden width").
        help: One line saying what it does, for a tooltip.
        choices: The allowed values of a text parameter (a dropdown); empty = free text.
        minimum: The smallest allowed value of a number (None = no bound).
        maximum: The largest allowed value of a number (None = no bound).
    """
    meta = {"label": label, "help": help, "choices": [str(c) for c in choices], "min": minimum, "max": maximum}
    return field(default=default, metadata=meta)


def cache_param(holds: str) -> Any:
    """The ``cache_dir`` parameter of a method that keeps encoder features on disk (``holds``: which ones)."""
    return param("", "Cache folder", f"Cache for {holds}; empty = ~/.cache/regionlens, none = no cache.")


def text_encoder_param() -> Any:
    """The ``text_encoder`` parameter of a method that encodes POI texts with a frozen sentence encoder."""
    from backend.encoders.text import DEFAULT_TEXT_ENCODER

    return param(DEFAULT_TEXT_ENCODER, "Text encoder",
                 "Frozen sentence encoder of the POI texts: a registry name or a local model folder.")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def describe_params(params_cls: type) -> dict[str, dict[str, Any]]:
    """Name -> ``{label, help, type, default, choices, min, max}`` for every field made with :func:`param`.

    This is what the worker's ``info`` sends as a method's ``param_info`` (docs/protocol.md): the plugin
    builds dropdowns, ranged spin boxes, labels and tooltips from it.
    """
    out: dict[str, dict[str, Any]] = {}
    for f in fields(params_cls):
        default = f.default if f.default is not MISSING else None
        out[f.name] = {
            "label": f.metadata.get("label") or f.name.replace("_", " ").capitalize(),
            "help": f.metadata.get("help", ""),
            "type": _kind(default),
            "default": default,
            "choices": list(f.metadata.get("choices", [])),
            "min": f.metadata.get("min"),
            "max": f.metadata.get("max"),
        }
    return out


@dataclass
class EmbedderParams:
    """Method-specific parameters; each embedder subclasses this with its own fields, each made with
    :func:`param` (default, label, one-line help, choices, range)."""

    def checks(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` per rule the values must keep; the embedder raises a ConfigError with the message of
        the first rule broken. No rule by default."""
        return []


P = TypeVar("P", bound=EmbedderParams)


def embedding_frame(values: np.ndarray, region_ids: pd.Index) -> pd.DataFrame:
    """Wrap an N x d array as a frame indexed by ``region_id`` with columns ``emb_000`` ..."""
    cols = [embedding_column(i) for i in range(values.shape[1])]
    idx = pd.Index(region_ids, name="region_id")
    return pd.DataFrame(np.asarray(values, dtype=np.float64), index=idx, columns=cols)


class Embedder(ABC, Generic[P]):
    """Learns one vector per region. A method subclasses ``Embedder[ItsParams]``: the type argument is its
    :attr:`Params` dataclass.

    Args:
        dim: Size of the embedding; None = :attr:`default_dim`.
        seed: Seed for every random choice (weights, batches, sampling).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``; resolved at fit time.
        nproc: Training processes: above 1, methods with :attr:`distributed` train data-parallel
            (``backend.models._distributed``); the others train in one process.
        **params: Fields of the method's :attr:`Params` dataclass.

    Raises:
        ConfigError: On unknown parameters, or values that break a rule of :meth:`EmbedderParams.checks`.
    """

    #: Registry name.
    name: ClassVar[str] = ""
    #: Short human description for menus and the worker's ``info``.
    title: ClassVar[str] = ""
    #: Views the method can learn from (see :class:`~backend.views.Views`).
    uses_views: ClassVar[tuple[str, ...]] = ()
    #: At least this many of ``uses_views`` must be present.
    min_views: ClassVar[int] = 1
    #: Parameters dataclass of the method.
    Params: ClassVar[type[EmbedderParams]] = EmbedderParams
    #: Embedding size offered by default in menus.
    default_dim: ClassVar[int] = 32
    #: True when the embedding does not depend on the seed (a seed ensemble would repeat one model).
    deterministic: ClassVar[bool] = False
    #: True when the method combines the run's other methods (fusion); it then runs first, as the primary.
    combines_methods: ClassVar[bool] = False

    #: True when training runs data-parallel over ``nproc`` processes (backend.models._distributed).
    distributed: ClassVar[bool] = False
    #: Share of :meth:`fit_transform`'s progress given to the transform (the fit reports over the rest).
    transform_share: ClassVar[float] = 0.1

    params: P

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            if get_origin(base) is Embedder:
                (cls.Params,) = get_args(base)

    def __init__(self, dim: int | None = None, seed: int = 0, device: str = "auto", nproc: int = 1,
                 **params: Any) -> None:
        dim = self.default_dim if dim is None else dim
        if int(dim) < 1:
            raise ConfigError(f"{self.name}: dim must be a positive integer, got {dim}.")
        known = {f.name for f in fields(self.Params)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"{self.name}: unknown parameters {unknown}; allowed: {sorted(known)}.")
        self.dim = int(dim)
        self.seed = int(seed)
        if int(nproc) < 1:
            raise ConfigError(f"{self.name}: nproc must be a positive integer, got {nproc}.")
        self.device = device
        self.nproc = int(nproc)  # training processes (data-parallel where the method supports it)
        self.params = self.Params(**params)  # type: ignore[assignment]
        for ok, message in self.params.checks():
            if not ok:
                raise ConfigError(f"{self.name}: {message}.")
        self.device_used: str | None = None
        self.history: list[float] = []  # training loss per epoch, when the method trains
        self.vocabulary: dict[str, list[str]] = {}  # view -> columns seen at fit time
        self._fitted = False

    # ----------------------------------------------------------------------------------------- API
    def fit(self, views: Views, progress: Progress | None = None) -> Embedder:
        """Learn from the views; returns ``self``."""
        self._check_views(views)
        progress = progress or Progress()
        if self.nproc > 1 and not self.distributed:
            progress.log(f"{self.name}: trains in one process (nproc = {self.nproc} applies to the methods that "
                         "train data-parallel).")
        self._fit(views, progress)
        self._fitted = True
        return self

    def transform(self, views: Views, progress: Progress | None = None) -> pd.DataFrame:
        """Embed the regions of ``views``: a frame indexed by ``region_id``, columns ``emb_000``..."""
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before transform().")
        values = self._transform(views, progress or Progress())
        return embedding_frame(values, views.region_ids)

    def fit_transform(self, views: Views, progress: Progress | None = None) -> pd.DataFrame:
        """:meth:`fit` then :meth:`transform` on the same views; the fit reports over the first
        ``1 - transform_share`` of ``progress`` and the transform over the rest, so the bar never steps back."""
        progress = progress or Progress()
        name, split = progress.stage_name, 1.0 - self.transform_share
        self.fit(views, progress.sub(name, 0.0, split))
        return self.transform(views, progress.sub(name, split, 1.0))

    def views_to_build(self) -> tuple[str, ...]:
        """The views the run must build for this method as configured (its :attr:`uses_views`, less those its
        parameters switch off)."""
        return self.uses_views

    def views_used(self, views: Views) -> list[str]:
        """The views of ``views`` this method will learn from."""
        return [v for v in self.uses_views if v in views.available()]

    @classmethod
    def input_needs(cls) -> dict[str, list[str]]:
        """The inputs (configuration sections) the method learns from: ``{"required": [...], "optional": [...]}``.

        Derived from :attr:`uses_views` and :attr:`min_views`: an input is required when the views the
        others give are fewer than ``min_views`` (CaLLiPer: the POIs); the regions always are. The worker's
        ``info`` sends it as a method's ``inputs``.
        """
        kinds = list(dict.fromkeys(VIEW_SOURCES[v] for v in cls.uses_views))
        required = ["regions"] + [k for k in kinds if k != "regions"
                                  and sum(VIEW_SOURCES[v] != k for v in cls.uses_views) < cls.min_views]
        return {"required": required, "optional": [k for k in kinds if k not in required]}

    def views_for_transform(self) -> list[str]:
        """The views the fitted model embeds new regions from: what applying a saved model needs.

        The contract every method keeps (a test per method checks it): embedding regions with only the inputs
        that give these views yields the same embedding as with every input. :meth:`inputs`, saved in
        ``config.json``, is derived from it. Default: the views of the vocabulary; a method whose transform
        needs other views (or none, CaLLiPer's region polygons) overrides it.
        """
        return [view for view in self.vocabulary if view in VIEW_SOURCES]

    def inputs(self) -> dict[str, dict[str, Any]]:
        """What embedding new regions with this fitted model needs, by input (saved as ``inputs``).

        ``{"regions": {...}, "pois": {...}, "rasters": {...}, ...}`` in that order (the sections of the
        run configuration, ``backend.config``), each with ``views``
        (the views built from it), ``fields`` (what it must name, as in ``backend.config``),
        ``optional_fields``, and ``required`` (``False`` when the model can do without it: its views
        then count as average, as long as another input is given). The ``rasters`` entry also holds
        ``names``, the names of the rasters the model saw.
        """
        found: dict[str, dict[str, Any]] = {}
        for name in ("regions", *[VIEW_SOURCES[v] for v in self.views_for_transform()]):
            if name not in found:
                required, optional = INPUT_FIELDS[name]
                found[name] = {"views": [], "fields": list(required), "optional_fields": list(optional)}
        for view in self.views_for_transform():
            found[VIEW_SOURCES[view]]["views"].append(view)
        if "pois" in found and "poi_counts" in found["pois"]["views"] and len(found["pois"]["views"]) == 1:
            found["pois"]["optional_fields"] = []  # category counts ignore names
        if "rasters" in found:
            found["rasters"]["names"] = self.raster_names()
        others = [name for name in found if name != "regions"]
        for name, entry in found.items():
            entry["required"] = name == "regions" or len(others) == 1
        order = list(INPUT_FIELDS)
        return {name: found[name] for name in sorted(found, key=order.index)}

    def raster_names(self, views: tuple[str, ...] = ("chips", "image_stats", "embedding")) -> list[str]:
        """Names of the rasters the model learned from (chips, or the prefixes of its image or embedding columns);
        ``views=("embedding",)``: its satellite-embedding rasters only."""
        names = [str(r) for r in self.vocabulary.get("chips", [])] if "chips" in views else []
        columns = [c for view in ("image_stats", "embedding") if view in views for c in self.vocabulary.get(view, [])]
        for column in columns:
            prefix = _STAT_COLUMN.match(str(column))
            if prefix and prefix.group(1) not in names:
                names.append(prefix.group(1))
        return names

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and the weights into folder ``path``; returns the folder."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "name": self.name,
            "dim": self.dim,
            "seed": self.seed,
            "device": self.device,
            "params": asdict(self.params),
            "vocabulary": self.vocabulary,
            "inputs": self.inputs(),
            "history": self.history,
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        self._save_weights(folder)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Embedder:
        """Load an embedder written by :meth:`save` (weights loaded without pickle)."""
        folder = Path(path)
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("name") != cls.name:
            raise ConfigError(f"{folder} holds a '{config.get('name')}' model, not '{cls.name}'.")
        model = cls(dim=config["dim"], seed=config["seed"], device=config.get("device", "auto"), **config["params"])
        model.vocabulary = {k: list(v) for k, v in config.get("vocabulary", {}).items()}
        model.history = list(config.get("history", []))
        model._load_weights(folder)
        model._fitted = True
        return model

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Defaults and views, for menus and the worker's ``info`` action."""
        return {
            "title": cls.title,
            "dim": cls.default_dim,
            "views": list(cls.uses_views),
            "min_views": cls.min_views,
            "view_inputs": {view: view_input(view) for view in cls.uses_views},  # what gives each view
            "inputs": cls.input_needs(),
            "params": asdict(cls.Params()),
            "param_info": describe_params(cls.Params),
            "ensemble": not cls.deterministic,  # whether ``ensemble = k`` (k training seeds) applies
            "combines_methods": cls.combines_methods,  # fusion combines the run's other methods
        }

    # ------------------------------------------------------------------------------- for subclasses
    def resolve_device(self, refresh: bool = False) -> str:
        """The device the model runs on: ``device`` resolved once (again with ``refresh``, as at fit time) and
        kept in :attr:`device_used`."""
        from backend.device import resolve_device

        if refresh or self.device_used is None:
            self.device_used = resolve_device(self.device)
        return self.device_used

    def _check_views(self, views: Views) -> None:
        have = self.views_used(views)
        if len(have) < self.min_views:
            raise InputError(
                f"{self.name} needs at least {self.min_views} of the views {list(self.uses_views)}, "
                f"but the inputs only give {sorted(views.available()) or 'none'}. Add {inputs_for(self.uses_views)}."
            )

    @abstractmethod
    def _fit(self, views: Views, progress: Progress) -> None:
        """Learn parameters; set ``self.vocabulary`` for every view used."""

    @abstractmethod
    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        """Return an N x d array for the regions of ``views``."""

    @abstractmethod
    def _save_weights(self, folder: Path) -> None:
        """Write the learned weights into ``folder``."""

    @abstractmethod
    def _load_weights(self, folder: Path) -> None:
        """Read the weights written by :meth:`_save_weights`."""
