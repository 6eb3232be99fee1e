"""Frozen image encoders: their loader, ImageNet normalisation and pooled chip features with an on-disk cache.

:func:`image_features` runs a registered CNN (EfficientNet-Lite0) over region chips and averages its final
feature map over each chip's valid (in-polygon) pixels; the features are cached under
``cache_dir("image")`` (:mod:`backend.encoders.cache`), one ``.npy`` per (encoder, chip size, chip contents),
so a rerun on the same raster and regions does not run the encoder. CooKIE's image modality uses it; ReFound's
vision teacher uses the same loader, normalisation and cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backend.encoders.cache import array_key, encoder_id, store
from backend.errors import ConfigError
from backend.progress import Progress

__all__ = [
    "DEFAULT_IMAGE_ENCODER", "IMAGENET_MEAN", "IMAGENET_STD", "check_image_encoder", "image_features",
    "load_image_encoder",
]

#: ImageNet normalisation of the packaged EfficientNet-Lite0.
#: The packaged image encoder every method uses by default.
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image_encoder(name: str, device: str) -> Any:
    """The frozen image encoder of the registry; tests count or replace it here."""
    from backend.encoders.registry import get_encoder

    return get_encoder(name, device=device)


def check_image_encoder(encoder: str, who: str, others: str = "") -> None:
    """Raise ConfigError (``<who>: '<encoder>' is not a registered image encoder ...``) unless it is one."""
    from backend.encoders.registry import ENCODERS

    spec = ENCODERS.get(encoder)
    if spec is None or spec.kind != "image":
        images = sorted(k for k, v in ENCODERS.items() if v.kind == "image")
        raise ConfigError(f"{who}: '{encoder}' is not a registered image encoder; use one of {images}{others}.")


def image_features(
    chips: np.ndarray,
    masks: np.ndarray | None,
    encoder: str = DEFAULT_IMAGE_ENCODER,
    image_size: int = 224,
    cache_dir: Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: Progress | None = None,
    loader: Callable[[str, str], Any] | None = None,
) -> tuple[np.ndarray, bool]:
    """Frozen CNN features of region chips, averaged over each chip's valid pixels; cached on disk.

    Args:
        chips: N x B x S x S chips in [0, 1] (the first three bands are used; one or two bands are
            repeated to three).
        masks: N x S x S valid-pixel masks, or None (every pixel valid).
        encoder: Registered image encoder with ``extract_features`` (EfficientNet-Lite0).
        image_size: Side the chips are resized to (bilinear).
        cache_dir: Folder of the feature cache (None: no cache).
        device: Torch device of the encoder.
        batch_size: Chips per forward pass.
        progress: Progress (one update per batch; cancellation checked while the encoder loads, between
            its layers and while hashing the chips for the cache).
        loader: ``loader(name, device) -> model``; default: the encoder registry.

    Returns:
        ``(features, from_cache)``: N x C float32 features (C = 1280 for EfficientNet-Lite0).

    Raises:
        ConfigError: If the encoder is not a registered image encoder.
        Cancelled: If cancelled.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    if loader is None:
        check_image_encoder(encoder, "cookie", " or 'stats'")
    chips = np.asarray(chips, dtype=np.float32)
    progress = progress or Progress()
    path = None
    if cache_dir is not None:
        header = f"{encoder_id(encoder)}|{image_size}|{chips.shape}|{chips.dtype}"
        key = array_key(header, [chips] if masks is None else [chips, masks], progress)
        path = Path(cache_dir) / f"{encoder}-{key}.npy"
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False).astype(np.float32), True
            except (OSError, ValueError):
                pass  # unreadable: recompute and overwrite
    progress = progress or Progress()
    load = loader or load_image_encoder
    model = progress.wait(lambda: load(encoder, device), f"loading {encoder}")
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    n = len(chips)
    out: list[np.ndarray] = []
    with torch.no_grad(), progress.watch(model):
        for start in range(0, n, batch_size):
            progress.update(start / max(n, 1), f"image features {start}/{n}")
            x = torch.from_numpy(chips[start:start + batch_size]).to(device)
            if x.shape[1] >= 3:
                x = x[:, :3]
            else:
                x = x[:, [i % x.shape[1] for i in range(3)]]
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
            feats = model.extract_features((x - mean) / std)
            if masks is None:
                pooled = feats.mean(dim=(2, 3))
            else:
                m = torch.from_numpy(np.asarray(masks[start:start + batch_size], dtype=np.float32)).to(device)
                w = F.adaptive_avg_pool2d(m[:, None], feats.shape[-2:])
                total = w.sum(dim=(2, 3))
                weighted = (feats * w).sum(dim=(2, 3)) / total.clamp_min(1e-8)
                pooled = torch.where(total > 1e-8, weighted, feats.mean(dim=(2, 3)))
            out.append(pooled.float().cpu().numpy())
    features = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)
    progress.update(1.0, f"image features of {n} chips")
    if path is not None:
        store(path, lambda fh: np.save(fh, features, allow_pickle=False), progress, "cookie: image feature")
    return features, False
