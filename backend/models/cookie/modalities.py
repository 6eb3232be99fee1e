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

Sentence encodings go through the shared text cache (:mod:`backend.encoders.text`), so texts that CaLLiPer
(or an earlier CooKIE run) already encoded are not encoded again. Image features come from
:func:`backend.encoders.image.image_features`, cached one ``.npy`` per (encoder, chip size, chip contents):
a rerun on the same raster and regions does not run the image encoder.

:class:`Scaler` standardises an input: count modalities (POI counts, OD rows) are log1p-transformed,
centred and divided by one scale for the whole view (average column variance 1, so a category seen once
in the city is not blown up to a z-score of about sqrt(N)); the others are standardised column by column.
Values are clipped to +-10 so an extreme new region cannot dominate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.encoders.image import DEFAULT_IMAGE_ENCODER
from backend.errors import InputError
from backend.progress import Progress
from backend.views._base import Views

__all__ = [
    "COUNT_MODALITIES",
    "IMAGE_ENCODERS",
    "MODALITY_VIEWS",
    "Scaler",
    "available_modalities",
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
IMAGE_ENCODERS = (DEFAULT_IMAGE_ENCODER, "stats")
_CLIP = 10.0


def available_modalities(views: Views, image_encoder: str = DEFAULT_IMAGE_ENCODER) -> dict[str, str]:
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

    from backend.encoders.text import encode_texts

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
