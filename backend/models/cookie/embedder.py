"""CooKIE region embedder.

Namgung, Lin, Lee and Chiang, "Less is More: Multimodal Region Representation via Pairwise Inter-view
Learning" (arXiv 2505.18178); CooKIE stands for Cross modal Knowledge Injected Embedding. No code is
published (the announced repository holds only a README). What the paper states (SPEC section 4.3): the
multimodal region data are factorised into *unique* (modality-specific) and *shared* information; stage 1,
intra-view pretraining, lets each modality's encoder learn from its own data alone; stage 2, pairwise
inter-view learning, captures with a contrastive objective what each *pair* of modalities shares, so the
number of objectives grows with M^2 rather than 2^M and the model stays small.

Choices the paper leaves open, and what RegionLens does (each is a parameter where it matters):

1. Modalities (:mod:`~backend.models.cookie.modalities`): POI category counts, POI texts (mean frozen
   all-MiniLM-L6-v2 embedding per region, through CaLLiPer's text cache), imagery (frozen EfficientNet-Lite0
   features of the region chips, masked average pooling, cached; or the image statistics with
   ``image_encoder="stats"``, also the fallback when no chips were built), OD rows (trips out and in, log1p),
   land-use shares, a satellite-embedding raster's band means. Any two or more; ``modalities`` restricts the set.
   Frozen image features rather than a CNN trained on the chips: they train in seconds on a CPU and the image
   branch stays a small MLP.
2. Encoders (:mod:`~backend.models.cookie.encoders`): per modality a 2-layer MLP trunk of width ``hidden``
   on the standardised input vector, then a linear *unique* head, and per pair a linear *shared* projection
   head on each side (:mod:`~backend.models.cookie.model`). Trunks are shared by the unique and shared heads
   of a modality, so the factorisation happens in the heads.
3. Stage 1, intra-view (``stage1_epochs``, default 100): ``intra_objective="contrastive"`` (default):
   SimCLR-style symmetric InfoNCE between two augmentations of the same region, each augmentation zeroing
   every input feature with probability ``feature_dropout`` (0.2) and adding Gaussian noise ``noise_std``
   (0.1, in standardised units); ``"reconstruction"``: a linear decoder reconstructs the clean input from
   the unique vector (MSE). Only trunks, unique heads (and decoders) train in stage 1; the unique head's
   output is the modality's unique representation.
4. Stage 2, pairwise inter-view (``stage2_epochs``, default 200), all parameters trainable, a fresh
   optimiser: for each pair (i, j), symmetric InfoNCE across the regions of a batch between the shared
   projections of the two modalities (augmented inputs) -- the *shared* part; plus the separation term;
   plus the stage-1 objective, kept (weight ``intra_weight``) so the unique parts keep describing their
   modality while they are being separated from the shared ones.
5. Separation term: *orthogonality*, not CLUB -- the mean squared batch cross-correlation between a
   modality's unique vector and each of its shared projections (:func:`~backend.models.cookie.losses.
   cross_correlation_penalty`, weight ``separation_weight``): scale-invariant, no variational network, no
   alternating updates (see :mod:`~backend.models.cookie.losses`).
6. Loss weighting: stage 2 minimises ``mean_pairs InfoNCE + separation_weight * mean separation +
   intra_weight * mean_modalities intra``; means (not sums) keep the loss scale independent of M, while the
   number of terms is M + M(M-1)/2 + M(M-1) (:func:`~backend.models.cookie.model.objective_counts`).
7. Temperature fixed at ``temperature`` = 0.1 (not learnt); AdamW, lr 1e-3, weight decay 1e-4; full batch
   up to ``batch_size`` (1024) regions, else shuffled equal mini-batches (InfoNCE negatives are the other
   regions of the batch).
8. Stopping: the fixed epoch counts, or (``plateau_window`` > 0) per stage, when the mean training loss of
   the last window improved by less than ``plateau_tol`` on the window before. Labels are never seen.
9. Embedding: per modality the L2-normalised unique vector, per pair the L2-normalised sum of the two
   normalised shared projections, concatenated (unique parts first, modalities in the order poi, poi_text,
   image, mobility, landuse, embedding, then pairs). ``part`` = ``"all"``, ``"shared"`` or ``"unique"``. Sizes:
   ``unique_dim`` per modality and ``shared_dim`` per pair, or (0, default) ``dim`` split half to the
   unique and half to the shared parts, evenly (each part at least 2). :attr:`CooKIEEmbedder.layout` names
   the columns of every part.
10. Missing modalities at transform time (a new city without OD flows, OD rows of other regions): the
    network is inductive per region; a missing modality's unique part is its training mean (a constant, no
    information), a pair with one side missing uses the present side's projection (the two were trained to
    agree), a pair with both missing its training mean. The log says which modality was missing. Rasters
    named differently in another city are matched to the training rasters in sorted order (same count).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from backend.encoders.cache import cache_dir
from backend.encoders.image import DEFAULT_IMAGE_ENCODER, image_features
from backend.errors import ConfigError, InputError
from backend.models._base import Embedder, EmbedderParams, cache_param, embedding_frame, param, text_encoder_param
from backend.models._training import Ranks, TrainedNetwork, make_optimizer, plateau, run_data_parallel
from backend.models.cookie.modalities import (
    COUNT_MODALITIES,
    IMAGE_ENCODERS,
    Scaler,
    available_modalities,
    text_features,
)
from backend.models.cookie.model import MODALITIES, modality_pairs, objective_counts, split_sizes
from backend.progress import Progress
from backend.views._base import Views

if TYPE_CHECKING:
    import torch

    from backend.models.cookie.model import CooKIENet

__all__ = ["PARTS", "INTRA_OBJECTIVES", "CooKIEEmbedder", "CooKIEParams"]

#: Values of ``part``.
PARTS = ("all", "shared", "unique")
#: Values of ``intra_objective``.
INTRA_OBJECTIVES = ("contrastive", "reconstruction")


@dataclass
class CooKIEParams(EmbedderParams):
    """Parameters of CooKIE (see the module docstring for what each choice means)."""

    modalities: str = param(
        "", "Modalities",
        "Comma-separated subset of poi, poi_text, image, mobility, landuse, embedding; empty = all present.")
    part: str = param(
        "all", "Embedding part", "What the embedding holds: all (unique + shared), shared or unique parts.",
        choices=PARTS)
    unique_dim: int = param(
        0, "Unique size", "Size of each modality's own part; 0 = half the embedding, split evenly.", minimum=0)
    shared_dim: int = param(
        0, "Shared size", "Size of each pair's shared part; 0 = half the embedding, split evenly.", minimum=0)
    hidden: int = param(64, "Hidden width", "Width of each modality's network.", minimum=1)
    stage1_epochs: int = param(
        100, "Stage 1 epochs", "Epochs of learning each modality alone (0 = skip stage 1).", minimum=0)
    stage2_epochs: int = param(200, "Stage 2 epochs", "Epochs of learning what pairs of modalities share.", minimum=0)
    intra_objective: str = param(
        "contrastive", "Stage 1 objective", "contrastive (two augmented copies) or reconstruction.",
        choices=INTRA_OBJECTIVES)
    learning_rate: float = param(1e-3, "Learning rate", "AdamW's step size.", minimum=1e-7, maximum=1.0)
    weight_decay: float = param(1e-4, "Weight decay", "AdamW's penalty on the weights.", minimum=0.0)
    batch_size: int = param(
        1024, "Batch size", "Regions per batch (all if fewer); the batch's other regions are its negatives.",
        minimum=2)
    temperature: float = param(0.1, "Temperature", "Temperature of the contrastive loss (fixed).", minimum=1e-4)
    feature_dropout: float = param(
        0.2, "Feature dropout", "Augmentation: chance of zeroing an input feature.", minimum=0.0, maximum=0.99)
    noise_std: float = param(0.1, "Noise", "Augmentation: Gaussian noise on the standardised inputs.", minimum=0.0)
    separation_weight: float = param(
        1.0, "Separation weight", "Weight of the penalty keeping unique and shared parts apart (stage 2).", minimum=0.0)
    intra_weight: float = param(
        1.0, "Stage 1 weight in stage 2", "Weight of the single-modality objective kept during stage 2.", minimum=0.0)
    dropout: float = param(
        0.0, "Dropout", "Share of activations dropped inside the networks.", minimum=0.0, maximum=0.99)
    plateau_window: int = param(
        0, "Plateau window", "Above 0: stop a stage when the mean loss of this many epochs stops improving.", minimum=0)
    plateau_tol: float = param(
        1e-3, "Plateau tolerance", "Relative improvement over the previous window that counts as progress.",
        minimum=0.0)
    image_encoder: str = param(
        DEFAULT_IMAGE_ENCODER, "Image encoder", "Frozen encoder of the image chips, or stats (image statistics).",
        choices=IMAGE_ENCODERS)
    image_size: int = param(224, "Chip size (px)", "Chips are resized to this side for the image encoder.", minimum=32)
    text_encoder: str = text_encoder_param()
    cache_dir: str = cache_param("text and image features")

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.part in PARTS, f"part must be one of {PARTS}, got '{self.part}'"),
            (self.intra_objective in INTRA_OBJECTIVES, f"intra_objective must be one of {INTRA_OBJECTIVES}"),
            (self.unique_dim >= 0 and self.shared_dim >= 0, "unique_dim and shared_dim must be >= 0"),
            (self.hidden >= 1, "hidden must be >= 1"),
            (self.stage1_epochs >= 0 and self.stage2_epochs >= 0, "stage1_epochs and stage2_epochs must be >= 0"),
            (self.stage1_epochs + self.stage2_epochs >= 1, "at least one training epoch is needed"),
            (self.learning_rate > 0 and self.weight_decay >= 0, "learning_rate must be > 0, weight_decay >= 0"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.temperature > 0, "temperature must be > 0"),
            (0.0 <= self.feature_dropout < 1.0 and 0.0 <= self.dropout < 1.0, "dropouts must lie in [0, 1)"),
            (self.noise_std >= 0 and self.separation_weight >= 0 and self.intra_weight >= 0,
             "noise_std, separation_weight and intra_weight must be >= 0"),
            (self.plateau_window >= 0, "plateau_window must be >= 0"),
            (self.image_encoder in IMAGE_ENCODERS, f"image_encoder must be one of {IMAGE_ENCODERS}"),
            (self.image_size >= 32, "image_size must be >= 32"),
            (len(_parse_modalities(self.modalities)) != 1,
             "modalities must name at least two modalities (or be empty for all)"),
        ]


def _parse_modalities(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown:
        raise ConfigError(f"cookie: unknown modalities {unknown}; choose from {list(MODALITIES)}.")
    return names


class CooKIEEmbedder(Embedder[CooKIEParams], TrainedNetwork["CooKIENet"]):
    """CooKIE: unique and pairwise-shared information of two or more modalities (see the module docstring).

    ``dim`` is the size of ``part="all"`` (split between unique and shared parts unless sizes are given); the seed
    draws the weights, augmentations and batches; the parameters are :class:`CooKIEParams`.
    """

    name = "cookie"
    title = "CooKIE (Namgung et al., 2025): unique and pairwise-shared information of two or more modalities"
    uses_views = ("poi_counts", "poi_texts", "chips", "image_stats", "mobility", "landuse", "embedding")
    min_views = 2
    distributed = True
    default_dim = 64
    recorded = ("epochs_run", "stage_seconds", "train_seconds", "loss_terms", "stage_history")

    def views_to_build(self) -> tuple[str, ...]:
        """No image chips with ``image_encoder = "stats"`` (the chips of 250,000 regions took about 11 GB)."""
        if self.params.image_encoder == "stats":
            return tuple(v for v in self.uses_views if v != "chips")
        return self.uses_views

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wanted = _parse_modalities(self.params.modalities)
        self.meta: dict[str, Any] = {}  # modality -> source view, raster names, encoders
        self.layout: list[dict[str, Any]] = []  # one entry per embedding part: part, name, start, stop
        self.stage_history: dict[str, list[dict[str, float]]] = {"stage1": [], "stage2": []}
        self.loss_terms: dict[str, float] = {}
        self.epochs_run = {"stage1": 0, "stage2": 0}
        self.stage_seconds = {"stage1": 0.0, "stage2": 0.0}
        self.train_seconds = 0.0
        self.feature_notes: list[str] = []
        self._scalers: dict[str, Scaler] = {}
        self._unique_mean: dict[str, np.ndarray] = {}
        self._shared_mean: dict[str, np.ndarray] = {}
        self._net: CooKIENet | None = None

    # ------------------------------------------------------------------------------------ public extras
    @property
    def modalities(self) -> list[str]:
        """The modalities of the fitted model, in network order."""
        return list(self.network.cfg.modalities)

    def modalities_for(self, views: Views) -> dict[str, str]:
        """The modalities this embedder would learn from ``views`` (restricted by ``modalities``) and their views."""
        found = available_modalities(views, self.params.image_encoder)
        if self._wanted:
            found = {m: v for m, v in found.items() if m in self._wanted}
        return found

    def views_for_transform(self) -> list[str]:
        """The views the fitted model embeds from (one per modality), for callers that check their inputs."""
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() (or load()) first.")
        return list(self.meta["sources"].values())

    def model_inputs(self, views: Views, progress: Progress | None = None) -> dict[str, np.ndarray | None]:
        """The standardised float32 input matrix of every fitted modality (None where ``views`` lacks it)."""
        progress = progress or Progress()
        raw = self._raw_inputs(views, self.modalities, progress)
        return {m: None if x is None else self._scalers[m].apply(x) for m, x in raw.items()}

    def transform_part(self, views: Views, part: str, progress: Progress | None = None) -> pd.DataFrame:
        """Like :meth:`transform` but for one ``part`` (``all``, ``shared``, ``unique``) whatever ``params.part`` is.

        Raises:
            ConfigError: On an unknown part.
        """
        if part not in PARTS:
            raise ConfigError(f"{self.name}: part must be one of {PARTS}, got '{part}'.")
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before transform_part().")
        return embedding_frame(self._embed(views, part, progress or Progress()), views.region_ids)

    # --------------------------------------------------------------------------------------- checks
    def _check_views(self, views: Views) -> None:
        found = self.modalities_for(views)
        if len(found) < 2:
            missing = [m for m in self._wanted if m not in found]
            hint = f" ({', '.join(missing)} not in the inputs)" if missing else ""
            raise InputError(
                f"CooKIE learns what pairs of modalities share, so it needs at least two of POI counts, POI texts, "
                f"imagery, OD flows and land use{' among ' + ', '.join(self._wanted) if self._wanted else ''}; "
                f"the inputs give {', '.join(found) or 'none'}{hint}. Add a POI layer, imagery, an OD table "
                "or a land-use layer."
            )

    def _cache_dirs(self) -> tuple[Path | None, Path | None]:
        """Folders of the text and image feature caches (None, None when ``cache_dir`` is ``"none"``)."""
        value = self.params.cache_dir.strip()
        if value.lower() == "none":
            return None, None
        if value:
            root = Path(value).expanduser()
            return root / "text", root / "image"
        return cache_dir("text"), cache_dir("image")

    # ------------------------------------------------------------------------------------- features
    def _raw_inputs(self, views: Views, modalities: Sequence[str], progress: Progress) -> dict[str, np.ndarray | None]:
        """Unscaled input matrices; None for a modality ``views`` cannot give in the fitted vocabulary."""
        device = self.resolve_device()
        out: dict[str, np.ndarray | None] = {}
        ids = [str(r) for r in views.region_ids]
        self.feature_notes = []
        for k, m in enumerate(modalities):
            sub = progress.sub("embed: cookie (inputs)", k / len(modalities), (k + 1) / len(modalities))
            source = self.meta["sources"][m]
            x: np.ndarray | None = None
            if source in ("poi_counts", "landuse", "image_stats", "embedding"):
                table = views.tables.get(source)
                if table is not None:
                    x = table.reindex(columns=self.vocabulary[source], fill_value=0.0).to_numpy(dtype=np.float64)
            elif source == "mobility":
                if views.mobility is not None and ids == self.vocabulary["mobility"]:
                    mob = np.asarray(views.mobility, dtype=np.float64)
                    x = np.hstack([mob, mob.T])
            elif source == "poi_texts":
                if views.poi_texts is not None and any(len(t) for t in views.poi_texts):
                    x, note = text_features(views.poi_texts, self.params.text_encoder, self._cache_dirs()[0], device,
                                            sub)
                    self.feature_notes.append(f"poi_text: {note}")
            elif source == "chips":
                rasters = self.vocabulary["chips"]
                if not all(r in views.chips for r in rasters) and len(views.chips) == len(rasters):
                    # Another city: rasters named differently, matched by sorted name.
                    self.feature_notes.append(f"image: rasters {sorted(views.chips)} used for {rasters}")
                    rasters = sorted(views.chips)
                if all(r in views.chips for r in rasters):
                    parts = []
                    for r in rasters:
                        feats, cached = image_features(views.chips[r], views.chip_masks.get(r),
                                                       self.params.image_encoder, self.params.image_size,
                                                       self._cache_dirs()[1], device, progress=sub)
                        parts.append(feats)
                        self.feature_notes.append(f"image: {r} {feats.shape[1]} features "
                                                  f"({'from the cache' if cached else 'computed'})")
                    x = np.hstack(parts)
            out[m] = x
        return out

    # --------------------------------------------------------------------------------------- training
    def _fit(self, views: Views, progress: Progress) -> None:
        import torch

        from backend.models.cookie.model import CooKIEConfig

        p = self.params
        n = len(views)
        if n < 2:
            raise InputError(f"CooKIE needs at least 2 regions, got {n}.")
        sources = self.modalities_for(views)
        modalities = list(sources)
        device = self.resolve_device(refresh=True)
        ids = [str(r) for r in views.region_ids]
        self.vocabulary = {}
        for source in sources.values():
            if source in ("poi_counts", "landuse", "image_stats", "embedding"):
                self.vocabulary[source] = [str(c) for c in views.tables[source].columns]
            elif source == "mobility":
                self.vocabulary["mobility"] = ids
            elif source == "chips":
                self.vocabulary["chips"] = sorted(views.chips)
        self.meta = {"sources": sources, "text_encoder": p.text_encoder, "image_encoder": p.image_encoder}
        if "image" in sources and sources["image"] == "image_stats" and p.image_encoder != "stats":
            progress.log("cookie: no image chips in the views; the image modality uses the image statistics.")

        raw = self._raw_inputs(views, modalities, progress.sub("embed: cookie (inputs)", 0.0, 0.1))
        for note in self.feature_notes:
            progress.log(f"cookie: {note}")
        self._scalers = {}
        inputs: dict[str, np.ndarray] = {}
        for m in modalities:
            x = raw[m]
            if x is None:  # cannot happen at fit time: the source was found above
                raise InputError(f"cookie: the {m} modality could not be built from the views.")
            self._scalers[m] = Scaler(log1p=m in COUNT_MODALITIES, whole_view=m in COUNT_MODALITIES).fit(x)
            inputs[m] = self._scalers[m].apply(x)

        pairs = modality_pairs(modalities)
        half = self.dim // 2
        unique_dims = [p.unique_dim] * len(modalities) if p.unique_dim else split_sizes(half, len(modalities))
        shared_dims = [p.shared_dim] * len(pairs) if p.shared_dim else split_sizes(self.dim - half, len(pairs))
        cfg = CooKIEConfig(modalities=modalities, input_dims=[inputs[m].shape[1] for m in modalities],
                           unique_dims=unique_dims, shared_dims=shared_dims, hidden=p.hidden, dropout=p.dropout,
                           reconstruction=p.intra_objective == "reconstruction")
        self.layout = _layout(cfg.modalities, cfg.unique_dims, cfg.pairs, cfg.shared_dims)
        total = sum(unique_dims) + sum(shared_dims)
        if total != self.dim:
            progress.log(f"cookie: the embedding has {total} columns (asked for {self.dim}): "
                         f"{len(modalities)} unique parts of {unique_dims} and {len(pairs)} shared parts of "
                         f"{shared_dims}.")

        job = (self, cfg, {m: inputs[m] for m in modalities}, sources)
        net = run_data_parallel(_train_rank, job, self.nproc, device, progress.sub("embed: cookie", 0.1, 0.95))
        self._store_means(net, {m: torch.from_numpy(inputs[m]).to(device) for m in modalities}, progress)
        progress.update(0.95, "cookie trained")

    def _train(self, net: CooKIENet, x_all: dict[str, torch.Tensor], ranks: Ranks, progress: Progress) -> None:
        import torch

        p = self.params
        gen_np = np.random.default_rng(self.seed)
        gen_t = torch.Generator(device=ranks.device)
        gen_t.manual_seed(self.seed)
        self.history = []
        self.stage_history = {"stage1": [], "stage2": []}
        self.epochs_run = {"stage1": 0, "stage2": 0}
        self.stage_seconds = {"stage1": 0.0, "stage2": 0.0}
        total = p.stage1_epochs + p.stage2_epochs
        step = ranks.wrap(net, find_unused=True)  # stage 1 leaves the shared heads out
        t0 = time.perf_counter()
        done = 0
        for stage, epochs in ((1, p.stage1_epochs), (2, p.stage2_epochs)):
            if epochs == 0:
                continue
            if stage == 1:
                params = [*net.encoders.parameters(), *net.unique.parameters(), *net.decoders.parameters()]
            else:
                params = list(net.parameters())
            opt = make_optimizer("adamw", params, p.learning_rate, p.weight_decay)
            key = f"stage{stage}"
            t_stage = time.perf_counter()
            net.train()
            for epoch in range(epochs):
                # an epoch over many regions can take seconds: poll between layers (rank 0)
                with progress.watch(net) if ranks.main else contextlib.nullcontext():
                    terms = self._epoch(stage, step, x_all, opt, gen_np, gen_t, progress, ranks)
                self.stage_history[key].append(terms)
                self.history.append(terms["total"])
                self.loss_terms = dict(terms)
                self.epochs_run[key] = epoch + 1
                done += 1
                ranks.report(progress, done / total,
                             f"stage {stage}, epoch {epoch + 1}/{epochs}, loss {terms['total']:.4f}")
                if plateau([t["total"] for t in self.stage_history[key]], p.plateau_window, p.plateau_tol):
                    ranks.log(progress, f"cookie: stage {stage} loss reached a plateau after {epoch + 1} epochs; "
                                        "stopped.")
                    done += epochs - epoch - 1
                    break
            self.stage_seconds[key] = time.perf_counter() - t_stage
        net.eval()
        self.train_seconds = time.perf_counter() - t0

    def _epoch(self, stage: int, step: Any, x_all: dict[str, torch.Tensor], opt: Any,
               gen_np: np.random.Generator, gen_t: torch.Generator, progress: Progress | None = None,
               ranks: Ranks | None = None) -> dict[str, float]:
        """One epoch; ``step(fn, *args)`` runs ``fn(net, *args)`` (see :meth:`Ranks.wrap`)."""
        import torch

        ranks = ranks or Ranks()
        n = next(iter(x_all.values())).shape[0]
        bs = self.params.batch_size
        if n <= bs:
            batches: list[np.ndarray | None] = [None]
        else:
            batches = list(np.array_split(gen_np.permutation(n), math.ceil(n / bs)))
        sums: dict[str, float] = {}
        progress = progress or Progress()
        for idx in batches:
            ranks.check(progress)
            if idx is None:
                xb = x_all
                share = 1.0
            else:
                sel = torch.from_numpy(idx).to(next(iter(x_all.values())).device)
                xb = {m: x[sel] for m, x in x_all.items()}
                share = len(idx) / n
            loss, terms = step(self._objective, stage, xb, gen_t, ranks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * share
        if not all(np.isfinite(v) for v in sums.values()):
            raise InputError(f"CooKIE's training loss became {sums} in stage {stage}; the inputs may hold extreme "
                             "values.")
        return sums

    def _objective(self, net: CooKIENet, stage: int, xb: dict[str, torch.Tensor], gen: torch.Generator,
                   ranks: Ranks) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(stage, net, xb, gen, ranks)

    def loss(self, stage: int, net: CooKIENet, xb: dict[str, torch.Tensor],
             gen: torch.Generator, ranks: Ranks | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch and its terms (stage 1: intra-view only; stage 2: all three).

        Args:
            stage: 1 or 2.
            net: The network.
            xb: Standardised inputs of the batch per modality.
            gen: Generator of the augmentations.
            ranks: In data-parallel training: every rank draws the augmentations of the whole batch (as one
                process would), runs the network on its shard and all-gathers the per-region outputs, so the
                loss is the whole batch's.

        Returns:
            ``(loss, terms)`` with terms ``total``, ``intra`` and, in stage 2, ``inter`` and ``separation``.
        """
        import torch

        from backend.models.cookie.losses import cross_correlation_penalty, info_nce, reconstruction_loss

        p = self.params
        ranks = ranks or Ranks()
        n = next(iter(xb.values())).shape[0]

        def gathered(parts: dict[Any, torch.Tensor]) -> dict[Any, torch.Tensor]:
            return {k: ranks.gather(v, n) for k, v in parts.items()}

        a = {m: ranks.shard(_augment(x, p.feature_dropout, p.noise_std, gen)) for m, x in xb.items()}
        ha = net.trunks(a)
        ua_own = net.unique_parts(ha)
        ua = gathered(ua_own)
        if p.intra_objective == "contrastive":
            b = {m: ranks.shard(_augment(x, p.feature_dropout, p.noise_std, gen)) for m, x in xb.items()}
            ub = gathered(net.unique_parts(net.trunks(b)))
            intra = torch.stack([info_nce(ua[m], ub[m], p.temperature) for m in ua]).mean()
        else:
            rec = gathered(net.decode(ua_own))
            order = torch.as_tensor(ranks.gathered_order(n), device=next(iter(xb.values())).device)
            target = xb if not ranks.distributed else {m: x[order] for m, x in xb.items()}
            intra = torch.stack([reconstruction_loss(rec[m], target[m]) for m in ua]).mean()
        if stage == 1:
            return intra, {"total": float(intra.detach()), "intra": float(intra.detach())}
        shared = net.shared_parts(ha)
        inter_terms, sep_terms = [], []
        for pair, sides in shared.items():
            assert sides[0] is not None and sides[1] is not None  # every modality is present in training
            s_a, s_b = ranks.gather(sides[0], n), ranks.gather(sides[1], n)
            inter_terms.append(info_nce(s_a, s_b, p.temperature))
            sep_terms.append(cross_correlation_penalty(ua[pair[0]], s_a))
            sep_terms.append(cross_correlation_penalty(ua[pair[1]], s_b))
        inter = torch.stack(inter_terms).mean()
        sep = torch.stack(sep_terms).mean()
        total = inter + p.separation_weight * sep + p.intra_weight * intra
        terms = {"total": float(total.detach()), "inter": float(inter.detach()),
                 "separation": float(sep.detach()), "intra": float(intra.detach())}
        return total, terms

    def _store_means(self, net: CooKIENet, x_all: dict[str, torch.Tensor], progress: Progress) -> None:
        import torch

        net.eval()
        with torch.no_grad(), progress.watch(net):  # every region in one pass: its layers keep the heartbeat
            unique, shared = net.embed(x_all)
        self._unique_mean = {m: v.mean(dim=0).cpu().numpy().astype(np.float64) for m, v in unique.items()}
        self._shared_mean = {f"{a}+{b}": v.mean(dim=0).cpu().numpy().astype(np.float64)
                             for (a, b), v in shared.items()}

    # --------------------------------------------------------------------------------------- embedding
    def _embed(self, views: Views, part: str, progress: Progress) -> np.ndarray:
        import torch

        net = self.network
        n = len(views)
        inputs = self.model_inputs(views, progress.sub("embed: cookie (inputs)", 0.0, 0.5))
        for note in self.feature_notes:
            if "used for" in note:
                progress.log(f"cookie: {note}")
        missing = [m for m, x in inputs.items() if x is None]
        if len(missing) == len(inputs):
            raise InputError(f"CooKIE was trained on {', '.join(inputs)}, and the inputs give none of them.")
        if missing:
            progress.log(f"cookie: {', '.join(missing)} missing in these inputs; their unique parts are the training "
                         "means and their pairs use the other modality.")
        device = self.resolve_device()
        net.to(device).eval()
        xs = {m: None if x is None else torch.from_numpy(x).to(device) for m, x in inputs.items()}
        with torch.no_grad(), progress.watch(net):  # every region in one pass: its layers keep the heartbeat
            unique, shared = net.embed(xs)
        blocks = []
        for item in self.layout:
            if part != "all" and item["part"] != part:
                continue
            if item["part"] == "unique":
                v = unique.get(item["name"])
                mean = self._unique_mean[item["name"]]
            else:
                a, b = item["name"].split("+")
                v = shared.get((a, b))
                mean = self._shared_mean[item["name"]]
            blocks.append(np.tile(mean, (n, 1)) if v is None else v.cpu().numpy().astype(np.float64))
        progress.update(1.0, "CooKIE embeddings")
        return np.hstack(blocks)

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        return self._embed(views, self.params.part, progress)

    # ---------------------------------------------------------------------------------------- storage
    def _save_weights(self, folder: Path) -> None:
        import torch

        tensors = {}
        for m, sc in self._scalers.items():
            assert sc.mean is not None and sc.scale is not None
            tensors[f"scaler.{m}.mean"] = torch.from_numpy(np.asarray(sc.mean, dtype=np.float64))
            tensors[f"scaler.{m}.scale"] = torch.from_numpy(np.asarray(sc.scale, dtype=np.float64))
        for m, v in self._unique_mean.items():
            tensors[f"unique_mean.{m}"] = torch.from_numpy(v)
        for k, v in self._shared_mean.items():
            tensors[f"shared_mean.{k}"] = torch.from_numpy(v)
        scalers = {m: {"log1p": sc.log1p, "whole_view": sc.whole_view} for m, sc in self._scalers.items()}
        self._write_network(folder, {"network": self.network.cfg.to_dict(), "meta": self.meta, "layout": self.layout,
                                     "scalers": scalers}, tensors)

    def _load_weights(self, folder: Path) -> None:
        from backend.models.cookie.model import CooKIEConfig, CooKIENet

        meta, state, tensors = self._read_network(folder)
        net = CooKIENet(CooKIEConfig(**meta["network"]))
        net.load_state_dict(state, strict=True)
        net.eval()
        self._net = net
        self.meta = dict(meta["meta"])
        self.layout = list(meta["layout"])
        self._scalers = {}
        for m, flags in meta["scalers"].items():
            self._scalers[m] = Scaler(log1p=bool(flags["log1p"]), whole_view=bool(flags["whole_view"]),
                                      mean=tensors[f"scaler.{m}.mean"].numpy(),
                                      scale=tensors[f"scaler.{m}.scale"].numpy())
        self._unique_mean = {k[len("unique_mean."):]: v.numpy() for k, v in tensors.items()
                             if k.startswith("unique_mean.")}
        self._shared_mean = {k[len("shared_mean."):]: v.numpy() for k, v in tensors.items()
                             if k.startswith("shared_mean.")}


# ------------------------------------------------------------------------------------------- helpers
def _layout(modalities: Sequence[str], unique_dims: Sequence[int], pairs: Sequence[tuple[str, str]],
            shared_dims: Sequence[int]) -> list[dict[str, Any]]:
    """Column ranges of every part of the ``all`` embedding (unique parts, then shared parts)."""
    out, start = [], 0
    for m, d in zip(modalities, unique_dims, strict=True):
        out.append({"part": "unique", "name": m, "start": start, "stop": start + d})
        start += d
    for (a, b), d in zip(pairs, shared_dims, strict=True):
        out.append({"part": "shared", "name": f"{a}+{b}", "start": start, "stop": start + d})
        start += d
    return out


def _augment(x: torch.Tensor, drop: float, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Zero each feature with probability ``drop`` and add Gaussian noise of std ``noise``."""
    import torch

    out = x
    if drop > 0:
        keep = torch.rand(x.shape, generator=gen, device=x.device) >= drop
        out = out * keep.to(x.dtype)
    if noise > 0:
        out = out + noise * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return out


def _train_rank(ranks: Ranks, job: tuple[Any, ...], progress: Progress) -> CooKIENet:
    """Build and train the network on one rank (all of it in one process); returns the trained network."""
    import torch

    from backend.models._training import seeded
    from backend.models.cookie.model import CooKIENet, count_parameters

    model, cfg, inputs, sources = job
    p = model.params
    with seeded(ranks.device, model.seed):
        net = CooKIENet(cfg).to(ranks.device)
        counts = objective_counts(len(cfg.modalities))
        n = len(next(iter(inputs.values())))
        ranks.log(progress,
                  f"cookie: modalities {', '.join(f'{m} ({s})' for m, s in sources.items())}; {len(cfg.pairs)} "
                  f"pairs, {counts['total']} loss terms; {count_parameters(net):,} parameters; {n} regions; "
                  f"{p.stage1_epochs} + {p.stage2_epochs} epochs; device {ranks.device}")
        model._net = net
        x_all = {m: torch.from_numpy(x).to(ranks.device) for m, x in inputs.items()}
        model._train(net, x_all, ranks, progress)
    return net
