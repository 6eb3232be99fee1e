"""CooKIE's modalities: which views feed which modality, and one input vector per region for each.

=============  ==============================  ==========================================================
modality       view(s)                         input vector per region
=============  ==============================  ==========================================================
``poi``        ``poi_counts``                  log1p category counts (columns of the fitted vocabulary)
``poi_text``   ``poi_texts``                   mean of the frozen sentence embeddings of the region's POI
                                               descriptions (all-MiniLM-L6-v2, 384-d; zeros without POIs)
                                               plus log1p(number of POIs)
``image``      ``chips`` (or ``image_stats``)  frozen EfficientNet-Lite0 features of each raster's chip,
                                               resized to 224 px, ImageNet-normalised, 1280 channels
                                               averaged over the valid (in-polygon) pixels; rasters side by
                                               side. ``image_encoder="stats"``, or no chips, uses the
                                               per-band image statistics instead
``mobility``   ``mobility``                    log1p OD row and column of the region (trips out and in)
``landuse``    ``landuse``                     land-use area shares
``embedding``  ``embedding``                   a satellite-embedding raster's per-region band means
=============  ==============================  ==========================================================

Sentence encodings go through CaLLiPer's on-disk text cache (:mod:`backend.models.calliper.text`), so
texts that CaLLiPer (or an earlier CooKIE run) already encoded are not encoded again. Image features are
cached here, one ``.npy`` per (encoder, chip size, chip contents) under ``<cache>/image``: a rerun on the
same raster and regions does not run the image encoder.

:class:`Scaler` standardises an input: count modalities (POI counts, OD rows) are log1p-transformed,
centred and divided by one scale for the whole view (average column variance 1, so a category seen once
in the city is not blown up to a z-score of about sqrt(N)); the others are standardised column by column.
Values are clipped to +-10 so an extreme new region cannot dominate.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import ConfigError, InputError
from backend.progress import Progress
from backend.views._base import Views

__all__ = [
    "COUNT_MODALITIES",
    "IMAGE_ENCODERS",
    "MODALITY_VIEWS",
    "Scaler",
    "available_modalities",
    "default_image_cache_dir",
    "hash_arrays",
    "image_features",
    "text_features",
]

#: The views each modality can be built from (first available wins for ``image``).
MODALITY_VIEWS: dict[str, tuple[str, ...]] = {
    "poi": ("poi_counts",),
    "poi_text": ("poi_texts",),
    "image": ("chips", "image_stats"),
    "mobility": ("mobility",),
    "landuse": ("landuse",),
    "embedding": ("embedding",),
}
#: Modalities whose inputs are counts (log1p, one scale per view).
COUNT_MODALITIES = frozenset({"poi", "mobility"})
#: Values of ``image_encoder``: a registered image encoder, or the image statistics.
IMAGE_ENCODERS = ("efficientnet-lite0", "stats")
#: ImageNet normalisation of the packaged EfficientNet-Lite0.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CLIP = 10.0
_HASH_CHUNK = 8 << 20  # bytes hashed between cancellation checks


def available_modalities(views: Views, image_encoder: str = "efficientnet-lite0") -> dict[str, str]:
    """The modalities ``views`` can feed, each with the view it is built from, in canonical order.

    Args:
        views: The views.
        image_encoder: ``"stats"`` uses image statistics even when chips exist.

    Returns:
        Modality -> source view, for example ``{"poi": "poi_counts", "image": "chips"}``.
    """
    out: dict[str, str] = {}
    counts = views.tables.get("poi_counts")
    if counts is not None and counts.shape[1] > 0:
        out["poi"] = "poi_counts"
    if views.poi_texts is not None and any(len(t) for t in views.poi_texts):
        out["poi_text"] = "poi_texts"
    stats = views.tables.get("image_stats")
    if views.chips and image_encoder != "stats":
        out["image"] = "chips"
    elif stats is not None and stats.shape[1] > 0:
        out["image"] = "image_stats"
    if views.mobility is not None:
        out["mobility"] = "mobility"
    landuse = views.tables.get("landuse")
    if landuse is not None and landuse.shape[1] > 0:
        out["landuse"] = "landuse"
    embedding = views.tables.get("embedding")
    if embedding is not None and embedding.shape[1] > 0:
        out["embedding"] = "embedding"
    return out


@dataclass
class Scaler:
    """Standardisation of one modality's input (see the module docstring).

    Attributes:
        log1p: Apply log1p to non-negative clipped values first.
        whole_view: One scale for all columns (count views) instead of one per column.
        mean: Column means after the optional log1p (set by :meth:`fit`).
        scale: Column scales (set by :meth:`fit`).
    """

    log1p: bool
    whole_view: bool
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def _pre(self, x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(np.asarray(x, dtype=np.float64))
        return np.log1p(np.clip(x, 0.0, None)) if self.log1p else x

    def fit(self, x: np.ndarray) -> Scaler:
        """Learn mean and scale from the N x d training matrix; returns ``self``."""
        z = self._pre(x)
        std = z.std(axis=0)
        self.mean = z.mean(axis=0)
        if self.whole_view:
            total = float(np.sqrt(np.mean(std**2))) if std.size else 0.0
            self.scale = np.full(z.shape[1], total if total > 1e-12 else 1.0)
        else:
            self.scale = np.where(std > 1e-8, std, 1.0)
        return self

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardised float32 matrix (clipped to +-10).

        Raises:
            ValueError: If the width differs from the fitted one.
        """
        assert self.mean is not None and self.scale is not None, "fit() first"
        z = self._pre(x)
        if z.ndim != 2 or z.shape[1] != len(self.mean):
            raise ValueError(f"Expected {len(self.mean)} input columns, got {z.shape}.")
        return np.clip((z - self.mean) / self.scale, -_CLIP, _CLIP).astype(np.float32)


# ------------------------------------------------------------------------------------------------ texts
def text_features(
    texts: Sequence[Sequence[str]],
    encoder: str,
    cache_dir: Path | None,
    device: str,
    progress: Progress | None = None,
) -> tuple[np.ndarray, str]:
    """Mean sentence embedding of each region's POI texts, plus log1p(number of texts).

    Args:
        texts: One list of POI descriptions per region.
        encoder: Sentence encoder (registry name or local folder).
        cache_dir: Text cache folder (None: no cache).
        device: Torch device of the encoder.
        progress: Progress of the encoding (cancellation checked).

    Returns:
        ``(features, note)``: N x (D + 1) float32 features and a line for the log.

    Raises:
        InputError: If no region has any text.
        ConfigError: If the encoder is unknown.
        Cancelled: If cancelled.
    """
    import scipy.sparse as sp

    from backend.models.calliper.text import encode_texts

    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    flat = [str(t) for region in texts for t in region]
    if not flat:
        raise InputError("cookie: the POI-text modality needs POI descriptions, but no region has any POI.")
    enc = encode_texts(flat, encoder, cache_dir, device, progress=progress)
    rows = np.repeat(np.arange(len(texts)), lengths)
    incidence = sp.csr_matrix((np.ones(len(flat)), (rows, enc.index)), shape=(len(texts), len(enc.texts)))
    sums = np.asarray(incidence @ enc.vectors.astype(np.float64))
    means = sums / np.maximum(lengths, 1)[:, None]
    feats = np.hstack([means, np.log1p(lengths)[:, None]]).astype(np.float32)
    note = f"{len(flat):,} POI texts, {len(enc.texts):,} distinct ({enc.n_cached:,} from the cache)"
    return feats, note


# ------------------------------------------------------------------------------------------------ images
def default_image_cache_dir() -> Path:
    """``$REGIONLENS_CACHE_DIR/image`` if set, else ``~/.cache/regionlens/image``."""
    root = os.environ.get("REGIONLENS_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "regionlens") / "image"


def _load_image_encoder(name: str, device: str) -> Any:
    """The frozen image encoder (indirection so tests can replace it)."""
    from backend.encoders.registry import get_encoder

    return get_encoder(name, device=device)


def hash_arrays(h: Any, arrays: Sequence[np.ndarray], progress: Progress | None = None) -> None:
    """Feed the bytes of ``arrays`` into the hash ``h`` a few MB at a time, polling ``progress`` between."""
    progress = progress or Progress()
    for array in arrays:
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        for start in range(0, len(flat), _HASH_CHUNK):
            progress.poll(message="hashing chips for the feature cache")
            h.update(flat[start:start + _HASH_CHUNK].data)


def _cache_key(encoder: str, size: int, chips: np.ndarray, masks: np.ndarray | None,
               progress: Progress | None = None) -> str:
    from backend.models.calliper.text import encoder_id

    h = hashlib.sha256()
    h.update(f"{encoder_id(encoder)}|{size}|{chips.shape}|{chips.dtype}".encode())
    hash_arrays(h, [chips] if masks is None else [chips, masks], progress)
    return h.hexdigest()[:40]


def image_features(
    chips: np.ndarray,
    masks: np.ndarray | None,
    encoder: str = "efficientnet-lite0",
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

    from backend.encoders.registry import ENCODERS

    spec = ENCODERS.get(encoder)
    if loader is None and (spec is None or spec.kind != "image"):
        images = sorted(k for k, v in ENCODERS.items() if v.kind == "image")
        raise ConfigError(f"cookie: '{encoder}' is not a registered image encoder; use one of {images} or 'stats'.")
    chips = np.asarray(chips, dtype=np.float32)
    progress = progress or Progress()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{encoder}-{_cache_key(encoder, image_size, chips, masks, progress)}.npy"
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False).astype(np.float32), True
            except (OSError, ValueError):
                pass  # unreadable: recompute and overwrite
    progress = progress or Progress()
    load = loader or _load_image_encoder
    model = progress.wait(lambda: load(encoder, device), f"loading {encoder}")
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, features, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:
            progress.log(f"cookie: image feature cache {path.parent} not writable ({exc}); features not cached")
    return features, False
