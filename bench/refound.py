"""Benchmark: ReFound (POI-name and imagery transformer with geospatial experts) against the baseline.

ReFound: Xiao, Liu, Zhou, Zhou, Xiong and Zheng, "ReFound: Crafting a Foundation Model for Urban Region
Understanding upon Language and Visual Foundations", KDD 2024 (RegionLens' implementation:
backend/models/refound).

Accuracy, honest protocol (SPEC section 5), on the bundled San Francisco sample city (579 block groups; POI
names and categories, Landsat chips at the pipeline's 64 px chip size; ReFound also pre-trains on the grid
samples of ``views.samples``, built once); labels: population and the crime labels of the demo as log1p
densities per km2. Embeddings never see a label; every ReFound variant is pre-trained for a fixed number of
steps (the embedder's default unless ``--steps``), once per training seed; each label is predicted out of
fold by RidgeCV (standardised features, penalty by leave-one-out on the training folds only) under 5-fold
shuffled and spatially blocked CV over 3 fold seeds. Mean and standard deviation are over all (training
seed, fold seed) pairs (fold seeds only for the deterministic methods). Methods:

* ``baseline``: the baseline embedder (views standardised, concatenated, PCA) at 64 columns;
* ``refound``: the small configuration at its natural size, the network width (``PRESETS["small"]["width"]``
  columns, read from backend.models.refound.model);
* ``refound@64``: the same embeddings reduced to 64 columns by a PCA fitted on the embedding itself (all
  regions, no labels). This is exactly what ``RefoundEmbedder(dim=64)`` does with the regions it is fitted
  on, without pre-training a second network;
* ``refound_finetuned``: the fine-tuning option on the same pre-trained ``refound`` models: per fold a small
  head (attention pooling of the two frozen [CLS] outputs, then an MLP; ``FINETUNE_EPOCHS`` fixed epochs) is
  trained on the training regions' labels and predicts the held-out fold; same folds as the ridge rows;
* ``teacher_image``: the vision teacher alone, EfficientNet-Lite0 global features of the region chips
  (``backend.encoders.image.image_features``, 1280 columns);
* ``teacher_text``: the language teacher alone, the mean all-MiniLM-L6-v2 embedding of the region's POI
  texts (``backend.models.cookie.modalities.text_features`` without its log1p(count) column: 384 columns);
* ablations (at the network width): ``refound_no_moge`` (one shared FFN in every layer), ``refound_no_distill``
  (no text, image or similarity distillation), ``refound_no_masked`` (no masked POI-token and masked-patch
  prediction), ``refound_no_alignment`` (no cross-modal spatial alignment).

Keys ``<method>`` (shuffled folds) and ``<method>@spatial`` (spatially blocked folds); the protocol is
always the part after the last ``@``.

Speed and cost, each measured in a fresh subprocess (so its peak RSS, VmHWM, is its own; the views, the
teachers and the network are all included): ``small`` pre-trains on the sample city for ``--speed-steps``
steps (samples per second of the training loop, inference regions per second of ``transform``); ``full``
(the paper's BERT-base size; for GPUs) is only timed on CPU: pre-training a few steps of
``--full-batch`` samples on ``--full-regions`` regions, and inference over them. Parameters and FLOPs per
region of one forward pass (torch.utils.flop_counter, a multiply-add counts 2; POI sequences are trimmed to
the longest in each batch as in the embedder) for both; CooKIE's, HAFusion's and EfficientNet-Lite0's figures
are read from README.md's CooKIE cost table (not rerun). The code selects CUDA when ``--device auto`` finds
one; this benchmark's figures are CPU figures.

``--json OUT.json`` writes method -> task -> {mae, rmse, r2} -> [mean, std]; the speed and cost table goes
to ``OUT.speed.json`` and the per-run details (steps, seconds, final loss terms) to ``OUT.runs.json``.
Usage (repository root):

    .venv/backend/bin/python bench/refound.py --json out/bench_refound_sf.json
    .venv/backend/bin/python bench/refound.py --quick --json out/bench_refound_quick.json     # smoke run
    .venv/backend/bin/python bench/refound.py --methods baseline refound --no-speed --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.views._base import Views  # noqa: E402
from bench._scoring import cell, finish, summary  # noqa: E402
from bench.cookie import Task  # noqa: E402  (shared with the CooKIE bench)
from bench.cookie import load_sf as load_cookie_sf  # noqa: E402

METRICS = ("mae", "rmse", "r2")
#: Objective switches of each ReFound variant (all on unless listed).
VARIANTS: dict[str, dict[str, Any]] = {
    "refound": {},
    "refound_no_moge": {"moge": False},
    "refound_no_distill": {"distill_text": False, "distill_image": False, "distill_similarity": False},
    "refound_no_masked": {"masked_poi": False, "masked_image": False},
    "refound_no_alignment": {"alignment": False},
}
METHODS = ("baseline", "refound", "refound@64", "refound_finetuned", "teacher_image", "teacher_text",
           *list(VARIANTS)[1:])
#: Fine-tuned head (backend/models/refound/finetune.py): epochs per fold, fixed in advance.
FINETUNE_EPOCHS = 100
REDUCED_DIM = 64


# ---------------------------------------------------------------------------------------------- data
def load_sf() -> tuple[Views, dict[str, Task], np.ndarray]:
    """The sample city's views (chips at the pipeline's size, grid samples) and the demo's labels."""
    return load_cookie_sf(frozenset({"chips", "samples"}))


def subset(views: Views, n: int) -> Views:
    """The first ``n`` regions of ``views`` (POI points, chips, geometry; no grid samples)."""
    ids = views.region_ids[:n]
    pts = views.poi_points
    if pts is not None:
        pts = pts[pts["region_id"].isin(ids)]
    return Views(region_ids=ids, poi_points=pts,
                 chips={k: v[:n] for k, v in views.chips.items()},
                 chip_masks={k: v[:n] for k, v in views.chip_masks.items()},
                 areas_km2=None if views.areas_km2 is None else views.areas_km2.iloc[:n],
                 centroids=None if views.centroids is None else np.asarray(views.centroids)[:n],
                 geometry=None if views.geometry is None else views.geometry.iloc[:n])


# ------------------------------------------------------------------------------------------ scoring
def score(x: np.ndarray, tasks: dict[str, Task], coords: np.ndarray, folds: int,
          fold_seeds: list[int]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """protocol -> task -> per-fold-seed metrics (RidgeCV out of fold, shuffled and spatial folds)."""
    from backend.tasks.prediction import evaluate_label

    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name, task in tasks.items():
        res = evaluate_label(x[task.rows], task.y, coords[task.rows], models=("ridge",), folds=folds,
                             repeats=len(fold_seeds), spatial=True, seed=fold_seeds[0])
        for protocol, rows in res.per_repeat.groupby("protocol"):
            out.setdefault(str(protocol), {})[name] = rows[list(METRICS)].to_dict("records")
    return out


def score_finetuned(cls: np.ndarray, tasks: dict[str, Task], coords: np.ndarray, folds: int, fold_seeds: list[int],
                    seed: int) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Like :func:`score` for the fine-tuned head on the frozen [CLS] outputs, on the very same folds."""
    from backend.models.refound.finetune import finetune_predictions
    from backend.tasks.prediction import regression_metrics, shuffled_folds, spatial_folds

    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name, task in tasks.items():
        x, c = cls[task.rows], coords[task.rows]
        for r in range(len(fold_seeds)):
            plans = {"shuffled": shuffled_folds(len(x), folds, fold_seeds[0] + r),
                     "spatial": spatial_folds(c, folds, fold_seeds[0] + r)[0]}
            for protocol, fold_of in plans.items():
                pred = finetune_predictions(x, task.y, fold_of, epochs=FINETUNE_EPOCHS, seed=seed)
                out.setdefault(protocol, {}).setdefault(name, []).append(regression_metrics(task.y, pred))
    return out


def _key(method: str, protocol: str) -> str:
    return method if protocol == "shuffled" else f"{method}@{protocol}"


def width(config: str) -> int:
    """The network width of a ReFound preset: its natural embedding size (no PCA)."""
    from backend.models.refound.model import PRESETS

    return int(PRESETS[config]["width"])


def pca_reduce(x: np.ndarray, dim: int) -> np.ndarray:
    """``x`` reduced to ``dim`` columns by a PCA fitted on ``x`` itself (no labels involved)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=min(dim, *x.shape), svd_solver="full").fit_transform(x)


def teacher_features(views: Views, which: str, device: str) -> tuple[np.ndarray, str]:
    """The frozen teachers' features alone (``image``: EfficientNet-Lite0, ``text``: mean MiniLM)."""
    from backend.encoders.cache import cache_dir
    from backend.encoders.image import image_features
    from backend.models.cookie.modalities import text_features

    if which == "image":
        raster = sorted(views.chips)[0]  # ReFound's default image raster
        x, cached = image_features(views.chips[raster], views.chip_masks.get(raster), "efficientnet-lite0", 224,
                                   cache_dir("image"), device)
        return x.astype(np.float64), f"{raster} chips, {x.shape[1]} features ({'cached' if cached else 'computed'})"
    x, note = text_features(views.poi_texts or [[] for _ in range(len(views))], "all-MiniLM-L6-v2",
                            cache_dir("text"), device)
    return x[:, :-1].astype(np.float64), note  # drop log1p(count): the teacher's embedding alone


def _loss_summary(model: Any) -> dict[str, dict[str, float]]:
    """Per objective: first step's loss and the mean of the last 10 steps."""
    out = {}
    for k, v in model.loss_terms.items():
        if v:
            out[k] = {"first": round(float(v[0]), 4), "final": round(float(np.mean(v[-10:])), 4)}
    hist = list(getattr(model, "history", []) or [])
    if hist:
        out["total"] = {"first": round(float(hist[0]), 4), "final": round(float(np.mean(hist[-10:])), 4)}
    return out


def run_accuracy(args: argparse.Namespace, views: Views, tasks: dict[str, Task],
                 coords: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from backend.models import get_embedder
    from backend.models.refound import RefoundEmbedder

    seeds = [0] if args.quick else list(range(args.seeds))
    fold_seeds = [0] if args.quick else list(range(args.fold_seeds))
    methods = list(args.methods)
    pooled: dict[str, dict[str, list[dict[str, float]]]] = {}
    runs: dict[str, Any] = {"protocol": {"training_seeds": seeds, "fold_seeds": fold_seeds, "folds": args.folds,
                                         "threads": args.threads, "device": args.device,
                                         "steps": args.steps or "default", "regions": len(views),
                                         "grid_samples": 0 if views.samples is None else len(views.samples)}}

    def add(method: str, x: np.ndarray) -> dict[str, float]:
        s = score(x, tasks, coords, args.folds, fold_seeds)
        for protocol, per_task in s.items():
            for task, recs in per_task.items():
                pooled.setdefault(_key(method, protocol), {}).setdefault(task, []).extend(recs)
        return {t: round(float(np.mean([r["r2"] for r in recs])), 3) for t, recs in s["shuffled"].items()}

    if "baseline" in methods:
        t0 = time.perf_counter()
        base = get_embedder("baseline", dim=REDUCED_DIM).fit_transform(views).to_numpy()
        runs["baseline"] = {"seconds": round(time.perf_counter() - t0, 2), "columns": base.shape[1],
                            "r2_shuffled": add("baseline", base)}
        print(f"  baseline: {base.shape[1]} columns, R2 {runs['baseline']['r2_shuffled']}", flush=True)
    for which in ("image", "text"):
        name = f"teacher_{which}"
        if name in methods:
            t0 = time.perf_counter()
            x, note = teacher_features(views, which, args.device)
            runs[name] = {"seconds": round(time.perf_counter() - t0, 2), "columns": x.shape[1], "note": note,
                          "r2_shuffled": add(name, x)}
            print(f"  {name}: {note}, R2 {runs[name]['r2_shuffled']}", flush=True)

    for variant, switches in VARIANTS.items():
        extra = {"refound@64", "refound_finetuned"} & set(methods)
        wanted = variant in methods or (variant == "refound" and bool(extra))
        if not wanted:
            continue
        runs[variant] = []
        for seed in seeds:
            model = RefoundEmbedder(dim=width("small"), seed=seed, device=args.device, config="small", steps=args.steps,
                                    checkpoint_dir="none", **switches)
            t0 = time.perf_counter()
            model.fit(views)
            fit_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            x = model.transform(views).to_numpy()
            transform_seconds = time.perf_counter() - t0
            r2 = {}
            if variant in methods:
                r2[variant] = add(variant, x)
            if variant == "refound" and "refound@64" in methods:
                r2["refound@64"] = add("refound@64", pca_reduce(x, REDUCED_DIM))
            if variant == "refound" and "refound_finetuned" in methods:
                ft = score_finetuned(model.cls_outputs(views), tasks, coords, args.folds, fold_seeds, seed)
                for protocol, per_task in ft.items():
                    for task, recs in per_task.items():
                        pooled.setdefault(_key("refound_finetuned", protocol), {}).setdefault(task, []).extend(recs)
                r2["refound_finetuned"] = {t: round(float(np.mean([q["r2"] for q in recs])), 3)
                                           for t, recs in ft["shuffled"].items()}
            run = {"seed": seed, "steps": model.steps_run, "fit_seconds": round(fit_seconds, 1),
                   "train_seconds": round(model.train_seconds, 1),
                   "samples_per_second": round(model.samples_per_second, 2), "samples": model.n_samples,
                   "transform_seconds": round(transform_seconds, 2), "objectives": model.objectives(),
                   "loss_terms": _loss_summary(model), "r2_shuffled": r2}
            runs[variant].append(run)
            print(f"  {variant} seed {seed}: fit {fit_seconds:.0f} s ({model.steps_run} steps, "
                  f"{model.samples_per_second:.1f} samples/s), R2 {r2}", flush=True)
            del model
    order = [m for m in METHODS if m in methods]
    results = {}
    for method in order:
        for protocol in ("shuffled", "spatial"):
            key = _key(method, protocol)
            if key in pooled:
                results[key] = {task: summary(recs) for task, recs in pooled[key].items()}
    return results, runs


# --------------------------------------------------------------------------------------------- speed
def _peak_mb() -> float:
    """Peak resident memory of this process (MB): VmHWM (starts afresh at exec), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed_one(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Child process: pre-train ``config`` a few steps, embed, count parameters and FLOPs."""
    from backend.models.cookie.model import count_flops
    from backend.models.refound import RefoundEmbedder
    from backend.models.refound.model import count_parameters

    t0 = time.perf_counter()
    views, _, _ = load_sf()
    if config == "full":
        views = subset(views, args.full_regions)
        params: dict[str, Any] = {"steps": args.full_steps, "batch_size": args.full_batch, "use_grid": False}
    else:
        params = {"steps": args.speed_steps}
    load_s = time.perf_counter() - t0
    model = RefoundEmbedder(dim=width(config), seed=0, device=args.device, config=config, checkpoint_dir="none",
                            **params)
    t0 = time.perf_counter()
    model.fit(views)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.transform(views)
    infer_s = time.perf_counter() - t0
    flops = count_flops(model.transform, views)
    cfg = model.network.cfg
    return {"config": config, "layers": cfg.layers, "width": cfg.width, "max_tokens": cfg.max_tokens,
            "image_size": cfg.image_size, "params": count_parameters(model.network),
            "flops_per_region": flops / len(views), "samples": model.n_samples, "regions": len(views),
            "steps": model.steps_run, "batch_size": model.params.batch_size,
            "train_seconds": round(model.train_seconds, 2), "samples_per_second": round(model.samples_per_second, 3),
            "fit_seconds": round(fit_s, 1), "inference_regions_per_second": round(len(views) / infer_s, 2),
            "load_seconds": round(load_s, 1), "peak_rss_mb": round(_peak_mb()), "threads": args.threads,
            "device": args.device}


def _child(config: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--speed-worker", config, "--threads", str(args.threads),
           "--device", args.device, "--speed-steps", str(args.speed_steps), "--full-regions", str(args.full_regions),
           "--full-batch", str(args.full_batch), "--full-steps", str(args.full_steps)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"config": config, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"config": config, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-3000:]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_avg_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine during the measurement
    return out


def readme_costs() -> list[dict[str, str]]:
    """CooKIE's, HAFusion's and EfficientNet-Lite0's rows of README.md's cost table (bench/cookie.py)."""
    header = "| network | data | parameters | GFLOPs / forward | MFLOPs / region |"
    try:
        lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    if start is None:
        return []
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        row = dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=False))
        if not row.get("network", "").startswith("ReFound"):  # this bench measures its own
            rows.append(row)
    return rows


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"refound": [], "readme": readme_costs()}
    for config, timeout in (("small", 3600), ("full", 3600)):
        t0 = time.perf_counter()
        r = _child(config, args, timeout)
        out["refound"].append(r)
        print(f"  speed {config} ({time.perf_counter() - t0:.0f} s): {r}", flush=True)
    return out


# -------------------------------------------------------------------------------------------- print
def print_results(results: dict[str, Any], tasks: list[str]) -> None:
    main_task, others = tasks[0], tasks[1:]
    for protocol in ("shuffled", "spatial"):
        print(f"\n{protocol} 5-fold CV, RidgeCV out of fold (mean ± std over training seeds x fold seeds); "
              f"{main_task} MAE / RMSE / R2, the crime labels R2 (all log1p densities per km2)\n")
        print(f"| method | {main_task} MAE | {main_task} RMSE | {main_task} R2 | "
              + " | ".join(f"{t} R2" for t in others) + " |")
        print("|---|" + "---|" * (3 + len(others)))
        for key, per_task in results.items():
            method, _, proto = key.rpartition("@")
            if proto != "spatial":
                method = key
            if (protocol == "spatial") != (proto == "spatial"):
                continue
            cells = [cell(per_task[main_task][m], d) if main_task in per_task else "-"
                     for m, d in (("mae", 3), ("rmse", 3), ("r2", 3))]
            cells += [cell(per_task[t]["r2"], 3) if t in per_task else "-" for t in others]
            print(f"| {method} | " + " | ".join(cells) + " |")


def print_speed(speed: dict[str, Any]) -> None:
    print("\n| network | data | parameters | MFLOPs / region (forward) | pre-training | inference regions/s | "
          "peak RSS MB | source |")
    print("|---|---|---|---|---|---|---|---|")
    for r in speed["refound"]:
        if "error" in r:
            err = r["error"].splitlines()[-1] if r["error"] else "?"
            print(f"| ReFound {r['config']} | | {err} | | | | | this run |")
            continue
        data = "sample city" if r["config"] == "small" else f"first {r['regions']} regions"
        train = (f"{r['samples_per_second']} samples/s ({r['steps']} steps of {r['batch_size']}, "
                 f"{r['samples']} samples)")
        print(f"| ReFound {r['config']} ({r['layers']} x {r['width']}, {r['image_size']} px) | {data} | "
              f"{r['params']:,} | {r['flops_per_region'] / 1e6:,.1f} | {train} | {r['inference_regions_per_second']} | "
              f"{r['peak_rss_mb']:,} | this run, {r['device']}, {r['threads']} thread(s) |")
    for r in speed["readme"]:
        train = "; ".join(x for x in (f"{r.get('s / epoch', '')} s / epoch" if r.get("s / epoch") else "",
                                      r.get("training (default epochs)", "")) if x)
        print(f"| {r.get('network', '')} | {r.get('data', '')} | {r.get('parameters', '')} | "
              f"{r.get('MFLOPs / region', '')} | {train} | | | README.md (bench/cookie.py) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write method -> task -> {mae, rmse, r2} -> [mean, std] here")
    parser.add_argument("--quick", action="store_true", help="1 training seed, 1 fold seed, 40 steps (smoke run)")
    parser.add_argument("--steps", type=int, default=0, help="pre-training steps (0: the embedder's default)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (at least 3 for a reported row)")
    parser.add_argument("--fold-seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine may be shared)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or mps")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed and cost measurements")
    parser.add_argument("--speed-steps", type=int, default=30, help="pre-training steps timed for 'small'")
    parser.add_argument("--full-regions", type=int, default=16, help="regions of the 'full' timing")
    parser.add_argument("--full-batch", type=int, default=4, help="samples per step of the 'full' timing")
    parser.add_argument("--full-steps", type=int, default=3, help="pre-training steps timed for 'full'")
    parser.add_argument("--speed-worker", choices=("small", "full"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.speed_worker:
        print(json.dumps(speed_one(args.speed_worker, args)))
        return 0
    if args.quick:
        args.steps = args.steps or 40
        args.speed_steps = min(args.speed_steps, 10)
        args.full_steps = min(args.full_steps, 2)
        args.full_regions = min(args.full_regions, 8)
    t_all = time.perf_counter()
    views, tasks, coords = load_sf()
    n_grid = 0 if views.samples is None else len(views.samples)
    print(f"sf: {len(views)} regions + {n_grid} grid samples, views {sorted(views.available())}, "
          f"tasks {list(tasks)} ({time.perf_counter() - t_all:.0f} s)", flush=True)
    results, runs = run_accuracy(args, views, tasks, coords)
    runs["accuracy_seconds"] = round(time.perf_counter() - t_all, 1)
    speed: dict[str, Any] = {"refound": [], "readme": readme_costs()}
    if not args.no_speed:
        speed = run_speed(args)
    total = round(time.perf_counter() - t_all, 1)
    speed["total_seconds"] = runs["total_seconds"] = total

    print(f"\nsf: {len(views)} regions ({n_grid} grid samples for pre-training); baseline and refound@64 at "
          f"{REDUCED_DIM} columns, refound and its ablations at {width('small')}; steps {args.steps or 'default'}; "
          f"{args.folds}-fold CV; device {args.device}, {args.threads} torch thread(s)")
    print_results(results, list(tasks))
    print_speed(speed)
    return finish(args.json, results, runs, f"{total} s (accuracy {runs['accuracy_seconds']} s)", speed=speed)


if __name__ == "__main__":
    raise SystemExit(main())
