"""Benchmark: HAFusion on the Manhattan benchmark (honest protocol) and its speed and memory by city size.

HAFusion: Sun et al., "Urban Region Representation Learning with Attentive Fusion", ICDE 2024
(arXiv 2312.04606). The data folder holds the benchmark's matrices in the format of
``../shared/data/hafusion_nyc`` (see its README): inputs ``poi_dist``, ``landUse_dist``, ``mob_dist``;
targets ``mob-adj``, ``poi_simi``, ``landUse_simi``; labels ``check_counts``, ``crime_counts``,
``serviceCall_counts`` (absent files are skipped, so any city in that format works).

Accuracy (honest protocol, SPEC section 5): every embedding is trained for a fixed number of epochs (or
stopped by a training-loss plateau, never by a score) without labels; then each label is predicted out of
fold from the embedding by

* RidgeCV: standardised features, ridge penalty by leave-one-out on the training folds only (the backend's
  ``evaluate_label``), and
* Ridge(alpha=1) on the raw embedding with negative predictions clipped to 0, the public code's regressor
  (the data README's raw-feature reference uses it),

under 10-fold shuffled cross-validation repeated over 5 fold seeds, for every training seed. Mean and standard
deviation are over all (training seed, fold seed) pairs. Methods: the baseline embedder on the same views,
HAFusion's reference and scalable configurations, and principled variants (input scaling, plateau stopping).

Speed: seconds per training epoch and peak memory (RSS of a fresh process, data included) for N = 180,
1,000, 5,000 and 10,000 regions (synthetic views of realistic density: 26 POI categories, 11 land-use classes,
a dense gravity-model OD matrix, grid adjacency) for both configurations; the reference configuration's size
grows with N^2, so where it cannot fit in memory its parameter count and the memory of weights, gradients
and Adam state are reported instead. Per-step times (forward, loss, backward, Adam) of the fused reference
network and of a literal unfused implementation (``backend.models.hafusion.naive``) on NYC- and
Chicago-sized inputs, beside the public code's published timings.

Usage (from the repository root):

    .venv/backend/bin/python bench/hafusion.py --json out/bench_hafusion.json   # all, about 90 min on 2 cores
    .venv/backend/bin/python bench/hafusion.py --quick --json out/bench_hafusion_quick.json
    .venv/backend/bin/python bench/hafusion.py --skip-speed --methods baseline hafusion_reference
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.models import BaselineEmbedder, Embedder, HAFusionEmbedder  # noqa: E402
from backend.views._base import Views  # noqa: E402
from bench._scoring import cell, finish, ridge1_scores, summary  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hafusion_nyc"
TASKS = {"checkIn": "check_counts", "crime": "crime_counts", "serviceCall": "serviceCall_counts"}
INPUTS = {"poi_counts": "poi_dist", "landuse": "landUse_dist"}
TARGETS = {"mobility": "mob-adj", "poi_counts": "poi_simi", "landuse": "landUse_simi"}
#: Published figures (HAFusion paper, main table; the reference code selects epochs by test R2).
PUBLISHED = {
    "published_hafusion": {"checkIn": (202.8, 322.8, 0.844), "crime": (56.1, 76.1, 0.734),
                           "serviceCall": (1273.0, 1951.0, 0.493)},
    "published_hrep": {"checkIn": (None, None, 0.703), "crime": (None, None, 0.680),
                       "serviceCall": (None, None, 0.398)},
}
#: The public code's measured training step on an idle 2-core machine of this kind (torch 2.13).
PUBLIC_STEP = {"nyc": (320.0, 1.24), "chicago": (54.0, 0.55)}
SPEED_SIZES = (180, 1000, 5000, 10000)
SPEED_EPOCHS = {180: 10, 1000: 3, 5000: 3, 10000: 2}
REFERENCE_MAX_FIT = 1000  # the reference configuration is run up to this N; above, estimated

#: Methods: name -> (description, factory(seed, quick) -> embedder).
MethodFactory = Callable[[int, bool], Embedder]


def _hafusion(**params: Any) -> MethodFactory:
    def make(seed: int, quick: bool) -> Embedder:
        extra = {"epochs": 30} if quick and "epochs" not in params else {}
        return HAFusionEmbedder(dim=144, seed=seed, device="cpu", **{**params, **extra})

    return make


METHODS: dict[str, tuple[str, MethodFactory]] = {
    "baseline": ("baseline embedder (log1p counts, view-balanced PCA, d=32)",
                 lambda seed, quick: BaselineEmbedder(dim=32, seed=seed)),
    "hafusion_reference": ("HAFusion reference (published architecture and training, 2000 epochs)",
                           _hafusion(config="reference")),
    "hafusion_scalable": ("HAFusion scalable (width 128, log1p inputs, 300 epochs)", _hafusion(config="scalable")),
    "hafusion_reference_log1p_mobility": ("reference + log1p of the OD input rows",
                                          _hafusion(config="reference", input_scaling="log1p_mobility")),
    "hafusion_reference_log1p": ("reference + log1p and standardised inputs",
                                 _hafusion(config="reference", input_scaling="log1p")),
    "hafusion_reference_mean_loss": ("reference with every loss term per pair (OD term divided by its mass)",
                                     _hafusion(config="reference", loss_scaling="mean")),
    "hafusion_reference_log1p_mobility_mean_loss": ("reference + log1p OD input rows + per-pair loss",
                                                    _hafusion(config="reference", input_scaling="log1p_mobility",
                                                              loss_scaling="mean")),
    "hafusion_reference_weight_decay": ("reference with 10x weight decay (5e-3)",
                                        _hafusion(config="reference", weight_decay=5e-3)),
    "hafusion_reference_plateau": ("reference, stopped when the training loss improves < 0.1 % per 100 epochs",
                                   _hafusion(config="reference", plateau_window=100, plateau_tol=1e-3)),
}


# ---------------------------------------------------------------------------------------------- data
def load_city(folder: Path) -> tuple[Views, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Views, target matrices and labels of a benchmark folder (absent files are skipped)."""
    def get(name: str) -> np.ndarray | None:
        path = folder / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None

    arrays = {view: get(name) for view, name in INPUTS.items()}
    mob = get("mob_dist")
    n = next(len(a) for a in [*arrays.values(), mob] if a is not None)
    ids = pd.Index([str(i) for i in range(n)], name="region_id")
    tables = {view: pd.DataFrame(a.astype(float), index=ids, columns=[f"{view}_{j}" for j in range(a.shape[1])])
              for view, a in arrays.items() if a is not None}
    views = Views(region_ids=ids, tables=tables, mobility=None if mob is None else mob.astype(float))
    targets = {view: t for view, name in TARGETS.items() if (t := get(name)) is not None}
    labels = {task: y.astype(float) for task, name in TASKS.items() if (y := get(name)) is not None}
    return views, targets, labels


def synthetic_views(n: int, seed: int = 0, landuse_dim: int = 11, mobility: bool = True) -> Views:
    """A synthetic city of ``n`` grid cells with NYC-like densities (see the module docstring)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(n))
    xy = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(float) * 500.0
    mass = rng.lognormal(0.0, 1.0, n)
    kind = rng.integers(0, 8, n)
    profiles = rng.dirichlet(np.full(26, 0.3), 8)
    ids = pd.Index([f"c{i}" for i in range(n)], name="region_id")
    poi = rng.poisson(5.0 * mass[:, None] * profiles[kind] * 26 / 4)
    lu = rng.poisson(20.0 * rng.dirichlet(np.ones(landuse_dim), n))
    tables = {"poi_counts": pd.DataFrame(poi.astype(float), index=ids, columns=[f"p{j}" for j in range(26)]),
              "landuse": pd.DataFrame(lu.astype(float), index=ids, columns=[f"l{j}" for j in range(landuse_dim)])}
    mob = None
    if mobility:  # gravity model: dense, heavy-tailed, like NYC taxi flows (88 % of pairs non-zero)
        mob = np.empty((n, n))
        scale = 300.0 / float(np.mean(mass)) ** 2
        for lo in range(0, n, 1000):
            d = np.linalg.norm(xy[lo:lo + 1000, None, :] - xy[None, :, :], axis=-1)
            lam = scale * mass[lo:lo + 1000, None] * mass[None, :] * np.exp(-d / 3000.0)
            mob[lo:lo + 1000] = rng.poisson(lam)
    rows, cols = [], []
    for i in range(n):
        for j in (i + 1, i + side):
            if j < n and (j != i + 1 or (i + 1) % side):
                rows += [i, j]
                cols += [j, i]
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return Views(region_ids=ids, tables=tables, mobility=mob, adjacency=adj, centroids=xy)


# ------------------------------------------------------------------------------------------ accuracy
def score_embedding(x: np.ndarray, labels: dict[str, np.ndarray], folds: int,
                    fold_seeds: list[int]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per task: the per-fold-seed metrics of both regressors (``ridgecv`` and ``ridge1``)."""
    from backend.tasks.prediction import evaluate_label

    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for task, y in labels.items():
        res = evaluate_label(x, y, None, models=("ridge",), folds=folds, repeats=len(fold_seeds), spatial=False,
                             seed=fold_seeds[0])
        rows = res.per_repeat
        out[task] = {"ridgecv": rows[["mae", "rmse", "r2"]].to_dict("records"),
                     "ridge1": ridge1_scores(x, y, folds, fold_seeds)}
    return out


def train_one(name: str, seed: int, quick: bool, data: str, threads: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one method with one seed (in a worker process); returns the embedding and run details."""
    import torch

    torch.set_num_threads(threads)
    views, targets, _ = load_city(Path(data))
    model = METHODS[name][1](seed, quick)
    if isinstance(model, HAFusionEmbedder):
        model.set_targets(**targets)
    t0 = time.perf_counter()
    emb = model.fit_transform(views).to_numpy()
    run = {"seed": seed, "seconds": round(time.perf_counter() - t0, 1), "epochs": getattr(model, "epochs_run", 0),
           "final_loss": model.history[-1] if model.history else None}
    return emb, run


def run_accuracy(args: argparse.Namespace, views: Views, labels: dict[str, np.ndarray]) -> tuple[dict[str, Any],
                                                                                                  dict[str, Any]]:
    """Train every method for every seed (``--jobs`` at a time) and score it; returns (results, run info)."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    seeds = [0] if args.quick else list(range(args.seeds))
    fold_seeds = [0] if args.quick else list(range(args.fold_seeds))
    results: dict[str, Any] = {}
    info: dict[str, Any] = {}
    raw = np.nan_to_num(np.hstack([t.to_numpy() for t in views.tables.values()]))
    per = score_embedding(raw, labels, args.folds, fold_seeds)
    results["raw_views"] = {t: summary(per[t]["ridgecv"]) for t in per}
    results["raw_views@ridge_alpha1"] = {t: summary(per[t]["ridge1"]) for t in per}
    jobs = [(name, seed) for name in args.methods for seed in seeds]
    done: dict[tuple[str, int], tuple[np.ndarray, dict[str, Any]]] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_one, name, seed, args.quick, str(args.data), args.job_threads): (name, seed)
                   for name, seed in jobs}
        for fut in as_completed(futures):
            key = futures[fut]
            done[key] = fut.result()
            print(f"  trained {key[0]} seed {key[1]}: {done[key][1]}", flush=True)
    for name in args.methods:
        pooled: dict[str, dict[str, list[dict[str, float]]]] = {t: {"ridgecv": [], "ridge1": []} for t in labels}
        runs = []
        for seed in seeds:
            emb, run = done[(name, seed)]
            scores = score_embedding(emb, labels, args.folds, fold_seeds)
            for task in labels:
                for reg in ("ridgecv", "ridge1"):
                    pooled[task][reg].extend(scores[task][reg])
            run["r2"] = {t: round(float(np.mean([r["r2"] for r in scores[t]["ridgecv"]])), 4) for t in labels}
            runs.append(run)
        results[name] = {t: summary(pooled[t]["ridgecv"]) for t in labels}
        results[f"{name}@ridge_alpha1"] = {t: summary(pooled[t]["ridge1"]) for t in labels}
        info[name] = {"description": METHODS[name][0], "runs": runs}
    for name, table in PUBLISHED.items():
        results[name] = {t: {k: [v, None] for k, v in zip(("mae", "rmse", "r2"), vals, strict=True)}
                         for t, vals in table.items() if t in labels}
    info["protocol"] = {"training_seeds": seeds, "fold_seeds": fold_seeds, "folds": args.folds,
                        "shuffled": True, "threads_per_job": args.job_threads, "jobs": args.jobs}
    return results, info


# --------------------------------------------------------------------------------------------- speed
def _child(args: list[str], threads: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args, "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {last}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_avg_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine during the measurement
    return out


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2


def speed_one(config: str, n: int, epochs: int, device: str) -> dict[str, Any]:
    """Child process: train ``epochs`` epochs on a synthetic city of ``n`` regions; time each epoch."""
    from backend.models.hafusion.model import count_parameters
    from backend.progress import Progress

    views = synthetic_views(n)
    stamps: list[float] = []
    start: list[float] = []
    progress = Progress(callback=lambda stage, frac, msg: stamps.append(time.perf_counter()),
                        log_callback=lambda msg: start.append(time.perf_counter()))
    model = HAFusionEmbedder(dim=144, seed=0, device=device, config=config, epochs=epochs)
    model.fit(views, progress)
    ticks = [start[0], *stamps]
    per_epoch = np.diff(ticks)
    return {"config": config, "n": n, "epochs": epochs, "params": count_parameters(model.network),
            "sec_per_epoch": float(np.median(per_epoch[1:] if len(per_epoch) > 1 else per_epoch)),
            "first_epoch_s": float(per_epoch[0]), "peak_rss_gb": round(_peak_rss_gb(), 2),
            "batch_regions": min(n, model.params.batch_regions) if config == "scalable" else n}


def reference_estimate(n: int) -> dict[str, Any]:
    """Parameter count (built on the meta device) and memory of weights + gradients + Adam state."""
    import torch

    from backend.models.hafusion.model import HAFusionNet, count_parameters

    emb = HAFusionEmbedder(dim=144)
    cfg = emb.make_config("reference", ["poi_counts", "landuse", "mobility"], [26, 11, n], n, ["mobility"],
                          ["poi_counts", "landuse"])
    with torch.device("meta"):
        params = count_parameters(HAFusionNet(cfg))
    lift = 3 * cfg.intra_blocks * n * n * cfg.lift_channels * 4 / 1024**3  # kept softmax of the edge lift
    return {"config": "reference", "n": n, "params": params, "estimated": True,
            "state_gb": round(params * 16 / 1024**3, 1), "lift_activations_gb": round(lift, 1)}


def step_one(impl: str, city: str, steps: int, data: Path) -> dict[str, Any]:
    """Child process: median time of a full training step (forward, loss, backward, Adam)."""
    import torch

    from backend.models.hafusion.data import apply_inputs, build_targets, fit_inputs
    from backend.models.hafusion.losses import total_loss
    from backend.models.hafusion.model import HAFusionNet, count_parameters
    from backend.models.hafusion.naive import naive_from_fused

    if city == "nyc" and (data / "mob_dist.npy").is_file():
        views, overrides, _ = load_city(data)
        preset = "nyc"
    else:
        views, overrides = (synthetic_views(180), {}) if city == "nyc" else (synthetic_views(77, landuse_dim=12), {})
        preset = city
    names = ["poi_counts", "landuse", "mobility"]
    emb = HAFusionEmbedder(dim=144, preset=preset, config="reference")
    transforms = fit_inputs(views, names, "reference", "raw")
    vocab = {k: [str(c) for c in views.tables[k].columns] for k in views.tables}
    inputs = [torch.from_numpy(x) for x in apply_inputs(views, transforms, vocab)]
    targets = build_targets(views, names, "never", overrides)
    rel = {k: torch.from_numpy(t.block()) for k, t in targets.relations.items()}
    sim = {k: torch.from_numpy(np.ascontiguousarray(t.block())) for k, t in targets.similarities.items()}
    torch.manual_seed(0)
    cfg = emb.make_config("reference", names, [x.shape[1] for x in inputs], len(views), list(rel), list(sim))
    net: torch.nn.Module = HAFusionNet(cfg)
    if impl == "naive":
        net = naive_from_fused(net)  # type: ignore[arg-type]
        opt = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=5e-4)  # torch defaults, as public code
    else:
        opt = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=5e-4, fused=True)
    net.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _, dec = net(inputs)
        loss, _ = total_loss(dec, rel, sim)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times_ms = np.array(times[3:]) * 1000.0
    return {"impl": impl, "city": city, "n": len(views), "params": count_parameters(net),
            "median_ms": float(np.median(times_ms)), "min_ms": float(times_ms.min()),
            "peak_rss_gb": round(_peak_rss_gb(), 2)}


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Per-step comparison and the epoch-time table (each measurement in a fresh process)."""
    out: dict[str, Any] = {"threads": args.threads, "device": args.device, "steps": [], "epochs": []}
    rounds = 1 if args.quick else 3
    for city in ("nyc", "chicago"):
        for r in range(rounds):  # interleaved, so both implementations see the same machine load
            for impl in ("fused", "naive"):
                res = _child(["--step-one", impl, city, "--data", str(args.data),
                              "--steps", "8" if args.quick else "25"], args.threads, 900)
                res.update(round=r, impl=impl, city=city)
                out["steps"].append(res)
                print(f"  step {city} {impl}: {res}", flush=True)
    sizes = (180, 1000) if args.quick else SPEED_SIZES
    for n in sizes:
        for config in ("reference", "scalable"):
            if config == "reference" and n > REFERENCE_MAX_FIT:
                res = reference_estimate(n)
            else:
                epochs = 2 if args.quick else SPEED_EPOCHS[n]
                res = _child(["--speed-one", config, str(n), "--epochs", str(epochs), "--device", args.device],
                             args.threads, 3600)
                res.setdefault("config", config)
                res.setdefault("n", n)
            out["epochs"].append(res)
            print(f"  epoch {config} N={n}: {res}", flush=True)
    return out


# ------------------------------------------------------------------------------------------- printing
def print_accuracy(results: dict[str, Any], tasks: list[str]) -> None:
    """Markdown tables: one per regressor, rows = methods, columns = task metrics."""
    for reg, suffix in (("RidgeCV (standardised, inner LOO penalty)", ""),
                        ("Ridge alpha=1, negative predictions clipped (public code's regressor)", "@ridge_alpha1")):
        print(f"\n{reg}; 10-fold shuffled CV; mean ± std over training seeds x fold seeds\n")
        head = "| method | " + " | ".join(f"{t} MAE | {t} RMSE | {t} R2" for t in tasks) + " |"
        print(head)
        print("|---" * (1 + 3 * len(tasks)) + "|")
        for name, per in results.items():
            if name.endswith("@ridge_alpha1") != bool(suffix) and not name.startswith("published"):
                continue
            if name.startswith("published") and suffix:
                continue
            cells = []
            for t in tasks:
                m = per.get(t, {"mae": [None, None], "rmse": [None, None], "r2": [None, None]})
                cells += [cell(m["mae"], 1), cell(m["rmse"], 1), cell(m["r2"], 3)]
            print(f"| {name.removesuffix(suffix)} | " + " | ".join(cells) + " |")


def print_speed(speed: dict[str, Any]) -> None:
    """Markdown tables of the per-step comparison and of the epoch times."""
    loads = [s["load_avg_1min"] for s in speed["steps"] + speed["epochs"] if "load_avg_1min" in s]
    if loads:
        print(f"\n(1-minute load average of the machine during the measurements: {min(loads):.1f} to {max(loads):.1f})")
    print(f"\nTraining step (forward, loss, backward, Adam), {speed['threads']} threads, median ms over steps "
          "(best round); peak RSS of the process\n")
    print("| inputs | regions | parameters | RegionLens fused | literal unfused (same machine, same run) | "
          "public code (published) | speed-up vs public |")
    print("|---|---|---|---|---|---|---|")
    for city in ("nyc", "chicago"):
        rows = [s for s in speed["steps"] if s.get("city") == city and "median_ms" in s]
        if not rows:
            continue
        fused = min((s for s in rows if s["impl"] == "fused"), key=lambda s: s["median_ms"])
        naive = [s for s in rows if s["impl"] == "naive"]
        nv = min(naive, key=lambda s: s["median_ms"]) if naive else None
        pub_ms, pub_gb = PUBLIC_STEP[city]
        print(f"| {city} | {fused['n']} | {fused['params']:,} | {fused['median_ms']:.0f} ms, "
              f"{fused['peak_rss_gb']:.2f} GB | "
              + (f"{nv['median_ms']:.0f} ms, {nv['peak_rss_gb']:.2f} GB" if nv else "–")
              + f" | {pub_ms:.0f} ms, {pub_gb:.2f} GB | {pub_ms / fused['median_ms']:.1f}x |")
    print(f"\nSeconds per epoch and peak RSS, device {speed['device']}, {speed['threads']} threads\n")
    print("| regions | reference: parameters | reference: s/epoch | reference: peak RSS | scalable: parameters "
          "| scalable: s/epoch (mini-batch) | scalable: peak RSS |")
    print("|---|---|---|---|---|---|---|")
    by = {(e.get("config"), e.get("n")): e for e in speed["epochs"]}
    for n in sorted({e.get("n") for e in speed["epochs"]}):
        ref, sc = by.get(("reference", n), {}), by.get(("scalable", n), {})
        if ref.get("estimated"):
            ref_cells = [f"{ref['params'] / 1e6:,.0f} M", "out of memory",
                         f"> {ref['state_gb']:,.0f} GB (weights + grads + Adam)"]
        elif "sec_per_epoch" in ref:
            ref_cells = [f"{ref['params'] / 1e6:.1f} M", f"{ref['sec_per_epoch']:.2f}", f"{ref['peak_rss_gb']:.2f} GB"]
        else:
            ref_cells = ["–", ref.get("error", "–"), "–"]
        if "sec_per_epoch" in sc:
            sc_cells = [f"{sc['params'] / 1e6:.2f} M", f"{sc['sec_per_epoch']:.2f} (batches of {sc['batch_regions']})",
                        f"{sc['peak_rss_gb']:.2f} GB"]
        else:
            sc_cells = ["–", sc.get("error", "–"), "–"]
        print(f"| {n:,} | " + " | ".join(ref_cells + sc_cells) + " |")


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="benchmark folder (hafusion_nyc format)")
    parser.add_argument("--json", type=Path, help="write method -> task -> {mae, rmse, r2} -> [mean, std] here "
                        "(speed and run details go to the same name with .speed.json / .runs.json)")
    parser.add_argument("--quick", action="store_true", help="1 training seed, 1 fold seed, short training")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds")
    parser.add_argument("--fold-seeds", type=int, default=5, help="fold seeds of the 10-fold CV")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the speed measurements")
    parser.add_argument("--jobs", type=int, default=2, help="accuracy: training runs in parallel processes")
    parser.add_argument("--job-threads", type=int, default=1, help="accuracy: torch threads per training run")
    parser.add_argument("--device", default="cpu", help="device of the speed table (cpu or cuda)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    # internal: one measurement in a fresh process
    parser.add_argument("--speed-one", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--step-one", nargs=2, metavar=("IMPL", "CITY"), help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.speed_one:
        print(json.dumps(speed_one(args.speed_one[0], int(args.speed_one[1]), args.epochs, args.device)))
        return 0
    if args.step_one:
        print(json.dumps(step_one(args.step_one[0], args.step_one[1], args.steps, args.data)))
        return 0

    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    speed: dict[str, Any] = {}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    if not args.skip_speed:  # first, while nothing else of this benchmark runs
        speed = run_speed(args)
        print_speed(speed)
        if args.json:
            args.json.with_suffix(".speed.json").write_text(json.dumps(speed, indent=2))
    if not args.skip_accuracy:
        views, targets, labels = load_city(args.data)
        print(f"\n{args.data}: {len(views)} regions, inputs {sorted(views.available())}, targets {sorted(targets)}, "
              f"labels {sorted(labels)}", flush=True)
        results, runs = run_accuracy(args, views, labels)
        print_accuracy(results, list(labels))
    return finish(args.json if results else None, results, runs, f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
