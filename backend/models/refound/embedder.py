"""ReFound region embedder.

Xiao, Liu, Zhou, Zhou, Xiong and Zheng, "ReFound: Crafting a Foundation Model for Urban Region
Understanding upon Language and Visual Foundations", KDD 2024; public code PaddleSpatial research/ReFound
(Apache-2.0). Own code after the facts of SPEC 4.4; the parts live in
:mod:`~backend.models.refound.tokens` (Z-order, word pieces, grid cells), :mod:`~backend.models.refound.masking`,
:mod:`~backend.models.refound.teachers` (language and vision teachers, visual codebook),
:mod:`~backend.models.refound.model` (the Mixture-of-Geospatial-Experts transformer) and
:mod:`~backend.models.refound.losses`.

How RegionLens trains it (each choice a parameter where it matters):

1. Samples: the user's regions plus, when the views carry them (``views.samples``, built by
   :func:`backend.views.samples.sample_views` when a method asks for ``samples``), square cells of two
   shifted grids over the regions' extent, so pre-training sees several times more samples than there are
   regions (``use_grid``). No label is ever read.
2. Inputs per sample: its POIs in Z-order, each POI's name (category label without a name) as word pieces of
   the packaged all-MiniLM-L6-v2 tokenizer, and the chip of one raster (``image_raster``; first in sorted
   order by default) resized to ``image_size`` and cut into 16 x 16 patches. The embedding table holds only
   the word pieces and categories seen in pre-training (others become [UNK] / unknown category), which keeps
   the small configuration small.
3. Objectives (each can be switched off): masked POI-token prediction (15 %, 80/10/10), masked patch
   prediction of discrete visual tokens (40 % of the patches; tokens = nearest centroid of a seeded k-means
   codebook over the vision teacher's patch features), cross-modal spatial alignment (visible POI tokens: is
   their grid cell masked in the image?), distillation of the POI [CLS] toward the language teacher's
   embedding of a templated region description (1 - cosine), of the image [CLS] toward the vision teacher's
   global feature (1 - cosine), and of the batch's POI-image similarity matrix toward the teacher's
   image-image similarity (KL, temperature 0.07). Losses are summed with weight 1. Image terms skip samples
   without valid pixels; samples without POIs are just a [CLS] token.
4. Optimisation: AdamW (weight decay 0.01), linear warm-up over ``warmup`` of the steps then linear decay to
   0, gradient clipping at 1; a fixed number of ``steps`` (never chosen by a test score); batches are
   seeded permutations of the samples; bf16 autocast on CUDA (``mixed_precision``).
5. Checkpoints: every ``checkpoint_every`` steps and on cancel, the network, optimiser, step and loss history
   go to ``checkpoint_dir`` (default under the cache folder, keyed by a fingerprint of the parameters and the
   inputs); a rerun of the same job resumes from the last checkpoint and ends in the same state as an
   uninterrupted run (each step's randomness is derived from the seed and the step number). The checkpoint
   is deleted when training completes.
6. Embedding (frozen, feature-based): the mean of the POI and image [CLS]
   outputs in evaluation mode; when ``dim`` is below the network width a PCA fitted on the training regions
   reduces it. Inductive: any region with POIs and/or a chip embeds, also of another city (same raster
   count).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.encoders.image import DEFAULT_IMAGE_ENCODER
from backend.encoders.text import DEFAULT_TEXT_ENCODER
from backend.errors import Cancelled, ConfigError, InputError
from backend.io.outputs import replace_atomically
from backend.models._base import Embedder, EmbedderParams, cache_param, param
from backend.models._training import Ranks, TrainedNetwork, make_optimizer, run_data_parallel
from backend.progress import Progress
from backend.views._base import Views

if TYPE_CHECKING:
    import torch

    from backend.models.refound.model import RefoundNet
    from backend.models.refound.tokens import CategoryVocabulary, PieceVocabulary, TokenBatch

__all__ = ["CONFIGS", "DEFAULT_STEPS", "OBJECTIVES", "RefoundEmbedder", "RefoundParams", "SampleSet"]

#: Network configurations (presets of :mod:`backend.models.refound.model`).
CONFIGS = ("small", "full")
#: Pre-training steps when ``steps`` is 0.
DEFAULT_STEPS = {"small": 600, "full": 20000}
#: Learning rate when ``learning_rate`` is 0: the reference's 5e-5 for the full model, more for the small one.
DEFAULT_LR = {"small": 5e-4, "full": 5e-5}
#: Objective switches (parameter names) in loss order.
OBJECTIVES = ("masked_poi", "masked_image", "alignment", "distill_text", "distill_image", "distill_similarity")


@dataclass
class RefoundParams(EmbedderParams):
    """Parameters of ReFound (see the module docstring)."""

    config: str = param(
        "small", "Size", "small: 4 layers of 128 (a CPU in minutes); full: 12 layers of 768 (for GPUs).",
        choices=CONFIGS)
    steps: int = param(0, "Training steps", "Pre-training steps; 0 = 600 (small) or 20000 (full).", minimum=0)
    batch_size: int = param(32, "Batch size", "Samples per step.", minimum=2)
    learning_rate: float = param(
        0.0, "Learning rate", "AdamW's peak step size; 0 = 5e-4 (small) or 5e-5 (full).", minimum=0.0, maximum=1.0)
    weight_decay: float = param(0.01, "Weight decay", "AdamW's penalty on the weights.", minimum=0.0)
    warmup: float = param(0.1, "Warm-up share", "Share of the steps with a linear warm-up.", minimum=0.0, maximum=0.99)
    dropout: float = param(0.1, "Dropout", "Share of activations dropped while training.", minimum=0.0, maximum=0.99)
    moge: bool = param(
        True, "Geospatial experts", "Separate POI and image feed-forward experts in the lower layers.")
    masked_poi: bool = param(True, "Masked POI prediction", "Objective: predict masked POI tokens.")
    masked_image: bool = param(
        True, "Masked image prediction", "Objective: predict the visual tokens of masked patches.")
    alignment: bool = param(True, "Spatial alignment", "Objective: tell which POIs lie under masked image patches.")
    distill_text: bool = param(
        True, "Learn from the language model", "Objective: POI summary toward the language teacher.")
    distill_image: bool = param(
        True, "Learn from the vision model", "Objective: image summary toward the vision teacher.")
    distill_similarity: bool = param(
        True, "Learn image similarities", "Objective: POI-image similarities toward the teacher's image similarities.")
    use_grid: bool = param(
        True, "Also learn from grid cells", "Pre-train also on grid samples when the inputs carry them.")
    image_raster: str = param(
        "", "Image raster", "Raster whose chips are the image input; empty = the first in sorted order.")
    codebook_size: int = param(
        0, "Visual tokens", "Size of the visual-token codebook; 0 = 256 (small) or 1024 (full).", minimum=0)
    tokenizer: str = param(DEFAULT_TEXT_ENCODER, "Tokenizer", "Registry name or local folder of the tokenizer.")
    text_teacher: str = param(
        DEFAULT_TEXT_ENCODER, "Language teacher", "Sentence encoder to learn from (registry name or local folder).")
    description_model: str = param(
        "", "Description model", "Local language model that rewrites the region descriptions; empty = template.")
    image_teacher: str = param(DEFAULT_IMAGE_ENCODER, "Vision teacher", "Registered image encoder to learn from.")
    mixed_precision: bool = param(True, "Mixed precision", "bf16 arithmetic on CUDA GPUs (ignored on the CPU).")
    checkpoint_every: int = param(
        100, "Checkpoint every (steps)", "Steps between checkpoints a stopped run resumes from (0 = none).", minimum=0)
    checkpoint_dir: str = param(
        "", "Checkpoint folder", "Empty = in the cache folder, per input fingerprint; none = no checkpoints.")
    cache_dir: str = cache_param("teacher features")

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.config in CONFIGS, f"config must be one of {CONFIGS}, got '{self.config}'"),
            (self.steps >= 0, "steps must be >= 0"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.learning_rate >= 0 and self.weight_decay >= 0, "learning_rate and weight_decay must be >= 0"),
            (0.0 <= self.warmup < 1.0 and 0.0 <= self.dropout < 1.0, "warmup and dropout must lie in [0, 1)"),
            (self.codebook_size >= 0, "codebook_size must be >= 0"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (any(getattr(self, o) for o in OBJECTIVES), f"switch on at least one objective of {OBJECTIVES}"),
        ]


@dataclass
class SampleSet:
    """Inputs of a set of samples, ready for the network.

    Attributes:
        ids: Sample ids (region ids, then grid cell ids).
        tokens: Token arrays (S x L).
        chips: S x B x C x C float32 chips in [0, 1] of the image raster, or None without imagery.
        masks: S x C x C valid-pixel masks, or None.
        image_valid: S bools (a chip with at least one valid pixel).
        descriptions: The templated region descriptions (language-teacher inputs).
        n_regions: The first ``n_regions`` samples are the user's regions.
    """

    ids: list[str]
    tokens: TokenBatch
    chips: np.ndarray | None
    masks: np.ndarray | None
    image_valid: np.ndarray
    descriptions: list[str]
    n_regions: int

    def __len__(self) -> int:
        return len(self.ids)


class RefoundEmbedder(Embedder[RefoundParams], TrainedNetwork["RefoundNet"]):
    """ReFound: a POI and imagery transformer with geospatial experts, pre-trained on the city itself.

    ``dim`` is at most the network width (128 small, 768 full; below it a PCA reduces); the seed draws the
    weights, masks and batches; the parameters are :class:`RefoundParams`.
    """

    name = "refound"
    title = "ReFound (Xiao et al., KDD 2024): POI-name and imagery transformer with geospatial experts"
    uses_views = ("poi_points", "chips", "samples")
    distributed = True
    default_dim = 128
    recorded = ("steps_run", "resumed_from", "train_seconds", "samples_per_second", "loss_terms")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meta: dict[str, Any] = {}
        self.loss_terms: dict[str, list[float]] = {}  # objective -> loss per step
        self.steps_run = 0
        self.resumed_from = 0
        self.train_seconds = 0.0
        self.samples_per_second = 0.0
        self.n_samples = 0
        self._net: RefoundNet | None = None
        self._pieces: PieceVocabulary | None = None
        self._categories: CategoryVocabulary | None = None
        self._pca_mean: np.ndarray | None = None
        self._pca_components: np.ndarray | None = None

    # ------------------------------------------------------------------------------------ public extras
    @property
    def steps(self) -> int:
        """Pre-training steps of this configuration."""
        return self.params.steps or DEFAULT_STEPS[self.params.config]

    def views_for_transform(self) -> list[str]:
        """The views the fitted model embeds from (POI points and/or chips), for callers that check inputs."""
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() (or load()) first.")
        return [v for v, used in (("poi_points", self.meta.get("has_pois")), ("chips", self.meta.get("has_image")))
                if used]

    def objectives(self) -> list[str]:
        """The objectives switched on."""
        return [o for o in OBJECTIVES if getattr(self.params, o)]

    # --------------------------------------------------------------------------------------- checks
    def _check_views(self, views: Views) -> None:
        if views.poi_points is None and not views.chips:
            raise InputError(
                "ReFound learns from POI names and imagery, but the inputs give neither: add a POI layer "
                "(with a name field if it has one) and/or a raster."
            )

    def _cache_root(self) -> Path | None:
        from backend.encoders.cache import cache_dir

        value = self.params.cache_dir.strip()
        if value.lower() == "none":
            return None
        return Path(value).expanduser() if value else cache_dir("image").parent

    def _raster_for(self, views: Views) -> str | None:
        """The raster whose chips feed the image part, or None."""
        if not views.chips:
            return None
        wanted = self.params.image_raster.strip()
        trained = self.meta.get("raster")
        if wanted and wanted in views.chips:
            return wanted
        if trained and trained in views.chips:
            return str(trained)
        if wanted and not trained:
            raise InputError(f"refound: image_raster '{wanted}' is not among the rasters {sorted(views.chips)}.")
        return sorted(views.chips)[0]

    # ------------------------------------------------------------------------------------- samples
    def sample_set(self, views: Views, with_grid: bool, progress: Progress | None = None) -> SampleSet:
        """Token arrays, chips and descriptions of the regions of ``views`` (plus its grid samples).

        Builds the vocabularies when the model has none yet (at fit time).
        """
        import pandas as pd

        from backend.models.refound.teachers import region_description
        from backend.models.refound.tokens import (
            CategoryVocabulary,
            PieceVocabulary,
            load_tokenizer,
            poi_label,
            square_bounds,
            tokenize_samples,
            tokenizer_ids,
        )

        progress = progress or Progress()
        parts = [views]
        if with_grid and views.samples is not None and len(views.samples):
            parts.append(views.samples)
        raster = self._raster_for(views)
        ids: list[str] = []
        bounds: list[tuple[float, float, float, float]] = []
        pois: list[pd.DataFrame] = []
        chips: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for part in parts:
            if part.geometry is None:
                raise InputError("refound: the views carry no region polygons (needed for the POI grid and chips).")
            pids = [str(r) for r in part.region_ids]
            ids.extend(pids)
            bounds.extend(square_bounds(tuple(b)) for b in part.geometry.bounds.to_numpy())
            if part.poi_points is not None and len(part.poi_points):
                pts = part.poi_points
                pois.append(pd.DataFrame({"x": pts["x"].to_numpy(), "y": pts["y"].to_numpy(),
                                          "sample_id": pts["region_id"].astype(str).to_numpy(),
                                          "category": pts["category"].astype(str).to_numpy(),
                                          "name": pts["name"].to_numpy()}))
            if raster is not None:
                name = raster if raster in part.chips else (sorted(part.chips)[0] if part.chips else None)
                if name is None:
                    raise InputError("refound: the grid samples carry no chips of the image raster.")
                chips.append(part.chips[name])
                masks.append(part.chip_masks.get(name, part.chips[name].any(axis=1)))
        if len(set(ids)) != len(ids):
            raise InputError("refound: sample ids are not unique (a region id equals a grid cell id).")
        poi_frame = (pd.concat(pois, ignore_index=True) if pois
                     else pd.DataFrame({"x": [], "y": [], "sample_id": [], "category": [], "name": []}))
        tokenizer = load_tokenizer(self.params.tokenizer)
        cache: dict[str, list[int]] = {}
        labels = [poi_label(c, n) for c, n in zip(poi_frame["category"], poi_frame["name"], strict=True)]
        progress.update(0.1, "tokenizing POI names")
        if self._pieces is None:
            self._pieces = PieceVocabulary.build(tokenizer_ids(labels, tokenizer, cache))
            self._categories = CategoryVocabulary.build(sorted(set(poi_frame["category"].astype(str))))
        assert self._categories is not None
        cfg_tokens = self._preset()
        tokens = tokenize_samples(poi_frame, ids, np.asarray(bounds, dtype=np.float64), tokenizer, self._pieces,
                                  self._categories, max_tokens=cfg_tokens["max_tokens"], piece_cache=cache)
        by_sample: dict[str, tuple[list[str], list[str | None]]] = {}
        for sid, cat, nm in zip(poi_frame["sample_id"], poi_frame["category"], poi_frame["name"], strict=True):
            entry = by_sample.setdefault(str(sid), ([], []))
            entry[0].append(str(cat))
            entry[1].append(nm if isinstance(nm, str) and nm else None)
        descriptions = [region_description(*by_sample.get(i, ([], []))) for i in ids]
        if chips:
            chip_arr = np.concatenate(chips).astype(np.float32, copy=False)
            mask_arr = np.concatenate(masks).astype(bool, copy=False)
            valid = mask_arr.reshape(len(mask_arr), -1).any(axis=1)
        else:
            chip_arr, mask_arr, valid = None, None, np.zeros(len(ids), dtype=bool)
        self.meta["raster"] = raster
        return SampleSet(ids=ids, tokens=tokens, chips=chip_arr, masks=mask_arr, image_valid=valid,
                         descriptions=descriptions, n_regions=len(views))

    def _preset(self) -> dict[str, Any]:
        from backend.models.refound.model import PRESETS

        return dict(PRESETS[self.params.config])

    # --------------------------------------------------------------------------------------- training
    def _fit(self, views: Views, progress: Progress) -> None:
        from backend.models.refound.model import make_config
        from backend.models.refound.teachers import text_targets, vision_targets, visual_codebook, visual_tokens

        p = self.params
        device = self.resolve_device(refresh=True)
        self._pieces = self._categories = None
        self.meta = {}
        data = self.sample_set(views, p.use_grid, progress.sub("embed: refound (tokens)", 0.0, 0.05))
        self.n_samples = len(data)
        if len(data) < 2:
            raise InputError(f"ReFound needs at least 2 samples to pre-train, got {len(data)}.")
        self.vocabulary = {"chips": [self.meta["raster"]] if self.meta.get("raster") else []}
        preset = self._preset()
        cfg = make_config(p.config, n_pieces=len(self._pieces), n_categories=len(self._categories),
                          dropout=p.dropout, moge=p.moge,
                          codebook_size=p.codebook_size or preset["codebook_size"])
        root = self._cache_root()
        text_cache = None if root is None else root / "text"
        image_cache = None if root is None else root / "refound"
        targets: dict[str, np.ndarray] = {}
        if p.distill_text and p.description_model.strip():
            from backend.models.refound.teachers import generate_descriptions

            data.descriptions = generate_descriptions(data.descriptions, p.description_model.strip(), device,
                                                      progress=progress.sub("embed: refound (descriptions)",
                                                                            0.05, 0.07))
            progress.log(f"refound: region descriptions written by {p.description_model.strip()}, e.g. "
                         f"'{data.descriptions[0][:160]}'")
        if p.distill_text:
            targets["text"] = text_targets(data.descriptions, p.text_teacher, text_cache, device,
                                           progress.sub("embed: refound (language teacher)", 0.05, 0.1))
        has_image = data.chips is not None and bool(data.image_valid.any())
        if has_image and (p.masked_image or p.distill_image or p.distill_similarity or p.alignment):
            assert data.chips is not None
            step = 16 * cfg.patch_grid  # teacher input: at least 224 px, its patch map aligned with the patches
            vt = vision_targets(data.chips, data.masks, cfg.patch_grid, p.image_teacher, image_cache, device,
                                progress=progress.sub("embed: refound (vision teacher)", 0.1, 0.25),
                                input_size=step * math.ceil(224 / step))
            targets["image"] = vt.global_.astype(np.float32)
            valid_patches = vt.patches[data.image_valid].reshape(-1, vt.patches.shape[-1]).astype(np.float32)
            codebook = visual_codebook(valid_patches, cfg.codebook_size, self.seed)
            if len(codebook) != cfg.codebook_size:
                cfg.codebook_size = len(codebook)
            targets["visual_tokens"] = visual_tokens(vt.patches.astype(np.float32), codebook)
            data.image_valid = data.image_valid & vt.valid
        elif not has_image and any(getattr(p, o) for o in ("masked_image", "alignment", "distill_image",
                                                           "distill_similarity")):
            progress.log("refound: no imagery with valid pixels; the image objectives are off for this run.")
        self.meta.update({"network": cfg.to_dict(), "pieces": self._pieces.to_dict(),
                          "categories": self._categories.to_dict(), "objectives": self.objectives(),
                          "has_image": has_image, "has_pois": bool(data.tokens.n_pois.sum() > 0),
                          "n_samples": len(data), "n_regions": data.n_regions})

        net = run_data_parallel(_train_rank, (self, cfg, data, targets), self.nproc, device,
                                progress.sub("embed: refound (pre-training)", 0.25, 0.95))
        self._net = net
        net.eval()
        self._fit_reduction(data, device)
        progress.update(0.97, "refound pre-trained")

    def fingerprint(self, data: SampleSet, targets: dict[str, np.ndarray], world: int = 1) -> str:
        """Hash of the parameters and the inputs (and of the number of training processes when above 1): a
        checkpoint resumes only the same job."""
        h = hashlib.sha256()
        key: dict[str, Any] = {"params": asdict(self.params), "dim": self.dim, "seed": self.seed,
                               "network": self.meta.get("network")}
        if world > 1:
            key["world"] = world
        h.update(json.dumps(key, sort_keys=True).encode())
        for arr in (data.tokens.ids, data.tokens.grid, data.image_valid):
            h.update(np.ascontiguousarray(arr).tobytes())
        if data.chips is not None:
            h.update(np.ascontiguousarray(data.chips[:, :, ::4, ::4]).tobytes())
        for key in sorted(targets):
            h.update(np.ascontiguousarray(targets[key]).tobytes())
        return h.hexdigest()[:24]

    def _checkpoint_path(self, fingerprint: str) -> Path | None:
        value = self.params.checkpoint_dir.strip()
        if value.lower() == "none" or self.params.checkpoint_every == 0:
            return None
        folder = Path(value).expanduser() if value else None
        if folder is None:
            root = self._cache_root()
            if root is None:
                return None
            folder = root / "refound" / "checkpoints"
        return folder / f"refound-{fingerprint}.pt"

    def _train(self, net: RefoundNet, data: SampleSet, targets: dict[str, np.ndarray], ranks: Ranks,
               progress: Progress) -> None:
        import torch

        p = self.params
        device = ranks.device
        steps = self.steps
        lr = p.learning_rate or DEFAULT_LR[p.config]
        decay, no_decay = [], []
        for name, weight in net.named_parameters():
            (no_decay if weight.ndim < 2 or "norm" in name.lower() else decay).append(weight)
        groups = [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # the fused kernel: one pass over all parameters (several times faster on a CPU)
        opt = make_optimizer("adamw", groups, lr, fused=True)
        warm = max(1, int(round(p.warmup * steps)))

        def rate(step: int) -> float:
            return (step + 1) / warm if step < warm else max(0.0, (steps - step) / max(1, steps - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
        ckpt = self._checkpoint_path(self.fingerprint(data, targets, ranks.world))  # every rank resumes; rank 0 writes
        self.loss_terms = {}
        self.history = []
        start = 0
        if ckpt is not None and ckpt.is_file():
            try:
                state = torch.load(ckpt, map_location=device, weights_only=True)
                net.load_state_dict(state["net"])
                opt.load_state_dict(state["opt"])
                sched.load_state_dict(state["sched"])
                start = int(state["step"])
                self.history = [float(v) for v in state["history"].tolist()]
                self.loss_terms = {k[len("terms."):]: [float(x) for x in v.tolist()]
                                   for k, v in state.items() if k.startswith("terms.")}
                ranks.log(progress, f"refound: resumed from the checkpoint at step {start} ({ckpt}).")
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                ranks.log(progress, f"refound: checkpoint {ckpt} unreadable ({exc}); training from the start.")
                start = 0
        self.resumed_from = start
        tensors = self._tensors(data, targets, device)
        autocast = device.startswith("cuda") and p.mixed_precision
        t0 = time.perf_counter()
        step = start
        run = ranks.wrap(net, find_unused=True)  # objectives without inputs in a step leave their heads out
        watch = progress.watch(net) if ranks.main else contextlib.nullcontext()
        try:
            with watch:  # a step of the full configuration can take seconds on a CPU
                for step in range(start, steps):
                    ranks.check(progress, step / steps)
                    net.train()
                    terms = run(self._step, tensors, step, autocast, ranks)
                    loss = terms.pop("_loss")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    total = ranks.mean(float(loss.detach()))
                    if not math.isfinite(total):
                        raise InputError(f"ReFound's training loss became {total} at step {step + 1}; try a lower "
                                         "learning_rate.")
                    self.history.append(total)
                    for k, v in terms.items():
                        self.loss_terms.setdefault(k, []).append(v)
                    if (step + 1) % 5 == 0 or step + 1 == steps:
                        ranks.report(progress, (step + 1) / steps, f"step {step + 1}/{steps}, loss {total:.3f}")
                    if ckpt is not None and ranks.main and (step + 1) % p.checkpoint_every == 0 and step + 1 < steps:
                        self._save_checkpoint(ckpt, net, opt, sched, step + 1)
        except Cancelled:
            if ckpt is not None and ranks.main and step > start:
                self._save_checkpoint(ckpt, net, opt, sched, len(self.history))
                progress.log(f"refound: cancelled at step {len(self.history)}; a rerun resumes from {ckpt}.")
            raise
        self.steps_run = steps
        self.train_seconds = time.perf_counter() - t0
        done = steps - start
        self.samples_per_second = done * p.batch_size / self.train_seconds if self.train_seconds > 0 else 0.0
        if ckpt is not None and ranks.main and ckpt.is_file():
            ckpt.unlink(missing_ok=True)

    def _save_checkpoint(self, path: Path, net: Any, opt: Any, sched: Any, step: int) -> None:
        import torch

        state: dict[str, Any] = {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                 "step": step, "history": torch.tensor(self.history, dtype=torch.float64)}
        for k, v in self.loss_terms.items():
            state[f"terms.{k}"] = torch.tensor(v, dtype=torch.float64)
        try:
            replace_atomically(path, lambda fh: torch.save(state, fh))
        except OSError:
            pass  # an unwritable checkpoint folder only costs the ability to resume

    def _tensors(self, data: SampleSet, targets: dict[str, np.ndarray], device: str) -> dict[str, Any]:
        import torch

        tb = data.tokens
        out: dict[str, Any] = {
            "ids": torch.from_numpy(tb.ids), "name_pos": torch.from_numpy(tb.name_pos),
            "poi_pos": torch.from_numpy(tb.poi_pos), "grid": torch.from_numpy(tb.grid),
            "category": torch.from_numpy(tb.category), "valid": torch.from_numpy(tb.valid),
            "image_valid": torch.from_numpy(np.asarray(data.image_valid, dtype=bool)),
            "chips": None if data.chips is None else torch.from_numpy(data.chips),
            "n": len(data), "device": device,
        }
        for k, v in targets.items():
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        return out

    def _batch_index(self, step: int, n: int) -> np.ndarray:
        """Samples of a step: consecutive slices of seeded per-epoch permutations (resumable by step)."""
        bs = min(self.params.batch_size, n)
        per_epoch = max(1, n // bs)
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        return perm[k * bs:(k + 1) * bs]

    def _pixels(self, chips: torch.Tensor, device: str) -> torch.Tensor:
        """Chips to the network's input: first three bands (fewer repeated), resized to ``image_size``."""
        import torch.nn.functional as F  # noqa: N812

        x = chips.to(device, non_blocking=True).float()
        bands = self.network.cfg.bands
        if x.shape[1] >= bands:
            x = x[:, :bands]
        else:
            x = x[:, [i % x.shape[1] for i in range(bands)]]
        size = self.network.cfg.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def _inputs(self, t: dict[str, Any], idx: Any, device: str) -> dict[str, Any]:
        """Network inputs of the samples ``idx``, POI sequences trimmed to the longest in the batch."""
        import torch

        valid = t["valid"][idx]
        length = max(1, int(valid.sum(dim=1).max()))
        batch = {k: t[k][idx][:, :length].to(device) for k in ("ids", "name_pos", "poi_pos", "grid", "category")}
        batch["valid"] = valid[:, :length].to(device)
        image_valid = t["image_valid"][idx].to(device)
        if t["chips"] is not None:
            batch["pixels"] = self._pixels(t["chips"][idx], device)
        else:
            cfg = self.network.cfg
            batch["pixels"] = torch.zeros(len(idx), cfg.bands, cfg.image_size, cfg.image_size, device=device)
        batch["image_valid"] = image_valid
        return batch

    def _step(self, net: RefoundNet, t: dict[str, Any], step: int, autocast: bool,
              ranks: Ranks | None = None) -> dict[str, Any]:
        """Loss of one pre-training step; ``_loss`` is the tensor, the rest floats per objective.

        In data-parallel training every rank draws the step's whole batch and its masks (as one process would)
        and computes the losses of its shard of the batch.
        """
        import torch

        from backend.models.refound import losses
        from backend.models.refound.masking import cmsa_labels, mask_patches, mask_tokens

        p = self.params
        ranks = ranks or Ranks()
        device = t["device"]
        cfg = net.cfg
        idx = torch.from_numpy(self._batch_index(step, t["n"]))
        torch.manual_seed(self.seed * 1_000_003 + step)  # dropout of this step
        gen = torch.Generator().manual_seed(self.seed * 1_000_033 + step)
        batch = self._inputs(t, idx, device)
        image_valid = batch["image_valid"]
        ids, labels = batch["ids"], None
        if p.masked_poi:
            masked, labels = mask_tokens(batch["ids"].cpu(), batch["valid"].cpu(), cfg.n_pieces, gen)
            ids, labels = masked.to(device), labels.to(device)
        use_image = bool(image_valid.any()) and "visual_tokens" in t
        patch_mask = None
        if use_image and (p.masked_image or p.alignment):
            patch_mask = mask_patches(len(idx), cfg.n_patches, gen).to(device)
            patch_mask &= image_valid[:, None]
        if ranks.distributed:  # this rank's samples of the batch
            own = ranks.shard(torch.arange(len(idx)))
            idx = idx[own]
            batch = {k: v[own.to(v.device)] for k, v in batch.items()}
            image_valid = batch["image_valid"]
            ids = ids[own.to(ids.device)]
            labels = None if labels is None else labels[own.to(labels.device)]
            patch_mask = None if patch_mask is None else patch_mask[own.to(patch_mask.device)]
            use_image = bool(image_valid.any()) and "visual_tokens" in t
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        terms: dict[str, Any] = {}
        parts: list[torch.Tensor] = []
        with ctx:
            out = net(ids, batch["name_pos"], batch["poi_pos"], batch["grid"], batch["category"], batch["valid"],
                      batch["pixels"], patch_mask=patch_mask, image_valid=image_valid)
            w_img = image_valid.float()
            if p.masked_poi and labels is not None and bool((labels != -100).any()):
                chosen = labels != -100  # the vocabulary head runs on the masked positions only
                logits = net.mlm(out.poi_hidden[chosen]).float()
                parts.append(losses.mlm_loss(logits[None], labels[chosen][None]))
                terms["masked_poi"] = parts[-1]
            if p.masked_image and patch_mask is not None and bool(patch_mask.any()):
                vt = t["visual_tokens"][idx].to(device)
                parts.append(losses.mim_loss(net.mim(out.image_hidden).float(), vt, patch_mask))
                terms["masked_image"] = parts[-1]
            if p.alignment and patch_mask is not None:
                lab_src = labels if labels is not None else torch.full_like(ids, -100)
                cm = cmsa_labels(batch["grid"].cpu(), patch_mask.cpu(), lab_src.cpu(), cfg.grid).to(device)
                cm = torch.where(image_valid[:, None], cm, torch.full_like(cm, -1.0))
                if bool((cm >= 0).any()):
                    parts.append(losses.cmsa_loss(net.cmsa(out.poi_hidden).float(), cm))
                    terms["alignment"] = parts[-1]
            if p.distill_text and "text" in t:
                parts.append(losses.distill_loss(net.text_distill(out.poi_cls).float(), t["text"][idx].to(device)))
                terms["distill_text"] = parts[-1]
            if p.distill_image and use_image:
                parts.append(losses.distill_loss(net.image_distill(out.image_cls).float(),
                                                 t["image"][idx].to(device), weight=w_img))
                terms["distill_image"] = parts[-1]
            if p.distill_similarity and use_image and int(image_valid.sum()) >= 2:
                poi_vec, img_vec = net.sim_poi(out.poi_cls), net.sim_img(out.image_cls)
                parts.append(losses.similarity_kl(poi_vec.float(), img_vec.float(), t["image"][idx].to(device),
                                                  weight=w_img))
                terms["distill_similarity"] = parts[-1]
        if not parts and ranks.distributed:  # nothing to learn from in this rank's shard: a zero loss
            parts.append(out.poi_cls.float().sum() * 0.0)
        if not parts:
            raise InputError("refound: none of the switched-on objectives applies to these inputs (e.g. only image "
                             "objectives but no imagery).")
        loss = torch.stack(parts).sum()
        result: dict[str, Any] = {k: float(v.detach()) for k, v in terms.items()}
        result["_loss"] = loss
        return result

    # --------------------------------------------------------------------------------------- embedding
    def cls_outputs(self, views: Views, progress: Progress | None = None) -> np.ndarray:
        """The POI and image [CLS] outputs of every region of ``views``: N x 2 x width (for fine-tuned heads)."""
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before cls_outputs().")
        return self._embed_regions(views, progress or Progress(), both=True)

    def _embed_regions(self, views: Views, progress: Progress, both: bool = False) -> np.ndarray:
        """Width-d vectors (``both``: N x 2 x W [CLS] outputs) of the regions of ``views``, frozen network."""
        self._check_views(views)
        trained_raster = self.meta.get("raster")
        if trained_raster and views.chips and trained_raster not in views.chips:
            progress.log(f"refound: raster '{trained_raster}' not in these inputs; using '{sorted(views.chips)[0]}'.")
        if trained_raster and not views.chips:
            progress.log("refound: no imagery in these inputs; regions embed from their POIs alone.")
        data = self.sample_set(views, False, progress.sub("embed: refound (tokens)", 0.0, 0.2))
        self.meta["raster"] = trained_raster
        device = self.resolve_device()
        net = self.network.to(device)
        return self._vectors(net, data, len(data), device, progress=progress.sub("embed: refound (regions)", 0.2, 1.0),
                             both=both)

    def _vectors(self, net: RefoundNet, data: SampleSet, n: int, device: str, batch: int = 64,
                 progress: Progress | None = None, both: bool = False) -> np.ndarray:
        """Width-d vectors of the first ``n`` samples (evaluation mode, no masking); ``both``: N x 2 x W [CLS]."""
        import torch

        from backend.models.refound.model import region_vectors

        t = self._tensors(data, {}, device)
        net.eval()
        out: list[np.ndarray] = []
        with torch.no_grad():
            for s in range(0, n, batch):
                if progress is not None:
                    progress.update(s / max(n, 1), f"embedding regions {s}/{n}")
                idx = torch.arange(s, min(n, s + batch))
                b = self._inputs(t, idx, device)
                o = net(b["ids"], b["name_pos"], b["poi_pos"], b["grid"], b["category"], b["valid"], b["pixels"],
                        patch_mask=None, image_valid=b["image_valid"])
                v = torch.stack([o.poi_cls, o.image_cls], dim=1) if both else region_vectors(o, "mean")
                out.append(v.float().cpu().numpy())
        if not out:
            return np.zeros((0, 2, net.cfg.width) if both else (0, net.cfg.width))
        return np.concatenate(out).astype(np.float64)

    def _fit_reduction(self, data: SampleSet, device: str) -> None:
        """PCA of the training regions' vectors when ``dim`` is below the network width."""
        width = self.network.cfg.width
        if self.dim > width:
            raise ConfigError(f"refound: dim {self.dim} exceeds the network width {width}; choose dim <= {width}.")
        if self.dim == width:
            self._pca_mean = self._pca_components = None
            return
        from sklearn.decomposition import PCA

        vectors = self._vectors(self.network, data, data.n_regions, device)
        k = min(self.dim, len(vectors))
        pca = PCA(n_components=k, svd_solver="full").fit(vectors)
        self._pca_mean = pca.mean_.astype(np.float64)
        self._pca_components = pca.components_.astype(np.float64)

    def _reduce(self, vectors: np.ndarray) -> np.ndarray:
        if self._pca_components is None or self._pca_mean is None:
            return vectors
        out = (vectors - self._pca_mean) @ self._pca_components.T
        if out.shape[1] < self.dim:  # fewer training regions than dim: pad with zeros
            out = np.hstack([out, np.zeros((len(out), self.dim - out.shape[1]))])
        return out

    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        return self._reduce(self._embed_regions(views, progress))

    # ---------------------------------------------------------------------------------------- storage
    def _save_weights(self, folder: Path) -> None:
        import torch

        tensors = {}
        if self._pca_components is not None and self._pca_mean is not None:
            tensors["pca.mean"] = torch.from_numpy(np.ascontiguousarray(self._pca_mean))
            tensors["pca.components"] = torch.from_numpy(np.ascontiguousarray(self._pca_components))
        self._write_network(folder, self.meta, tensors, tied=_TIED)  # the masked-token decoder shares the pieces'

    def _load_weights(self, folder: Path) -> None:
        from backend.models.refound.model import RefoundConfig, RefoundNet
        from backend.models.refound.tokens import CategoryVocabulary, PieceVocabulary

        meta, state, tensors = self._read_network(folder)
        net = RefoundNet(RefoundConfig.from_dict(meta["network"]))
        state.update({k: state[src] for k, src in _TIED.items()})
        net.load_state_dict(state, strict=True)
        net.eval()
        self._net = net
        self._pieces = PieceVocabulary.from_dict(meta["pieces"])
        self._categories = CategoryVocabulary.from_dict(meta["categories"])
        if "pca.components" in tensors:
            self._pca_mean = tensors["pca.mean"].numpy()
            self._pca_components = tensors["pca.components"].numpy()
        self.meta = meta


#: Parameters stored once: key -> the key it shares its tensor with.
_TIED = {"mlm.decoder.weight": "piece.weight"}


def _train_rank(ranks: Ranks, job: tuple[Any, ...], progress: Progress) -> RefoundNet:
    """Build and pre-train the network on one rank (all of it in one process); returns the network."""
    from backend.models._training import seeded
    from backend.models.refound.model import RefoundNet, count_parameters

    model, cfg, data, targets = job
    p = model.params
    with seeded(ranks.device, model.seed):
        net = RefoundNet(cfg).to(ranks.device)
        model._net = net
        ranks.log(progress,
                  f"refound: {p.config} network, {count_parameters(net):,} parameters; {len(data):,} samples "
                  f"({data.n_regions:,} regions + {len(data) - data.n_regions:,} grid cells), "
                  f"{int(data.image_valid.sum()):,} with imagery; {len(model._pieces):,} word pieces, "
                  f"{len(model._categories):,} categories; objectives {', '.join(model.objectives())}; "
                  f"{model.steps} steps of {p.batch_size}"
                  + (f" split over {ranks.world} processes" if ranks.distributed else "") + f"; device {ranks.device}")
        model._train(net, data, targets, ranks, progress)
    return net
