"""Region embedding methods. Adding a method: one module here plus one line in ``EMBEDDERS``."""

from __future__ import annotations

from typing import Any

from backend.errors import ConfigError
from backend.models._base import Embedder, EmbedderParams, embedding_frame
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
    "describe_saved_model",
    "get_embedder",
    "load_embedder",
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

    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
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
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
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
