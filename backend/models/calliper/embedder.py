"""CaLLiPer region embedder: contrastive language-location pre-training on POIs.

Wang, Cheng, Feng, Chen and Zhang, "CaLLiPer: Contrastive Language-Location Pre-training for urban
region representations", arXiv 2411.06229; public code github.com/xlwang233/CaLLiPer.

Training pairs every POI's location with a templated description of the POI (its category, and its
name when names are used; :mod:`.text`). The descriptions are encoded once by a frozen sentence encoder
and cached on disk; a linear projection (trainable) maps them to the shared space, where a location
encoder (grid encoding plus residual MLP; :mod:`.location`) learns to agree with them under a symmetric
InfoNCE loss with learnable temperature (:mod:`.model`). AdamW, mini-batches of POIs, a fixed number of
epochs with early stopping on the contrastive loss of a held-out share of the POIs (never on labels).

A region's embedding is the trained location encoder evaluated inside the region:

* ``polygon`` (default): the mean over ``region_points`` points spread evenly inside the polygon (a
  Halton sequence over its bounding box, kept where inside: deterministic and independent of the
  other regions, so the same polygon gets the same vector in any layer);
* ``centroid``: at the polygon's centroid (what the paper does with population-weighted centroids);
* ``poi``: the mean over the region's POI locations (regions without POIs fall back to ``polygon``).

The location encoder is inductive: :meth:`CaLLiPerEmbedder.transform` embeds any region layer (its
polygons are reprojected into the CRS the model was trained in) and :meth:`CaLLiPerEmbedder.embed_points`
any points.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from backend.encoders.cache import cache_dir
from backend.encoders.text import encode_texts
from backend.errors import InputError
from backend.models._base import Embedder, EmbedderParams, cache_param, param, text_encoder_param
from backend.models._training import Ranks, TrainedNetwork, make_optimizer, run_data_parallel, seeded
from backend.models.calliper.text import (
    DEFAULT_NAME_TEMPLATE,
    DEFAULT_TEMPLATE,
    NAMES_CHOICES,
    check_template,
    describe_pois,
    use_names,
)
from backend.progress import Progress
from backend.views._base import Views

if TYPE_CHECKING:
    import torch

    from backend.models.calliper.model import CaLLiPerNet

__all__ = ["REGION_MODES", "CaLLiPerEmbedder", "CaLLiPerParams", "sample_in_polygons"]

#: How a region's embedding is formed from the location encoder.
REGION_MODES = ("polygon", "centroid", "poi")
#: Points per forward pass when embedding locations.
_EMBED_CHUNK = 8192
_HALTON_SIZE = 8192
#: Polygons per vectorised block of :func:`sample_in_polygons`.
_SAMPLE_BLOCK = 5000
_MIN_IMPROVEMENT = 1e-4  # held-out loss must fall by this much to count as better


@dataclass
class CaLLiPerParams(EmbedderParams):
    """Parameters of CaLLiPer (defaults: the paper's)."""

    template: str = param(
        DEFAULT_TEMPLATE, "POI description",
        "Sentence describing a POI for the text encoder; placeholders {category}, {name}, {article}.")
    name_template: str = param(
        DEFAULT_NAME_TEMPLATE, "Named POI description", "Sentence for a POI with a name, when names are used.")
    names: str = param(
        "auto", "Use POI names", "Put POI names in the descriptions: auto (when the layer has names), yes or no.",
        choices=NAMES_CHOICES)
    text_encoder: str = text_encoder_param()
    cache_dir: str = cache_param("encoded texts")
    min_scale_m: float = param(
        100.0, "Smallest scale (m)", "Finest scale of the location encoding.", minimum=0.001)
    max_scale_m: float = param(
        10000.0, "Largest scale (m)", "Coarsest scale of the location encoding.", minimum=0.001)
    scales: int = param(32, "Scales", "Number of scales between the smallest and the largest.", minimum=1)
    scale_with_extent: bool = param(
        False, "Scale with the city", "Largest scale = extent of the POIs; the smallest keeps the ratio.")
    hidden: int = param(256, "Hidden width", "Width of the location network's layers.", minimum=1)
    blocks: int = param(4, "Residual blocks", "Residual blocks of the location network.", minimum=0)
    dropout: float = param(0.5, "Dropout", "Share of activations dropped in the residual blocks.",
                           minimum=0.0, maximum=0.99)
    temperature: float = param(
        0.07, "Initial temperature", "Starting temperature of the contrastive loss (then learned).", minimum=1e-4)
    epochs: int = param(100, "Epochs", "Most passes over the POIs.", minimum=1)
    batch_size: int = param(
        1024, "Batch size", "POI pairs per batch (the other pairs of a batch are its negatives).", minimum=2)
    learning_rate: float = param(1e-3, "Learning rate", "AdamW's step size.", minimum=1e-7, maximum=1.0)
    weight_decay: float = param(0.01, "Weight decay", "AdamW's penalty, on weight matrices only.", minimum=0.0)
    val_share: float = param(
        0.1, "Held-out share", "Share of POIs held out for early stopping (0 = none).", minimum=0.0, maximum=0.49)
    patience: int = param(
        10, "Patience (epochs)", "Stop after this many epochs without a better held-out loss (0 = run all).",
        minimum=0)
    region_mode: str = param(
        "polygon", "Region embedding",
        "polygon: mean over points inside the region; centroid: at its centroid; poi: mean at its POIs.",
        choices=REGION_MODES)
    region_points: int = param(32, "Points per region", "Points sampled inside each region (polygon mode).",
                               minimum=1)

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.names in NAMES_CHOICES, f"names must be one of {NAMES_CHOICES}, got '{self.names}'"),
            (self.region_mode in REGION_MODES, f"region_mode must be one of {REGION_MODES}, got '{self.region_mode}'"),
            (0 < self.min_scale_m <= self.max_scale_m and math.isfinite(self.max_scale_m),
             "min_scale_m and max_scale_m must satisfy 0 < min_scale_m <= max_scale_m"),
            (self.scales >= 1 and self.hidden >= 1 and self.blocks >= 0, "scales and hidden must be >= 1, blocks >= 0"),
            (0.0 <= self.dropout < 1.0, "dropout must lie in [0, 1)"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.epochs >= 1 and self.batch_size >= 2, "epochs must be >= 1 and batch_size >= 2"),
            (self.learning_rate > 0 and self.weight_decay >= 0, "learning_rate must be > 0 and weight_decay >= 0"),
            (0.0 <= self.val_share < 0.5, "val_share must lie in [0, 0.5)"),
            (self.patience >= 0 and self.region_points >= 1, "patience must be >= 0 and region_points >= 1"),
            (bool(self.text_encoder.strip()), "text_encoder must name an encoder"),
        ]


def _halton(n: int) -> np.ndarray:
    """The first ``n`` points of the 2-D Halton sequence (bases 2 and 3), without the origin."""
    from scipy.stats import qmc

    return qmc.Halton(d=2, scramble=False).random(n + 1)[1:]


def sample_in_polygons(geoms: Any, k: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``k`` evenly spread points inside every polygon.

    The points are the first points of a Halton sequence over the polygon's bounding box that fall inside
    it: deterministic, and the same for a polygon whatever the other polygons are. A polygon too thin for
    the sequence gets its representative point. The containment tests run vectorised over blocks of
    :data:`_SAMPLE_BLOCK` polygons (no Python loop per polygon); ``progress`` is polled between blocks.

    Args:
        geoms: Polygons (shapely geometries, a GeoSeries or a list).
        k: Points per polygon.
        progress: Polled (heartbeat and cancel) between blocks.

    Returns:
        ``(xy, owner)``: M x 2 float64 coordinates and, per point, the position of its polygon.
    """
    import shapely

    values = np.asarray(list(geoms), dtype=object)
    base = _halton(_HALTON_SIZE)
    parts, owners = [], []
    for lo in range(0, len(values), _SAMPLE_BLOCK):
        if progress is not None:
            progress.poll()
        xy, own = _sample_block(values[lo:lo + _SAMPLE_BLOCK], k, base, shapely)
        parts.append(xy)
        owners.append(own + lo)
    if not parts or not sum(len(o) for o in owners):
        return np.empty((0, 2)), np.empty(0, dtype=np.int64)
    return np.vstack(parts), np.concatenate(owners)


def _sample_block(values: np.ndarray, k: int, base: np.ndarray, shapely: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_in_polygons` of one block of polygons (positions within the block)."""
    present = np.array([g is not None for g in values], dtype=bool)
    present[present] = ~shapely.is_empty(values[present].astype(object))
    idx = np.flatnonzero(present)
    if not len(idx):
        return np.empty((0, 2)), np.empty(0, dtype=np.int64)
    geo = values[idx].astype(object)
    bounds = shapely.bounds(geo)
    width, height = bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]
    area = shapely.area(geo)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(area > 0, width * height / np.where(area > 0, area, 1.0), np.inf)
    m = np.where(np.isfinite(ratio), np.minimum(_HALTON_SIZE, np.maximum(k, np.ceil(2 * k * ratio))), 0)
    m = np.where((width > 0) & (height > 0), m, 0).astype(np.int64)
    # every polygon's candidates: its first m Halton points scaled into its bounding box
    who = np.repeat(np.arange(len(idx)), m)
    step = np.arange(len(who)) - np.repeat(np.cumsum(m) - m, m)
    cand = base[step] * np.column_stack([width[who], height[who]]) + bounds[who, :2]
    inside = shapely.contains_xy(geo[who], cand[:, 0], cand[:, 1])
    # the first k inside per polygon (candidates are grouped by polygon, in sequence order)
    seen = np.concatenate([[0], np.cumsum(inside)])  # inside candidates before each position
    rank = seen[1:] - np.repeat(seen[np.cumsum(m) - m], m)  # 1-based rank among the polygon's inside points
    take = inside & (rank <= k)
    got = np.bincount(who[take], minlength=len(idx))
    lonely = np.flatnonzero(got == 0)
    reps = shapely.get_coordinates(shapely.point_on_surface(geo[lonely])) if len(lonely) else np.empty((0, 2))
    xy = np.vstack([cand[take], reps])
    own = np.concatenate([who[take], lonely])
    order = np.argsort(own, kind="stable")  # polygon order, as the points of one polygon after another
    return xy[order], idx[own[order]].astype(np.int64)


class CaLLiPerEmbedder(Embedder[CaLLiPerParams], TrainedNetwork["CaLLiPerNet"]):
    """CaLLiPer: POI text-location contrastive learning; inductive region embeddings (module docstring).

    ``dim`` is the size of the shared space and of the region embedding (the paper: 128); the seed draws the
    weights, the held-out split, the batches and dropout; the parameters are :class:`CaLLiPerParams`.
    """

    name = "calliper"
    title = "CaLLiPer (Wang et al., 2024): POI text-location contrastive learning, inductive"
    uses_views = ("poi_points",)
    #: The transform embeds 32 points per region (polygon mode): about a third of the method's time at scale.
    transform_share = 0.3
    distributed = True
    default_dim = 128

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_template(self.params.template)
        check_template(self.params.name_template, "name template")
        self.val_history: list[float] = []  # held-out contrastive loss per epoch
        self.meta: dict[str, Any] = {}  # CRS, origin, scales, text encoder, counts and timings
        self._net: CaLLiPerNet | None = None

    # ------------------------------------------------------------------------------------ extras
    @property
    def crs(self) -> Any:
        """The metric CRS the model was trained in (a pyproj CRS), or None if the views had none."""
        from pyproj import CRS

        wkt = self.meta.get("crs")
        return CRS.from_wkt(wkt) if wkt else None

    @property
    def stats(self) -> dict[str, Any]:
        """Counts and timings of the last fit (POIs, distinct texts, encoded texts, pairs per second, ...)."""
        return dict(self.meta.get("stats", {}))

    def views_for_transform(self) -> list[str]:
        """Views :meth:`transform` needs besides the region polygons: the POIs in ``poi`` mode, else none."""
        return ["poi_points"] if self.params.region_mode == "poi" else []

    def embed_points(self, xy: np.ndarray, crs: Any = None, batch: int = _EMBED_CHUNK,
                     progress: Progress | None = None) -> np.ndarray:
        """The location encoder at arbitrary points.

        Args:
            xy: M x 2 coordinates (x = easting or longitude first).
            crs: Their CRS (anything pyproj accepts); None: the model's CRS.
            batch: Points per forward pass.
            progress: Polled (heartbeat and cancel) before every forward pass (8 M points for 250,000 regions
                in polygon mode take minutes).

        Returns:
            M x dim float32 location embeddings.

        Raises:
            RuntimeError: If the model is neither fitted nor loaded.
        """
        chunks = [emb for _start, emb in self._point_chunks(xy, crs, batch, progress)]
        return np.vstack(chunks) if chunks else np.empty((0, self.dim), dtype=np.float32)

    def region_means(self, xy: np.ndarray, owner: np.ndarray, n_regions: int, crs: Any = None,
                     batch: int = _EMBED_CHUNK, progress: Progress | None = None) -> np.ndarray:
        """The mean location embedding of each region's points, summed chunk by chunk: memory is
        ``n_regions x dim`` plus one chunk, never ``M x dim`` (8 M points at 250,000 regions in polygon mode).

        Args:
            xy: M x 2 coordinates.
            owner: M region positions (0..n_regions-1), one per point.
            n_regions: Number of regions.
            crs: The points' CRS (None: the model's).
            batch: Points per forward pass.
            progress: Polled before every forward pass.

        Returns:
            n_regions x dim float64 means (NaN rows where a region has no point).
        """
        import torch

        owner = np.asarray(owner, dtype=np.int64)
        total = torch.zeros((n_regions, self.dim), dtype=torch.float64)
        for start, emb in self._point_chunks(xy, crs, batch, progress):
            total.index_add_(0, torch.from_numpy(owner[start : start + len(emb)]), torch.from_numpy(emb).double())
        counts = np.bincount(owner, minlength=n_regions).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total.numpy() / counts[:, None]

    def _point_chunks(self, xy: np.ndarray, crs: Any, batch: int,
                      progress: Progress | None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, batch x dim float32 embeddings)`` per forward pass of the location encoder."""
        import torch

        net = self._ready_net()
        pts = self._to_model_crs(np.asarray(xy, dtype=np.float64).reshape(-1, 2), crs)
        rel = pts - np.asarray(self.meta["origin"], dtype=np.float64)
        device = next(net.parameters()).device
        net.eval()
        with torch.no_grad():
            for start in range(0, len(rel), batch):
                if progress is not None:
                    progress.poll(0.1 + 0.9 * start / len(rel), f"embedding points {start:,}/{len(rel):,}")
                chunk = torch.as_tensor(rel[start : start + batch], dtype=torch.float32, device=device)
                yield start, net.location(chunk).float().cpu().numpy()

    # ------------------------------------------------------------------------------------ helpers
    def _ready_net(self) -> CaLLiPerNet:
        return self.network.to(self.resolve_device())

    def _to_model_crs(self, xy: np.ndarray, crs: Any) -> np.ndarray:
        """Reproject ``xy`` from ``crs`` into the model's CRS (always x/y order, i.e. lon/lat for degrees)."""
        model_crs = self.crs
        if crs is None or model_crs is None:
            return xy
        from pyproj import CRS, Transformer

        src = CRS.from_user_input(crs)
        if src == model_crs:
            return xy
        transformer = Transformer.from_crs(src, model_crs, always_xy=True)
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        out = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
        if not np.isfinite(out).all():
            raise InputError(f"{self.name}: some locations cannot be projected into the model's CRS "
                             f"({model_crs.name}); check the layer's CRS.")
        return out

    def _cache_dir(self) -> Path | None:
        value = self.params.cache_dir.strip()
        if value.lower() == "none":
            return None
        return Path(value).expanduser() if value else cache_dir("text")

    @staticmethod
    def _view_crs(views: Views) -> Any:
        geometry = views.geometry
        return None if geometry is None else geometry.crs

    def _poi_frame(self, views: Views) -> pd.DataFrame:
        pts = views.poi_points
        if pts is None or not len(pts):
            raise InputError(f"{self.name} learns from POIs, but the inputs have none. Add a POI layer.")
        xy = pts[["x", "y"]].to_numpy(dtype=np.float64)
        if not np.isfinite(xy).all():
            raise InputError(f"{self.name}: some POIs have no valid coordinates.")
        return pts

    # ------------------------------------------------------------------------------------ fit
    def _fit(self, views: Views, progress: Progress) -> None:
        from backend.io.crs import choose_metric_crs
        from backend.models.calliper.location import grid_scales

        p = self.params
        pts = self._poi_frame(views)
        device = self.resolve_device(refresh=True)
        stage = "embed: calliper"

        # Coordinates in a metric CRS (a geographic CRS is replaced by the local UTM zone).
        src_crs = self._view_crs(views)
        model_crs = None
        if src_crs is not None:
            model_crs = choose_metric_crs(views.geometry, "the regions")
        self.meta = {"crs": model_crs.to_wkt() if model_crs is not None else None}
        xy = self._to_model_crs(pts[["x", "y"]].to_numpy(dtype=np.float64), src_crs)
        origin = xy.mean(axis=0)
        if p.scale_with_extent:
            extent = float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1.0))
            max_scale, min_scale = extent, extent * p.min_scale_m / p.max_scale_m
        else:
            max_scale, min_scale = p.max_scale_m, p.min_scale_m
        scales = grid_scales(p.scales, min_scale, max_scale)

        # Texts: build, deduplicate, encode through the cache.
        names = pts["name"] if "name" in pts.columns else None
        with_names = use_names(p.names, names)
        if p.names == "yes" and not with_names:
            progress.log(f"{self.name}: names were asked for but no POI has a name; using categories only.")
        texts, text_index = progress.wait(
            lambda: describe_pois(pts["category"], names if with_names else None, p.template, p.name_template),
            f"{self.name}: describing {len(pts):,} POIs")
        enc = encode_texts(texts, p.text_encoder, self._cache_dir(), device,
                           progress=progress.sub(stage, 0.0, 0.15), index=text_index)
        progress.log(
            f"{self.name}: {len(text_index):,} POIs, {len(enc.texts):,} distinct texts "
            f"({enc.n_cached:,} from the cache, {enc.n_encoded:,} encoded) in {enc.seconds:.1f} s; "
            f"names {'used' if with_names else 'not used'}"
        )

        # Held-out POIs for early stopping.
        n = len(xy)
        if n < 2:
            raise InputError(f"{self.name} needs at least 2 POIs; the inputs have {n}.")
        n_val = int(round(p.val_share * n))
        if n_val < 2 or n - n_val < 2:
            n_val = 0

        def pack() -> _TrainJob:  # a shuffle of every POI and their offsets: seconds at 10 M POIs, under wait
            order = np.random.default_rng(self.seed).permutation(n)
            val_rows, train_rows = np.sort(order[:n_val]), order[n_val:]
            return _TrainJob(model=self, rel=np.asarray(xy - origin, dtype=np.float32), text_vectors=enc.vectors,
                             text_index=np.asarray(enc.index), train_rows=train_rows, val_rows=val_rows,
                             scales=scales)

        job = progress.wait(pack, f"{self.name}: held-out POIs", 0.15)  # where the text encoding ended
        # the categories it learned (a set built POI by POI took seconds without an event at 10 M POIs)
        categories = progress.wait(lambda: sorted({str(c) for c in pd.unique(pts["category"])}),
                                   f"{self.name}: categories", 0.15)
        net, best, best_state, best_epoch, train_seconds, pairs = run_data_parallel(
            _train_rank, job, self.nproc, device, progress.sub(stage, 0.15, 1.0))
        if best_state is not None and p.patience:  # early stopping: keep the best held-out epoch
            net.load_state_dict(best_state)
        net.eval()
        self._net = net
        self.vocabulary = {"poi_points": categories}
        self.meta.update({
            "origin": [float(origin[0]), float(origin[1])],
            "scales_m": [float(scales[0]), float(scales[-1])],
            "text_encoder": p.text_encoder,
            "text_dim": int(enc.vectors.shape[1]),
            "names_used": with_names,
            "val_history": self.val_history,
            "best_epoch": best_epoch or len(self.history),  # best held-out epoch (kept when patience > 0)
            "kept_epoch": best_epoch if best_state is not None and p.patience else len(self.history),
            "stats": {
                "n_pois": n, "n_train": n - n_val, "n_val": n_val, "n_texts": len(enc.texts),
                "n_encoded": enc.n_encoded, "text_seconds": round(enc.seconds, 3),
                "epochs_run": len(self.history), "train_seconds": round(train_seconds, 3),
                "pairs_per_s": round(pairs / train_seconds, 1) if train_seconds > 0 else None,
                "device": device,
            },
        })
        progress.log(f"{self.name}: {len(self.history)} epochs on {device} ({pairs / max(train_seconds, 1e-9):,.0f} "
                     f"pairs/s); final loss {self.history[-1]:.4f}"
                     + (f", best held-out loss {best:.4f} at epoch {best_epoch}" if n_val else ""))

    # ------------------------------------------------------------------------------------ transform
    def _region_points(self, views: Views, progress: Progress) -> tuple[np.ndarray, np.ndarray, Any]:
        """Points to average per region, their region positions and their CRS."""
        mode = self.params.region_mode
        n = len(views)
        geometry = views.geometry
        crs = self._view_crs(views)
        if geometry is not None and len(geometry) != n:
            raise InputError(f"{self.name}: the views hold {len(geometry)} polygons for {n} regions.")
        if geometry is not None and crs is not None and self.crs is not None and self.crs != crs:
            # Sample in the model's CRS: the same polygon gets the same points whatever CRS it comes in.
            geometry = geometry.to_crs(self.crs)
        geo_crs = None if geometry is None else geometry.crs
        if mode == "poi":
            pts = views.poi_points
            if pts is None:
                raise InputError(f"{self.name}: region_mode 'poi' needs a POI layer for the regions to embed.")
            owner = views.region_ids.get_indexer(pd.Index(pts["region_id"].astype(str)))
            keep = owner >= 0
            xy, own = pts[["x", "y"]].to_numpy(dtype=np.float64)[keep], owner[keep]
            empty = np.setdiff1d(np.arange(n), own)
            if len(empty):
                progress.log(f"{self.name}: {len(empty):,} regions hold no POI; they are embedded from points "
                             "inside their polygons.")
                if geometry is None:
                    raise InputError(f"{self.name}: regions without POIs need their polygons (none given).")
                more, more_own = sample_in_polygons(geometry.iloc[empty], self.params.region_points, progress)
                more = self._to_model_crs(more, geo_crs)
                xy = np.vstack([self._to_model_crs(xy, crs), more])
                return xy, np.concatenate([own, empty[more_own]]), self.crs
            return xy, own, crs
        if geometry is None:
            if views.centroids is None:
                raise InputError(f"{self.name}: the regions have neither polygons nor centroids.")
            if mode == "polygon":
                progress.log(f"{self.name}: no region polygons given; embedding at the centroids.")
            return np.asarray(views.centroids, dtype=np.float64), np.arange(n), crs
        if mode == "centroid":
            c = geometry.centroid
            return np.column_stack([c.x.to_numpy(), c.y.to_numpy()]), np.arange(n), geo_crs
        xy, own = sample_in_polygons(geometry, self.params.region_points, progress)
        return xy, own, geo_crs

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        xy, owner, crs = self._region_points(views, progress)
        counts = np.bincount(owner, minlength=len(views))
        if (counts == 0).any():
            raise InputError(f"{self.name}: {int((counts == 0).sum())} regions have no usable geometry.")
        progress.update(0.1, f"embedding {len(xy):,} points of {len(views):,} regions")
        means = self.region_means(xy, owner, len(views), crs, progress=progress)
        progress.update(1.0, "calliper embeddings")
        return means

    # ------------------------------------------------------------------------------------ save / load
    def _save_weights(self, folder: Path) -> None:
        import torch

        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        torch.save(state, folder / "weights.pt")
        (folder / "calliper.json").write_text(json.dumps(self.meta, indent=2), encoding="utf-8")

    def _load_weights(self, folder: Path) -> None:
        import torch

        from backend.models.calliper.location import grid_scales
        from backend.models.calliper.model import CaLLiPerNet

        self.meta = json.loads((folder / "calliper.json").read_text(encoding="utf-8"))
        self.val_history = list(self.meta.get("val_history", []))
        lo, hi = self.meta["scales_m"]
        net = CaLLiPerNet(int(self.meta["text_dim"]), grid_scales(self.params.scales, lo, hi), dim=self.dim,
                          hidden=self.params.hidden, blocks=self.params.blocks, dropout=self.params.dropout,
                          temperature=self.params.temperature)
        net.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        net.eval()
        self._net = net


@dataclass
class _TrainJob:
    """What every training rank needs (numpy arrays: picklable for the helper processes)."""

    model: CaLLiPerEmbedder
    rel: np.ndarray  # POI coordinates relative to the origin (float32)
    text_vectors: np.ndarray  # distinct text vectors
    text_index: np.ndarray  # per POI: its text's row
    train_rows: np.ndarray
    val_rows: np.ndarray
    scales: np.ndarray


def _train_rank(ranks: Ranks, job: _TrainJob, progress: Progress) -> tuple[Any, ...]:
    """Train the network on one rank (all of it in one process).

    Returns:
        ``(net, best held-out loss, best state or None, best epoch, training seconds, pairs seen)``.
    """
    import torch

    from backend.models.calliper.model import CaLLiPerNet, info_nce, parameter_groups

    model, p = job.model, job.model.params
    device = ranks.device
    rel = torch.as_tensor(job.rel, dtype=torch.float32, device=device)
    text_vectors = torch.as_tensor(job.text_vectors, dtype=torch.float32, device=device)
    text_index = torch.as_tensor(job.text_index, dtype=torch.long, device=device)
    train_rows, n_val = job.train_rows, len(job.val_rows)
    train_t = torch.as_tensor(train_rows, dtype=torch.long, device=device)
    val_t = torch.as_tensor(job.val_rows, dtype=torch.long, device=device)
    batch = p.batch_size

    def batch_loss(net: CaLLiPerNet, rows: torch.Tensor) -> torch.Tensor:
        mine = ranks.shard(rows)  # this rank's pairs; the loss is over the whole batch (gathered features)
        codes = text_index[mine]
        if text_vectors.shape[0] <= len(rows):  # few distinct texts: project them all, then gather
            text = net.project_text(text_vectors)[codes]
        else:
            text = net.project_text(text_vectors[codes])
        location = net.location(rel[mine])
        return info_nce(ranks.gather(text, len(rows)), ranks.gather(location, len(rows)), net.logit_scale)

    def held_out_loss(net: CaLLiPerNet) -> float:
        net.eval()
        total = 0.0
        with torch.no_grad():
            for rows in torch.tensor_split(val_t, max(1, math.ceil(len(val_t) / batch))):
                total += float(batch_loss(net, rows)) * len(rows)
        return total / len(val_t)

    model.history, model.val_history = [], []
    best, best_state, best_epoch, stale = math.inf, None, 0, 0
    train_seconds, pairs = 0.0, 0
    with seeded(device, model.seed):
        net = CaLLiPerNet(job.text_vectors.shape[1], job.scales, dim=model.dim, hidden=p.hidden, blocks=p.blocks,
                          dropout=p.dropout, temperature=p.temperature).to(device)
        optimizer = make_optimizer("adamw", parameter_groups(net, p.weight_decay), p.learning_rate)
        step = ranks.wrap(net)
        generator = torch.Generator().manual_seed(model.seed)
        n_batches = max(1, math.ceil(len(train_rows) / batch))
        for epoch in range(p.epochs):
            t0 = time.perf_counter()
            net.train()
            perm = torch.randperm(len(train_rows), generator=generator).to(device)
            total = 0.0
            for b, rows in enumerate(torch.tensor_split(train_t[perm], n_batches)):
                ranks.check(progress, (epoch + b / n_batches) / p.epochs)
                loss = step(batch_loss, rows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            train_seconds += time.perf_counter() - t0
            pairs += len(train_rows)
            model.history.append(ranks.mean(total / len(train_rows)))
            message = f"epoch {epoch + 1}/{p.epochs}: loss {model.history[-1]:.4f}"
            if n_val:
                model.val_history.append(ranks.mean(held_out_loss(net)))
                message += f", held-out {model.val_history[-1]:.4f}"
                if model.val_history[-1] < best - _MIN_IMPROVEMENT:
                    best, best_epoch, stale = model.val_history[-1], epoch + 1, 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    stale += 1
            ranks.report(progress, (epoch + 1) / p.epochs, message)
            if n_val and p.patience and stale >= p.patience:
                ranks.log(progress, f"{model.name}: held-out loss has not improved for {p.patience} epochs; stopped "
                                    f"after epoch {epoch + 1}, keeping epoch {best_epoch}")
                break
    return net, best, best_state, best_epoch, train_seconds, pairs
