"""HAFusion region embedder.

Sun, Qi, Chang, Fan, Karunasekera and Tanin, "Urban Region Representation Learning with Attentive
Fusion", ICDE 2024 (arXiv 2312.04606); public code github.com/MiRuacle24/HAFusion.

Two configurations (``config``), see :mod:`backend.models.hafusion.model`:

* ``reference``: the published architecture and training (full batch, Adam lr 5e-4, weight decay 5e-4,
  2000 epochs, dropout 0.1, hidden width = number of regions, per-city hyper-parameters ``preset`` =
  ``nyc``, ``chicago`` or ``sf``). Transductive: it embeds exactly the regions it was trained on.
* ``scalable``: fixed width (``width``), fused attention kernels, mini-batches of ``batch_regions``
  regions with the matching blocks of the targets; 300 epochs by default. Above ``batch_regions`` regions
  the embedding is computed in seeded random batches of that size too, as in training (attention within a
  batch), so embedding 250,000 regions costs N / batch passes, not one N x N attention. Without an OD view
  it also embeds regions it was not trained on (same table columns).
* ``auto`` (default): ``reference`` up to :data:`AUTO_MAX_REGIONS` regions, ``scalable`` above.

Any subset of the views POI counts, land use, image statistics and OD flows works (at least one). Each
table view is an input and a similarity target; OD flows are an input and a relation target; spatial
adjacency is a relation target when there is no OD table (``adjacency_target``). Training runs for a fixed
number of epochs, or stops earlier when the training loss reaches a plateau (``plateau_window``); it never
looks at labels. Progress is reported once per epoch; cancellation is checked between mini-batches and between
the network's layers in the forward and backward passes. The embedding is the
network's output in evaluation mode (no dropout) after the last epoch; the public code instead keeps the
training-mode output of the epoch with the best test R2, which an honest protocol cannot do.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.errors import InputError
from backend.models._base import Embedder, EmbedderParams, param
from backend.models._training import Ranks, TrainedNetwork, plateau
from backend.models.hafusion.data import (
    ADJACENCY_MODES,
    SCALINGS,
    InputTransform,
    Targets,
    apply_inputs,
    build_targets,
    fit_inputs,
    input_views,
)
from backend.progress import Progress
from backend.views._base import Views

if TYPE_CHECKING:
    import torch

    from backend.models.hafusion.model import HAFusionConfig, HAFusionNet

__all__ = [
    "AUTO_MAX_REGIONS",
    "CONFIGS",
    "DEFAULT_EPOCHS",
    "LOSS_SCALINGS",
    "PRESETS",
    "HAFusionEmbedder",
    "HAFusionParams",
    "choose_heads",
]

#: Configurations: the published one, the scalable one, or chosen by the number of regions.
CONFIGS = ("auto", "reference", "scalable")
#: Loss scalings (:data:`backend.models.hafusion.losses.REDUCTIONS`; kept here so importing needs no torch).
LOSS_SCALINGS = ("reference", "mean")
#: ``config="auto"`` uses the reference configuration up to this many regions.
AUTO_MAX_REGIONS = 300
#: Epochs when ``epochs`` is 0.
DEFAULT_EPOCHS = {"reference": 2000, "scalable": 300}
#: Per-city hyper-parameters of the paper (public code's parse_args): NYC, Chicago, San Francisco.
PRESETS: dict[str, dict[str, int]] = {
    "nyc": {"intra_blocks": 3, "inter_blocks": 3, "heads": 4, "d_prime": 64, "d_m": 72},
    "chicago": {"intra_blocks": 1, "inter_blocks": 2, "heads": 1, "d_prime": 32, "d_m": 36},
    "sf": {"intra_blocks": 3, "inter_blocks": 2, "heads": 5, "d_prime": 64, "d_m": 72},
}


@dataclass
class HAFusionParams(EmbedderParams):
    """Parameters of HAFusion (0 means "the default of the configuration or preset")."""

    config: str = param(
        "auto", "Configuration",
        "reference: the published model (width = number of regions); scalable: fixed width, for large "
        "cities; auto: chosen by the number of regions.", choices=CONFIGS)
    preset: str = param(
        "nyc", "City preset", "The paper's per-city block counts, heads and sizes (used where 0 is set below).",
        choices=tuple(PRESETS))
    epochs: int = param(0, "Epochs", "Fixed training length; 0 = 2000 (reference) or 300 (scalable).", minimum=0)
    learning_rate: float = param(5e-4, "Learning rate", "Adam's step size.", minimum=1e-7, maximum=1.0)
    weight_decay: float = param(5e-4, "Weight decay", "Adam's L2 penalty on the weights.", minimum=0.0)
    dropout: float = param(0.1, "Dropout", "Share of activations dropped while training.", minimum=0.0, maximum=0.99)
    intra_blocks: int = param(0, "Intra-view blocks", "Attention blocks inside each view (0 = preset).", minimum=0)
    inter_blocks: int = param(0, "Inter-view blocks", "Attention blocks across the views (0 = preset).", minimum=0)
    region_blocks: int = param(3, "Region fusion blocks", "Transformer blocks over the regions.", minimum=0)
    heads: int = param(
        0, "Attention heads", "0 = preset; lowered to a divisor of the width when needed.", minimum=0)
    d_prime: int = param(0, "View-fusion size", "Hidden size of the view fusion (0 = preset).", minimum=0)
    d_m: int = param(0, "Memory units", "Learnable memory units of the inter-view attention (0 = preset).", minimum=0)
    lift_channels: int = param(32, "Edge channels", "Channels lifting each attention map (c).", minimum=1)
    ffn_dim: int = param(
        0, "Feed-forward width", "0 = 2048 (reference) or 4 x width (scalable).", minimum=0)
    width: int = param(128, "Hidden width", "Scalable configuration only: hidden width of every view.", minimum=1)
    batch_regions: int = param(
        1024, "Regions per batch", "Scalable configuration only: regions per mini-batch (all if fewer).", minimum=2)
    input_scaling: str = param(
        "auto", "Input scaling",
        "raw, log1p of mobility, or log1p of every count view; auto: raw (reference), log1p (scalable).",
        choices=("auto", *SCALINGS))
    adjacency_target: str = param(
        "auto", "Adjacency as target",
        "Learn from which regions touch: auto (when there is no OD table), always or never.",
        choices=ADJACENCY_MODES)
    loss_scaling: str = param(
        "auto", "Loss scaling",
        "reference: relation terms summed over pairs, as published; mean: per pair, so no term dominates; "
        "auto: reference (reference configuration), mean (scalable).", choices=("auto", *LOSS_SCALINGS))
    plateau_window: int = param(
        0, "Plateau window", "Above 0: stop when the mean loss of this many epochs stops improving.", minimum=0)
    plateau_tol: float = param(
        1e-3, "Plateau tolerance", "Relative improvement over the previous window that counts as progress.",
        minimum=0.0)

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.config in CONFIGS, f"config must be one of {CONFIGS}, got '{self.config}'"),
            (self.preset in PRESETS, f"preset must be one of {sorted(PRESETS)}, got '{self.preset}'"),
            (self.input_scaling in ("auto", *SCALINGS), f"input_scaling must be auto or one of {SCALINGS}"),
            (self.adjacency_target in ADJACENCY_MODES, f"adjacency_target must be one of {ADJACENCY_MODES}"),
            (self.loss_scaling in ("auto", *LOSS_SCALINGS), f"loss_scaling must be auto or one of {LOSS_SCALINGS}"),
            (self.epochs >= 0 and self.plateau_window >= 0, "epochs and plateau_window must be >= 0"),
            (self.learning_rate > 0 and self.weight_decay >= 0, "learning_rate must be > 0, weight_decay >= 0"),
            (0.0 <= self.dropout < 1.0, "dropout must lie in [0, 1)"),
            (self.width >= 1 and self.batch_regions >= 2, "width must be >= 1 and batch_regions >= 2"),
            (min(self.intra_blocks, self.inter_blocks, self.region_blocks, self.heads, self.d_prime, self.d_m,
                 self.ffn_dim) >= 0, "block counts and sizes must be >= 0"),
            (self.lift_channels >= 1, "lift_channels must be >= 1"),
        ]


def choose_heads(width: int, wanted: int) -> int:
    """The largest number of heads ``<= wanted`` that divides ``width`` (at least 1)."""
    for h in range(max(1, min(wanted, width)), 0, -1):
        if width % h == 0:
            return h
    return 1


class HAFusionEmbedder(Embedder[HAFusionParams], TrainedNetwork["HAFusionNet"]):
    """HAFusion: attentive fusion of multi-view region data (see the module docstring).

    The seed draws the weights, dropout, mini-batches and SVD; the parameters are :class:`HAFusionParams`.
    """

    name = "hafusion"
    title = "HAFusion (Sun et al., ICDE 2024): attentive fusion of POI, land-use, imagery and OD views"
    uses_views = ("poi_counts", "landuse", "image_stats", "mobility", "embedding", "adjacency")
    distributed = True  # config = "scalable" (the reference configuration trains in one process)
    default_dim = 144  # the paper's embedding size
    recorded = ("variant", "epochs_run", "train_seconds", "loss_terms")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant: str | None = None  # configuration actually used
        self.epochs_run = 0
        self.train_seconds = 0.0
        self.loss_terms: dict[str, float] = {}  # last epoch's loss per target
        self._overrides: dict[str, Any] = {}
        self._transforms: list[InputTransform] = []
        self._cfg: HAFusionConfig | None = None
        self._net: HAFusionNet | None = None

    # ------------------------------------------------------------------------------------ public extras
    def set_targets(self, **matrices: Any) -> HAFusionEmbedder:
        """Use given target matrices instead of those derived from the views at the next :meth:`fit`.

        Args:
            **matrices: ``N x N`` arrays by target name: relations ``mobility``, ``adjacency``;
                similarities ``poi_counts``, ``landuse``, ``image_stats`` (e.g. a benchmark's published
                similarity matrices).

        Returns:
            ``self``.
        """
        self._overrides = dict(matrices)
        return self

    def resolve_config(self, n_regions: int) -> str:
        """The configuration used for ``n_regions`` regions (``auto`` resolved)."""
        if self.params.config != "auto":
            return self.params.config
        return "reference" if n_regions <= AUTO_MAX_REGIONS else "scalable"

    def make_config(self, variant: str, views: list[str], input_dims: list[int], n_regions: int,
                    relations: list[str], similarities: list[str]) -> HAFusionConfig:
        """The network architecture for these inputs and targets (presets and overrides applied).

        Args:
            variant: ``"reference"`` or ``"scalable"``.
            views: Input view names.
            input_dims: Input columns per view (reference mobility: N).
            n_regions: Number of regions N (the reference width).
            relations: Relation target names.
            similarities: Similarity target names.

        Returns:
            The :class:`~backend.models.hafusion.model.HAFusionConfig`.
        """
        from backend.models.hafusion.model import HAFusionConfig

        p = self.params
        preset = PRESETS[p.preset]
        reference = variant == "reference"
        width = n_regions if reference else p.width
        return HAFusionConfig(
            variant=variant,
            views=list(views),
            input_dims=list(input_dims),
            identity=[reference and v == "mobility" for v in views],
            width=width,
            dim=self.dim,
            relations=list(relations),
            similarities=list(similarities),
            heads=choose_heads(width, p.heads or preset["heads"]),
            intra_blocks=p.intra_blocks or preset["intra_blocks"],
            inter_blocks=p.inter_blocks or preset["inter_blocks"],
            region_blocks=p.region_blocks,
            d_prime=p.d_prime or preset["d_prime"],
            d_m=p.d_m or preset["d_m"],
            lift_channels=p.lift_channels,
            ffn_dim=p.ffn_dim or (2048 if reference else 4 * width),
            dropout=p.dropout,
        )

    # --------------------------------------------------------------------------------------- training
    def _fit(self, views: Views, progress: Progress) -> None:
        from backend.models._training import run_data_parallel

        p = self.params
        names = input_views(views, self.uses_views)
        if not names:
            raise InputError(
                "HAFusion needs at least one input view (POI counts, land use, imagery or an OD table); "
                f"the inputs only give {sorted(views.available()) or 'none'}."
            )
        n = len(views)
        if n < 2:
            raise InputError(f"HAFusion needs at least 2 regions, got {n}.")
        variant = self.resolve_config(n)
        scaling = p.input_scaling if p.input_scaling != "auto" else ("raw" if variant == "reference" else "log1p")
        ids = [str(r) for r in views.region_ids]
        self.vocabulary = {"region_id": ids}
        for name in names:
            self.vocabulary[name] = ids if name == "mobility" else [str(c) for c in views.tables[name].columns]
        self._transforms = fit_inputs(views, names, variant, scaling, width=p.width, seed=self.seed)
        inputs = apply_inputs(views, self._transforms, self.vocabulary)
        targets = build_targets(views, names, p.adjacency_target, self._overrides)
        cfg = self.make_config(variant, names, [x.shape[1] for x in inputs], n, list(targets.relations),
                               list(targets.similarities))
        device = self.resolve_device(refresh=True)
        self.variant, self._cfg = variant, cfg
        epochs = p.epochs or DEFAULT_EPOCHS[variant]
        batch = n if variant == "reference" or n <= p.batch_regions else p.batch_regions
        nproc = self.nproc
        if nproc > 1 and variant == "reference":
            progress.log("hafusion: the reference configuration trains in one process (its width is the number of "
                         "regions and every epoch is one full batch); nproc applies to config = 'scalable'.")
            nproc = 1
        job = (self, inputs, targets, epochs, batch, names)
        self._net = run_data_parallel(_train_rank, job, nproc, device, progress)

    def _train(self, net: HAFusionNet, inputs: list[np.ndarray], targets: Targets, epochs: int, batch: int,
               ranks: Ranks, progress: Progress) -> None:
        import torch

        from backend.models._training import make_optimizer
        from backend.models.hafusion.losses import total_loss

        p = self.params
        device = ranks.device
        reduction = p.loss_scaling if p.loss_scaling != "auto" else (
            "reference" if net.cfg.variant == "reference" else "mean")
        opt = make_optimizer("adam", net.parameters(), p.learning_rate, p.weight_decay, fused=True)
        step = ranks.wrap(net)
        n = len(inputs[0])
        x_all = [torch.from_numpy(x).to(device) for x in inputs]

        def blocks(idx: np.ndarray | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
            rel = {k: torch.from_numpy(np.ascontiguousarray(t.block(idx))).to(device)
                   for k, t in targets.relations.items()}
            sim = {k: torch.from_numpy(np.ascontiguousarray(t.block(idx))).to(device)
                   for k, t in targets.similarities.items()}
            return rel, sim

        def objective(model: HAFusionNet, x: list[torch.Tensor], rel: dict[str, torch.Tensor],
                      sim: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            _, decoded = model(x)
            return total_loss(decoded, rel, sim, reduction)

        full = blocks(None) if batch >= n and not ranks.distributed else None
        gen = np.random.default_rng(self.seed)
        self.history = []
        net.train()
        t0 = time.perf_counter()
        watch = progress.watch(net) if ranks.main else contextlib.nullcontext()
        with watch:  # a full-batch epoch can take seconds: poll between layers too
            for epoch in range(epochs):
                if full is not None:
                    batches: list[np.ndarray | None] = [None]
                elif batch >= n:  # one batch, split over the ranks
                    batches = [np.arange(n)]
                else:
                    perm = gen.permutation(n)
                    batches = [np.sort(perm[i:i + batch]) for i in range(0, n, batch)]
                epoch_loss, terms_sum = 0.0, dict.fromkeys([*targets.relations, *targets.similarities], 0.0)
                for b, idx in enumerate(batches):
                    ranks.check(progress, (epoch + b / len(batches)) / epochs)
                    if idx is not None:
                        idx = ranks.shard(idx)  # this rank's regions of the batch (and their target blocks)
                    rel, sim = full if full is not None else blocks(idx)
                    x = x_all if idx is None else [t[torch.from_numpy(idx).to(device)] for t in x_all]
                    loss, terms = step(objective, x, rel, sim)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    share = 1.0 if idx is None else len(batches[b]) / n  # type: ignore[arg-type]
                    epoch_loss += ranks.mean(float(loss.detach())) * share
                    for k, v in terms.items():
                        terms_sum[k] += ranks.mean(float(v.detach())) * share
                if not np.isfinite(epoch_loss):
                    raise InputError(f"HAFusion's training loss became {epoch_loss} at epoch {epoch + 1}; the inputs "
                                     "may hold extreme values (try input_scaling='log1p').")
                self.history.append(epoch_loss)
                self.loss_terms = terms_sum
                self.epochs_run = epoch + 1
                ranks.report(progress, (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, loss {epoch_loss:.5g}")
                if plateau(self.history, p.plateau_window, p.plateau_tol):
                    ranks.log(progress, f"hafusion: training loss reached a plateau after {epoch + 1} epochs; "
                                        "stopped.")
                    break
        self.train_seconds = time.perf_counter() - t0

    # --------------------------------------------------------------------------------------- embedding
    def _transform(self, views: Views, progress: Progress) -> np.ndarray:
        import torch

        net = self.network
        ids = [str(r) for r in views.region_ids]
        same = ids == self.vocabulary.get("region_id")
        if not same and (net.cfg.variant == "reference" or "mobility" in net.cfg.views):
            why = ("the reference configuration is transductive" if net.cfg.variant == "reference"
                   else "OD-flow inputs are tied to the training regions")
            fitted = len(self.vocabulary.get("region_id", []))
            other = "" if len(ids) != fitted else " (other ids or another order)"
            raise InputError(
                f"HAFusion embeds only the {fitted} regions it was trained on ({why}); these views hold "
                f"{len(ids)} regions{other}. Fit HAFusion on these regions, or use config='scalable' without OD flows."
            )
        inputs = apply_inputs(views, self._transforms, self.vocabulary)
        device = self.resolve_device()
        net.to(device).eval()
        n, batch = len(inputs[0]), self.params.batch_regions
        if net.cfg.variant == "reference" or n <= batch:
            batches = [np.arange(n)]
        else:  # as in training: seeded random batches, attention within a batch (linear in N, not quadratic)
            perm = np.random.default_rng(self.seed).permutation(n)
            batches = [np.sort(perm[i:i + batch]) for i in range(0, n, batch)]
        out = np.empty((n, net.cfg.dim), dtype=np.float64)
        x_all = [torch.from_numpy(x).to(device) for x in inputs]
        with torch.no_grad():
            for b, idx in enumerate(batches):
                progress.poll(b / len(batches), f"embedding regions {b * batch:,}/{n:,}")
                sel = torch.from_numpy(idx).to(device)
                emb = net.embed([x[sel] for x in x_all])
                out[idx] = emb.detach().cpu().numpy().astype(np.float64)
        progress.update(1.0, "HAFusion embeddings")
        return out

    # ---------------------------------------------------------------------------------------- storage
    def _save_weights(self, folder: Path) -> None:
        import torch

        tensors = {f"input.{tr.view}.{key}": torch.from_numpy(arr) for tr in self._transforms
                   for key, arr in tr.arrays().items()}
        inputs = [{"view": tr.view, "log1p": tr.log1p} for tr in self._transforms]
        self._write_network(folder, {"network": self.network.cfg.to_dict(), "inputs": inputs}, tensors)

    def _load_weights(self, folder: Path) -> None:
        from backend.models.hafusion.model import HAFusionConfig, HAFusionNet

        meta, state, tensors = self._read_network(folder)
        cfg = HAFusionConfig(**meta["network"])
        net = HAFusionNet(cfg)
        net.load_state_dict(state, strict=True)
        self._transforms = []
        for item in meta["inputs"]:
            tr = InputTransform(view=item["view"], log1p=bool(item["log1p"]))
            for key in ("basis_out", "basis_in", "mean", "std"):
                t = tensors.get(f"input.{tr.view}.{key}")
                if t is not None:
                    setattr(tr, key, t.numpy())
            self._transforms.append(tr)
        self._cfg, self._net = cfg, net


def _train_rank(ranks: Ranks, job: tuple[Any, ...], progress: Progress) -> HAFusionNet:
    """Build and train the network on one rank (all of it in one process); returns the trained network."""
    from backend.models._training import seeded
    from backend.models.hafusion.model import HAFusionNet, count_parameters

    model, inputs, targets, epochs, batch, names = job
    n = len(inputs[0])
    with seeded(ranks.device, model.seed):
        net = HAFusionNet(model._cfg).to(ranks.device)
        per_batch = "" if batch == n else f" of mini-batches of {batch} regions"
        if ranks.distributed:
            per_batch += f" split over {ranks.world} processes"
        ranks.log(progress,
                  f"hafusion: {model.variant} configuration, {n} regions, views {', '.join(names)}, targets "
                  f"{', '.join([*targets.relations, *targets.similarities])}, {count_parameters(net):,} parameters, "
                  f"{epochs} epochs{per_batch}, device {ranks.device}")
        model._net = net
        model._train(net, inputs, targets, epochs, batch, ranks, progress)
    return net
