"""Benchmark: CooKIE (pairwise inter-view learning of unique and shared information) against the baseline.

CooKIE: Namgung, Lin, Lee and Chiang, "Less is More: Multimodal Region Representation via Pairwise
Inter-view Learning", arXiv 2505.18178 (RegionLens' implementation: backend/models/cookie).

Accuracy, honest protocol (SPEC section 5): every embedding is trained for a fixed number of epochs without
labels, for several training seeds; each label is predicted out of fold by RidgeCV (standardised features,
penalty by leave-one-out on the training folds only). Mean and standard deviation are over all
(training seed, fold seed) pairs. Methods:

* ``baseline``: the baseline embedder (views standardised, concatenated, PCA) at the same size;
* ``cookie``: unique + shared parts; ``cookie_no_stage1``: the same without intra-view pretraining;
* ``cookie_shared`` / ``cookie_unique``: the shared parts / the unique parts of the ``cookie`` models;
* ``cookie_t0.5``: a sensitivity check with InfoNCE temperature 0.5 instead of the default 0.1 (not a
  selected configuration: picking it from these scores would be selection on the test folds).

Data:

* without ``--data``: the bundled San Francisco sample city (579 block groups; modalities POI counts, POI
  texts through all-MiniLM-L6-v2, Landsat chips through EfficientNet-Lite0 at the pipeline's 64 px chip
  size), population and the crime labels of the demo as log1p densities per km2; 5-fold shuffled and
  spatially blocked CV, 3 fold seeds. Keys ``<method>`` (shuffled) and ``<method>@spatial``.
* with ``--data DIR``: a folder in the format of ``../shared/data/hafusion_nyc`` (POI = ``poi_dist``,
  land use = ``landUse_dist``, mobility = ``mob_dist``; labels ``check_counts``, ``crime_counts``,
  ``serviceCall_counts`` as raw counts, tasks checkIn, crime, serviceCall as in bench/hafusion.py);
  10-fold shuffled CV over 5 fold seeds. ``<method>@ridge_alpha1`` repeats the scores with Ridge(alpha=1) on
  the raw embedding, negative predictions clipped to 0 (the HAFusion public code's regressor).

Cost: parameters and FLOPs of one forward pass of the trained network over all regions
(torch.utils.flop_counter, a multiply-add counts 2), training time, beside HAFusion's network on the same
views when HAFusion is registered (ReFound when registered); the frozen EfficientNet-Lite0 per chip
(computed once and cached). Growth: 2 to 5 modalities on synthetic views (500 regions): loss terms
(M + 3 M(M-1)/2, against 2^M - M - 1 subsets), parameters, FLOPs and seconds per epoch.

``--json OUT.json`` writes method -> task -> {mae, rmse, r2} -> [mean, std]; the cost tables go to
``OUT.cost.json`` and the per-run details to ``OUT.runs.json``. Usage (repository root):

    .venv/backend/bin/python bench/cookie.py --json out/bench_cookie_sf.json
    .venv/backend/bin/python bench/cookie.py --data ../shared/data/hafusion_nyc --json out/bench_cookie_nyc.json
    .venv/backend/bin/python bench/cookie.py --quick --json out/bench_cookie_quick.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.models import EMBEDDERS, get_embedder  # noqa: E402
from backend.models.cookie import CooKIEEmbedder  # noqa: E402
from backend.models.cookie.model import count_flops, count_parameters, objective_counts  # noqa: E402
from backend.views._base import Views  # noqa: E402
from bench._scoring import cell, finish, ridge1_scores, summary  # noqa: E402

GROWTH_ORDER = ("poi", "image", "landuse", "mobility", "poi_text")
METRICS = ("mae", "rmse", "r2")


# ---------------------------------------------------------------------------------------------- data
class Task:
    """One label: model-space target values and the view rows they belong to."""

    def __init__(self, y: np.ndarray, rows: np.ndarray) -> None:
        self.y, self.rows = y, rows


def load_sf(needs: frozenset[str] = frozenset({"chips"})) -> tuple[Views, dict[str, Task], np.ndarray]:
    """The sample city's views (chips at the pipeline's size; ``needs`` as in build_views) and the demo's labels
    (log1p densities)."""
    from backend.demo import demo_config
    from backend.io.city import read_city
    from backend.tasks.targets import make_target
    from backend.views.build import build_views

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(Path(tmp) / "run")
    city = read_city(cfg)
    views = build_views(city, needs=needs, chip_size=cfg.chip_size, report=[])
    tasks = {}
    for spec in cfg.labels:
        target = make_target(city.labels[spec.name].reindex(views.region_ids), spec, views.areas_km2, None)
        tasks[spec.name] = Task(target.y.to_numpy(), views.region_ids.get_indexer(target.y.index))
    return views, tasks, np.asarray(views.centroids)


def load_folder(folder: Path) -> tuple[Views, dict[str, Task]]:
    """Views and labels of a folder in the hafusion_nyc format (absent files are skipped; as the HAFusion bench)."""
    from bench.hafusion import load_city

    views, _, labels = load_city(folder)
    return views, {t: Task(y, np.arange(len(y))) for t, y in labels.items()}


# ------------------------------------------------------------------------------------------ scoring
def score(x: np.ndarray, tasks: dict[str, Task], coords: np.ndarray | None, folds: int, fold_seeds: list[int],
          ridge1: bool) -> dict[str, dict[str, list[dict[str, float]]]]:
    """protocol -> task -> per-fold-seed metrics."""
    from backend.tasks.prediction import evaluate_label

    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name, task in tasks.items():
        xs = x[task.rows]
        res = evaluate_label(xs, task.y, None if coords is None else coords[task.rows], models=("ridge",),
                             folds=folds, repeats=len(fold_seeds), spatial=coords is not None, seed=fold_seeds[0])
        for protocol, rows in res.per_repeat.groupby("protocol"):
            out.setdefault(str(protocol), {})[name] = rows[list(METRICS)].to_dict("records")
        if ridge1:
            out.setdefault("ridge_alpha1", {})[name] = ridge1_scores(xs, task.y, folds, fold_seeds)
    return out


def _key(method: str, protocol: str) -> str:
    return method if protocol == "shuffled" else f"{method}@{protocol}"


def run_accuracy(args: argparse.Namespace, views: Views, tasks: dict[str, Task],
                 coords: np.ndarray | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, CooKIEEmbedder]]:
    seeds = [0] if args.quick else list(range(args.seeds))
    fold_seeds = [0] if args.quick else list(range(args.fold_seeds))
    ridge1 = coords is None
    pooled: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
    runs: dict[str, Any] = {"protocol": {"training_seeds": seeds, "fold_seeds": fold_seeds, "folds": args.folds,
                                         "threads": args.threads, "dim": args.dim}}

    def add(method: str, scores: dict[str, dict[str, list[dict[str, float]]]]) -> None:
        for protocol, per_task in scores.items():
            key = _key(method, protocol)
            for task, recs in per_task.items():
                pooled.setdefault(key, {}).setdefault(task, []).extend(recs)

    t0 = time.perf_counter()
    base = get_embedder("baseline", dim=args.dim).fit_transform(views).to_numpy()
    runs["baseline"] = {"seconds": round(time.perf_counter() - t0, 2), "dim": base.shape[1]}
    add("baseline", score(base, tasks, coords, args.folds, fold_seeds, ridge1))
    print(f"  baseline: {base.shape[1]} columns", flush=True)

    kept: dict[str, CooKIEEmbedder] = {}
    variants = {"cookie": {}, "cookie_no_stage1": {"stage1_epochs": 0}, "cookie_t0.5": {"temperature": 0.5}}
    if args.quick:
        epochs = {"stage1_epochs": 20, "stage2_epochs": 40}
    else:
        epochs = {}
    for variant, extra in variants.items():
        runs[variant] = []
        for seed in seeds:
            model = CooKIEEmbedder(dim=args.dim, seed=seed, device=args.device, **{**epochs, **extra})
            t0 = time.perf_counter()
            model.fit(views)
            seconds = time.perf_counter() - t0
            parts = {variant: model.transform(views).to_numpy()}
            if variant == "cookie":
                parts["cookie_shared"] = model.transform_part(views, "shared").to_numpy()
                parts["cookie_unique"] = model.transform_part(views, "unique").to_numpy()
                kept.setdefault("cookie", model)
            r2 = {}
            for name, x in parts.items():
                s = score(x, tasks, coords, args.folds, fold_seeds, ridge1)
                add(name, s)
                r2[name] = {t: round(float(np.mean([r["r2"] for r in recs])), 3) for t, recs in s["shuffled"].items()}
            run = {"seed": seed, "seconds": round(seconds, 1), "train_seconds": round(model.train_seconds, 1),
                   "stage_seconds": {k: round(v, 2) for k, v in model.stage_seconds.items()},
                   "epochs": model.epochs_run, "final_terms": model.loss_terms, "modalities": model.meta["sources"],
                   "columns": {k: int(v.shape[1]) for k, v in parts.items()}, "r2_shuffled": r2,
                   "notes": model.feature_notes}
            runs[variant].append(run)
            print(f"  {variant} seed {seed}: {seconds:.1f} s, R2 {r2}", flush=True)
    results = {key: {task: summary(recs) for task, recs in per_task.items()} for key, per_task in pooled.items()}
    return results, runs, kept


# --------------------------------------------------------------------------------------------- cost
def cookie_cost(model: CooKIEEmbedder, views: Views) -> dict[str, Any]:
    import torch

    xs = {m: torch.from_numpy(x) for m, x in model.model_inputs(views).items() if x is not None}
    flops = count_flops(model.network, xs)
    p = model.params
    epochs = model.epochs_run
    return {"method": "cookie", "modalities": model.modalities, "pairs": len(model.network.cfg.pairs),
            "loss_terms": objective_counts(len(model.modalities))["total"],
            "params": count_parameters(model.network), "flops_forward": flops, "flops_per_region": flops / len(views),
            "train_seconds": round(model.train_seconds, 2),
            "seconds_per_epoch": round(sum(model.stage_seconds.values()) / max(1, epochs["stage1"] + epochs["stage2"]),
                                       4),
            "epochs": f"{p.stage1_epochs} + {p.stage2_epochs}"}


def hafusion_cost(views: Views, device: str) -> dict[str, Any] | None:
    """Params and FLOPs of HAFusion's network on the same views (when registered); 3 epochs timed."""
    if "hafusion" not in EMBEDDERS:
        return None
    import torch

    try:
        from backend.models.hafusion.data import apply_inputs

        model: Any = get_embedder("hafusion", seed=0, device=device, epochs=3)
        t0 = time.perf_counter()
        model.fit(views)
        seconds = time.perf_counter() - t0
        x = [torch.from_numpy(a) for a in apply_inputs(views, model._transforms, model.vocabulary)]
        net = model.network
        net.eval()
        flops = count_flops(net, x)
        return {"method": f"hafusion ({model.variant})", "params": count_parameters(net), "flops_forward": flops,
                "flops_per_region": flops / len(views), "seconds_per_epoch": round(seconds / 3, 4),
                "epochs": "2000 (reference) / 300 (scalable)"}
    except Exception as exc:  # noqa: BLE001 (another method's API may change: report, do not fail the bench)
        return {"method": "hafusion", "error": f"{type(exc).__name__}: {exc}"}


def efficientnet_cost() -> dict[str, Any]:
    import torch

    from backend.encoders.registry import get_encoder

    enc = get_encoder("efficientnet-lite0")
    params = sum(p.numel() for p in enc.parameters())
    flops = count_flops(enc.extract_features, torch.zeros(1, 3, 224, 224))
    return {"method": "efficientnet-lite0 (frozen, once per chip, cached)", "params": params,
            "flops_per_region": flops}


def growth(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Loss terms, parameters, FLOPs and epoch time for 2 to 5 modalities on synthetic views."""
    import torch

    from backend.models.cookie.synthetic import synthetic_views

    n = 200 if args.quick else 500
    epochs = 3 if args.quick else 10
    out = []
    for m in range(2, 6):
        views, _ = synthetic_views(n, GROWTH_ORDER[:m], seed=0)
        model = CooKIEEmbedder(dim=args.dim, seed=0, device=args.device, stage1_epochs=epochs, stage2_epochs=epochs)
        model.fit(views)
        xs = {k: torch.from_numpy(x) for k, x in model.model_inputs(views).items() if x is not None}
        counts = objective_counts(m)
        out.append({"modalities": m, "added": GROWTH_ORDER[m - 1], "pairs": counts["inter"],
                    "loss_terms": counts["total"], "subsets": counts["subsets"],
                    "params": count_parameters(model.network), "flops_forward": count_flops(model.network, xs),
                    "s_per_epoch_stage1": round(model.stage_seconds["stage1"] / epochs, 4),
                    "s_per_epoch_stage2": round(model.stage_seconds["stage2"] / epochs, 4), "regions": n})
        print(f"  growth M={m}: {out[-1]}", flush=True)
    return out


# -------------------------------------------------------------------------------------------- print
def print_results(results: dict[str, Any], tasks: list[str], metric_sets: list[tuple[str, int]]) -> None:
    for metric, digits in metric_sets:
        print(f"\n{metric.upper()} (mean ± std over training seeds x fold seeds)\n")
        print("| method | " + " | ".join(tasks) + " |")
        print("|---|" + "---|" * len(tasks))
        for key, per_task in results.items():
            print(f"| {key} | " + " | ".join(cell(per_task[t][metric], digits) if t in per_task else "-"
                                             for t in tasks) + " |")


def print_cost(cost: dict[str, Any]) -> None:
    print("\n| network | views | params | GFLOPs / forward (all regions) | MFLOPs / region | s / epoch |")
    print("|---|---|---|---|---|---|")
    for dataset, rows in cost["datasets"].items():
        for r in rows:
            if r is None or "error" in r:
                print(f"| {r and r['method']} | {dataset} | {r and r.get('error', 'n/a')} | | | |")
                continue
            fwd = r.get("flops_forward")
            print(f"| {r['method']} | {dataset} | {r['params']:,} | {'' if fwd is None else f'{fwd / 1e9:.4f}'} | "
                  f"{r['flops_per_region'] / 1e6:.3f} | {r.get('seconds_per_epoch', '')} |")
    print("\n| modalities (added) | pairwise objectives M(M-1)/2 | subsets of >= 2 modalities 2^M-M-1 | "
          "all loss terms M + 3 M(M-1)/2 | params | MFLOPs / forward | s / epoch stage 1 | s / epoch stage 2 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in cost["growth"]:
        print(f"| {r['modalities']} (+{r['added']}) | {r['pairs']} | {r['subsets']} | {r['loss_terms']} | "
              f"{r['params']:,} | {r['flops_forward'] / 1e6:.1f} | {r['s_per_epoch_stage1']} | "
              f"{r['s_per_epoch_stage2']} |")
    for m in (6, 8, 10):
        c = objective_counts(m)
        print(f"| {m} (counts only) | {c['inter']} | {c['subsets']} | {c['total']} | | | | |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder in the hafusion_nyc format (default: the sample city)")
    parser.add_argument("--json", type=Path, help="write method -> task -> {mae, rmse, r2} -> [mean, std] here")
    parser.add_argument("--quick", action="store_true", help="one training seed, one fold seed, short training")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds")
    parser.add_argument("--fold-seeds", type=int, default=0, help="fold seeds (0: 3 for the city, 5 with --data)")
    parser.add_argument("--folds", type=int, default=0, help="folds (0: 5 for the city, 10 with --data)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-growth", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    args.folds = args.folds or (10 if args.data else 5)
    args.fold_seeds = args.fold_seeds or (5 if args.data else 3)
    t_all = time.perf_counter()
    if args.data:
        views, tasks = load_folder(args.data)
        coords = None
        dataset = args.data.name
    else:
        views, tasks, coords = load_sf()
        dataset = "sf"
    print(f"{dataset}: {len(views)} regions, views {sorted(views.available())}, tasks {list(tasks)}", flush=True)
    results, runs, kept = run_accuracy(args, views, tasks, coords)

    cost: dict[str, Any] = {"datasets": {dataset: [cookie_cost(kept["cookie"], views)]}, "growth": []}
    haf = hafusion_cost(views, args.device)
    if haf is not None:
        cost["datasets"][dataset].append(haf)
    if "refound" in EMBEDDERS:
        cost["refound"] = "registered; not measured by this script"
    if kept["cookie"].meta["sources"].get("image") == "chips":
        cost["datasets"][dataset].append(efficientnet_cost())
    if not args.skip_growth:
        cost["growth"] = growth(args)
    cost["total_seconds"] = round(time.perf_counter() - t_all, 1)

    task_names = list(tasks)
    print(f"\n{dataset}: {len(views)} regions; modalities {kept['cookie'].meta['sources']}; dim {args.dim}; "
          f"{args.folds}-fold CV; device {args.device}, {args.threads} torch thread(s)")
    print_results(results, task_names, [("r2", 3)] if coords is not None else [("mae", 1), ("rmse", 1), ("r2", 3)])
    print_cost(cost)
    return finish(args.json, results, runs, f"{cost['total_seconds']} s", cost=cost)


if __name__ == "__main__":
    raise SystemExit(main())
