"""Region embedding methods. Adding a method: one module here plus one line in ``EMBEDDERS``.

The worker's ``info`` describes every registered method (:meth:`Embedder.describe`: title, views,
parameters with type, choices, range and help), and the plugin builds its run dock, Processing parameters
and Apply dialog from that answer alone; docs/development.md walks through adding one.

A module outside this package can join the registry with :func:`register` when it is named in the
environment variable :data:`EXTRA_METHODS_ENV` (comma-separated module names, importable from the working
directory; the worker runs in the plugin folder). This is a development and test hook: the plugin tests
register a toy method this way (tests/backend/models/toy_method.py).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from backend.errors import ConfigError
from backend.models._base import CONFIG_FILE, Embedder, EmbedderParams, embedding_frame
from backend.models.baseline import BaselineEmbedder
from backend.models.calliper import CaLLiPerEmbedder
from backend.models.cookie import CooKIEEmbedder
from backend.models.fusion import FusionEmbedder
from backend.models.hafusion import HAFusionEmbedder
from backend.models.pretrained import PretrainedEmbedder
from backend.models.refound import RefoundEmbedder

__all__ = [
    "EMBEDDERS",
    "BaselineEmbedder",
    "CaLLiPerEmbedder",
    "CooKIEEmbedder",
    "FusionEmbedder",
    "HAFusionEmbedder",
    "PretrainedEmbedder",
    "RefoundEmbedder",
    "Embedder",
    "EmbedderParams",
    "embedding_frame",
    "EXTRA_METHODS_ENV",
    "describe_saved_model",
    "get_embedder",
    "load_embedder",
    "register",
]

#: Registry: method name -> embedder class.
EMBEDDERS: dict[str, type[Embedder]] = {
    BaselineEmbedder.name: BaselineEmbedder,
    HAFusionEmbedder.name: HAFusionEmbedder,
    CaLLiPerEmbedder.name: CaLLiPerEmbedder,
    CooKIEEmbedder.name: CooKIEEmbedder,
    RefoundEmbedder.name: RefoundEmbedder,
    PretrainedEmbedder.name: PretrainedEmbedder,
    FusionEmbedder.name: FusionEmbedder,
}


#: Environment variable naming extra modules whose methods join :data:`EMBEDDERS` (see the module docstring).
EXTRA_METHODS_ENV = "REGIONLENS_EXTRA_METHODS"


def register(cls: type[Embedder]) -> type[Embedder]:
    """Add the method ``cls`` to :data:`EMBEDDERS` under ``cls.name``; returns ``cls`` (usable as a decorator).

    Raises:
        ConfigError: If ``cls`` is not an :class:`Embedder` with a name, or another class has that name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Embedder)) or not cls.name:
        raise ConfigError(f"{cls!r} is not a region embedder with a name; it cannot be registered.")
    if EMBEDDERS.get(cls.name, cls) is not cls:
        raise ConfigError(f"A method named '{cls.name}' is already registered ({EMBEDDERS[cls.name].__name__}).")
    EMBEDDERS[cls.name] = cls
    return cls


def _import_extra_methods() -> None:
    """Import the modules named in :data:`EXTRA_METHODS_ENV`; each registers its methods with :func:`register`.

    Raises:
        ConfigError: If a named module cannot be imported.
    """
    for module in (m.strip() for m in os.environ.get(EXTRA_METHODS_ENV, "").split(",")):
        if not module:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{EXTRA_METHODS_ENV} names the module '{module}', which cannot be imported ({exc}). "
                              "Name modules importable from the working directory, or unset it.") from exc


_import_extra_methods()


def get_embedder(name: str, **kwargs: Any) -> Embedder:
    """Instantiate the method ``name`` with ``dim``, ``seed``, ``device`` and its parameters.

    Raises:
        ConfigError: If no method of that name exists.
    """
    try:
        cls = EMBEDDERS[name]
    except KeyError:
        raise ConfigError(f"Unknown method '{name}'; available: {sorted(EMBEDDERS)}.") from None
    return cls(**kwargs)


def load_embedder(path: str) -> Any:
    """Load a saved embedder of any registered method (or a seed ensemble of one) from its folder."""
    import json
    from pathlib import Path

    config = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    name = config.get("name", "")
    if name not in EMBEDDERS:
        raise ConfigError(f"{path} holds an unknown method '{name}'.")
    if "ensemble" in config:
        from backend.models.ensemble import SeedEnsemble

        return SeedEnsemble.load(path)
    return EMBEDDERS[name].load(path)


def describe_saved_model(path: str) -> dict[str, Any]:
    """What a saved model is and what embedding new regions with it needs (the worker's ``info`` with ``model``).

    Returns:
        ``{"folder", "name", "title", "dim", "params", "inputs"}``; ``inputs`` as :meth:`Embedder.inputs`
        (read from ``config.json``; computed from the loaded model for models saved before it was written).

    Raises:
        InputError: If the folder holds no readable saved model.
    """
    import json
    from pathlib import Path

    from backend.errors import InputError

    folder = Path(path).expanduser()
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder} holds no saved RegionLens model (config.json unreadable: {exc}). Choose a "
                         "folder <run output>/models/<method>/ written by a run.") from exc
    name = config.get("name") if isinstance(config, dict) else None
    if name not in EMBEDDERS:
        raise InputError(f"{folder / 'config.json'} is not a RegionLens model configuration (method {name!r}).")
    inputs = config.get("inputs")
    if not isinstance(inputs, dict):
        inputs = load_embedder(str(folder)).inputs()
    return {"folder": str(folder.resolve()), "name": name, "title": EMBEDDERS[name].title,
            "dim": config.get("dim"), "params": config.get("params") or {}, "inputs": inputs}
