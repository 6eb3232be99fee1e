"""One-command GPU check (``make gpu-check``): every method on CUDA, the speed tables, a 2-GPU data-parallel run.

On a machine whose torch sees a CUDA GPU (about 10 minutes in all):

1. **methods**: every registered method fitted on the bundled San Francisco sample city (579 block groups,
   POIs, Landsat chips, ReFound's grid samples) on ``cuda``, then embedding the regions: baseline, HAFusion
   (``scalable``, 100 epochs), CaLLiPer (20 epochs), CooKIE (EfficientNet-Lite0 image features; 50 + 50
   epochs), ReFound ``full`` (12 layers of 768) for ``--refound-steps`` (300) pre-training steps with bf16
   autocast, and fusion over the others. Per method: seconds, device used, embedding size, finite values,
   last training loss, peak GPU memory; a failure is recorded in its row and the check goes on.
2. **hafusion_speed**: seconds per epoch of HAFusion's ``reference`` and ``scalable`` configurations on synthetic
   cities of 1,000 / 5,000 / 10,000 regions (``bench/hafusion.py``'s ``speed_one``; reference up to its
   ``REFERENCE_MAX_FIT``, 1,000: its width is the number of regions).
3. **refound_speed**: ReFound ``small`` and ``full`` pre-training samples per second, inference regions per
   second, parameters and FLOPs (``bench/refound.py``'s ``speed_one``).
4. **ddp**: with two or more GPUs, a ``torchrun --nproc_per_node 2`` run (NCCL) of CooKIE, HAFusion ``scalable``
   and CaLLiPer on the sample city (each rank trains its shard; rank 0 reports), and the same through
   ``nproc = 2`` (RegionLens starting its own second process); loss curves and seconds against one GPU.

Without CUDA the same script runs its **cpu fallback**: tiny sizes on 40 sample-city regions (seconds), the
HAFusion speed table at 180 regions, no ReFound speed table and no 2-GPU run; every row says ``cpu fallback``.
Everything goes into one JSON (``--json``, default ``out/gpu_check.json``) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 # torchrun of this script: explicit interpreter, no shell
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.views._base import Views  # noqa: E402

CPU_FALLBACK = "cpu fallback"
#: Regions of the sample city the cpu fallback and the DDP smoke run use.
FALLBACK_REGIONS = 40
DDP_REGIONS = 200

#: Per method: parameters on CUDA (full sample city) and in the cpu fallback (40 regions, seconds).
PLANS: dict[str, dict[str, dict[str, Any]]] = {
    "cuda": {
        "baseline": {"dim": 32},
        "hafusion": {"dim": 144, "config": "scalable", "epochs": 100},
        "calliper": {"dim": 128, "epochs": 20, "cache_dir": "none"},
        "cookie": {"dim": 64, "stage1_epochs": 50, "stage2_epochs": 50},
        "refound": {"dim": 128, "config": "full", "steps": 300, "batch_size": 32, "mixed_precision": True,
                    "checkpoint_dir": "none"},
        "fusion": {"dim": 64},
    },
    CPU_FALLBACK: {
        "baseline": {"dim": 8},
        "hafusion": {"dim": 8, "config": "scalable", "epochs": 2, "width": 16, "batch_regions": 24,
                     "region_blocks": 1, "intra_blocks": 1, "inter_blocks": 1, "heads": 2, "d_prime": 8, "d_m": 4,
                     "lift_channels": 4, "ffn_dim": 32},
        "calliper": {"dim": 8, "epochs": 1, "hidden": 16, "blocks": 1, "scales": 4, "batch_size": 128,
                     "names": "no", "cache_dir": "none", "region_points": 4},
        "cookie": {"dim": 8, "hidden": 16, "stage1_epochs": 1, "stage2_epochs": 1, "image_encoder": "stats",
                   "modalities": "poi,image", "cache_dir": "none"},
        "refound": {"dim": 16, "steps": 3, "batch_size": 8, "checkpoint_dir": "none", "use_grid": False,
                    "masked_image": False, "alignment": False, "distill_text": False, "distill_image": False,
                    "distill_similarity": False},
        "fusion": {"dim": 8},
    },
}


# ------------------------------------------------------------------------------------------- pieces
def environment() -> dict[str, Any]:
    """torch and CUDA versions, the GPUs and whether they do bf16."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus,
            "bf16": bool(gpus) and torch.cuda.is_bf16_supported(), "python": sys.version.split()[0],
            "cpu_threads": torch.get_num_threads()}


def load_city() -> Any:
    """The bundled sample city as the demo reads it."""
    from backend.demo import demo_config
    from backend.io.city import read_city

    with tempfile.TemporaryDirectory() as tmp:
        return read_city(demo_config(Path(tmp) / "run"))


def sample_views(n: int | None, chips: bool) -> Views:
    """The sample city's views (``n`` first regions, or all; chips and grid samples when ``chips``)."""
    from dataclasses import fields

    from backend.config import RunConfig
    from backend.views.build import build_views

    chip_size = next(f.default for f in fields(RunConfig) if f.name == "chip_size")  # the pipeline's default
    views = build_views(load_city(), needs={"chips", "samples"} if chips else set(), chip_size=chip_size, report=[])
    if n is None or n >= len(views):
        return views
    ids = views.region_ids[:n]
    pts = views.poi_points
    return Views(region_ids=ids, tables={k: v.loc[ids] for k, v in views.tables.items()},
                 poi_points=None if pts is None else pts[pts["region_id"].astype(str).isin(set(map(str, ids)))].copy(),
                 poi_texts=None if views.poi_texts is None else views.poi_texts[:n],
                 chips={k: v[:n] for k, v in views.chips.items()},
                 chip_masks={k: v[:n] for k, v in views.chip_masks.items()},
                 areas_km2=None if views.areas_km2 is None else views.areas_km2.iloc[:n],
                 centroids=np.asarray(views.centroids)[:n], geometry=views.geometry.iloc[:n])


def _peak_gpu_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1024**3, 2)


def check_methods(views: Views, device: str, plan: dict[str, dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """Fit and embed every planned method; one row per method (errors recorded, not raised)."""
    import torch

    from backend.models import EMBEDDERS, get_embedder

    rows: list[dict[str, Any]] = []
    learned = {}
    for name in [m for m in EMBEDDERS if m in plan and m != "fusion"] + ["fusion"]:
        row: dict[str, Any] = {"method": name, "mode": label}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            model = get_embedder(name, seed=0, device=device, **plan[name])
            if name == "fusion":
                model.set_sources(learned)
            emb = model.fit_transform(views)
            learned[name] = emb
            row.update(ok=bool(np.isfinite(emb.to_numpy()).all()), dim=int(emb.shape[1]), regions=int(emb.shape[0]),
                       device=model.device_used or "cpu",
                       final_loss=round(model.history[-1], 5) if model.history else None)
            if name == "refound":
                row["bf16"] = bool(model.params.mixed_precision and str(model.device_used).startswith("cuda"))
                row["steps"] = model.steps_run
        except Exception as exc:  # noqa: BLE001 - a check reports every failure and goes on
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["peak_gpu_gb"] = _peak_gpu_gb()
        rows.append(row)
        print(f"  {name}: {row}", flush=True)
    return rows


def hafusion_speed(device: str, sizes: tuple[int, ...], label: str, reference_max: int,
                   epochs: int = 3) -> list[dict[str, Any]]:
    """``bench/hafusion.py``'s per-epoch timing, both configurations (reference up to ``reference_max``)."""
    from bench.hafusion import speed_one

    rows = []
    for n in sizes:
        for config in ("reference", "scalable"):
            if config == "reference" and n > reference_max:
                continue
            try:
                row = speed_one(config, n, epochs if n <= 5000 else 2, device)
            except Exception as exc:  # noqa: BLE001
                row = {"config": config, "n": n, "error": f"{type(exc).__name__}: {exc}"[:500]}
            row["mode"] = label
            rows.append(row)
            print(f"  hafusion {config} N={n}: {row}", flush=True)
    return rows


def refound_speed(device: str, steps: int) -> list[dict[str, Any]]:
    """``bench/refound.py``'s speed rows (small and full) on ``device``."""
    from bench.refound import speed_one

    args = argparse.Namespace(speed_steps=steps, full_regions=579, full_batch=32, full_steps=steps,
                              device=device, threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    rows = []
    for config in ("small", "full"):
        try:
            row = speed_one(config, args)
        except Exception as exc:  # noqa: BLE001
            row = {"config": config, "error": f"{type(exc).__name__}: {exc}"[:500]}
        rows.append(row)
        print(f"  refound {config}: {row}", flush=True)
    return rows


#: Methods of the data-parallel smoke run and their parameters (200 sample-city regions).
DDP_PLAN: dict[str, dict[str, Any]] = {
    "cookie": {"dim": 32, "stage1_epochs": 20, "stage2_epochs": 20, "image_encoder": "stats", "batch_size": 128},
    "hafusion": {"dim": 64, "config": "scalable", "epochs": 20, "batch_regions": 64},
    "calliper": {"dim": 32, "epochs": 5, "cache_dir": "none", "dropout": 0.0},
}


def ddp_fit(device: str, nproc: int) -> dict[str, Any]:
    """Fit every method of :data:`DDP_PLAN` with ``nproc`` processes (or in the torchrun group this runs in)."""
    from backend.models import get_embedder

    views = sample_views(DDP_REGIONS, chips=False)
    out: dict[str, Any] = {}
    for name, params in DDP_PLAN.items():
        t0 = time.perf_counter()
        model = get_embedder(name, seed=0, device=device, nproc=nproc, **params).fit(views)
        out[name] = {"seconds": round(time.perf_counter() - t0, 2), "history": [round(v, 6) for v in model.history]}
    return out


def _ddp_rank(json_path: Path) -> int:
    """One rank of the torchrun smoke run: join the group torchrun set up, train, rank 0 writes the result."""
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    try:
        result = ddp_fit("cuda", 1)  # the group exists: every method trains data-parallel in it
        if dist.get_rank() == 0:
            result["world"] = dist.get_world_size()
            json_path.write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()
    return 0


def ddp_smoke(gpus: int) -> dict[str, Any]:
    """Two GPUs through torchrun and through ``nproc = 2``, against one GPU (skipped with fewer than two)."""
    if gpus < 2:
        return {"skipped": f"needs 2 CUDA GPUs, torch sees {gpus} (2-process gloo training is tested by "
                           "tests/backend/models/test_distributed.py)"}
    out: dict[str, Any] = {"one_gpu": ddp_fit("cuda", 1), "nproc_2": ddp_fit("cuda", 2)}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).resolve()), "--ddp-rank", str(result)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)  # nosec B603
        out["torchrun"] = (json.loads(result.read_text(encoding="utf-8")) if proc.returncode == 0 and result.is_file()
                           else {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"})
        out["torchrun"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    for name in DDP_PLAN:
        one = np.asarray(out["one_gpu"][name]["history"])
        for key in ("nproc_2", "torchrun"):
            hist = out[key].get(name, {}).get("history")
            if hist is not None and len(hist) == len(one):
                out[key][name]["max_rel_diff_vs_one_gpu"] = float(np.max(np.abs(np.asarray(hist) - one) / np.abs(one)))
    return out


# ------------------------------------------------------------------------------------------- output
def print_table(report: dict[str, Any]) -> None:
    """The methods, speed and DDP results as plain tables."""
    print(f"\nRegionLens GPU check ({report['mode']}): torch {report['environment']['torch']}, "
          f"GPUs {report['environment']['gpus'] or 'none'}, {report['seconds']:.0f} s")
    print(f"{'method':10s} {'ok':4s} {'device':8s} {'dim':>4s} {'seconds':>8s} {'peak GPU GB':>11s}  note")
    for r in report["methods"]:
        note = r.get("error") or (f"loss {r['final_loss']}" if r.get("final_loss") is not None else "")
        if r.get("bf16"):
            note += f", bf16, {r.get('steps')} steps"
        print(f"{r['method']:10s} {'yes' if r.get('ok') else 'NO':4s} {str(r.get('device', '-')):8s} "
              f"{r.get('dim', '-')!s:>4s} {r['seconds']:8.1f} {r.get('peak_gpu_gb') or '-'!s:>11s}  {note}")
    if report["hafusion_speed"]:
        print(f"\n{'HAFusion config':16s} {'regions':>8s} {'s / epoch':>10s} {'peak RSS GB':>12s}")
        for r in report["hafusion_speed"]:
            print(f"{r['config']:16s} {r['n']:8d} {r.get('sec_per_epoch', float('nan')):10.3f} "
                  f"{r.get('peak_rss_gb', '-')!s:>12s}  {r.get('error', '')}")
    for r in report["refound_speed"]:
        print(f"ReFound {r['config']}: {r.get('samples_per_second', '-')} samples/s, "
              f"{r.get('inference_regions_per_second', '-')} regions/s {r.get('error', '')}")
    ddp = report["ddp"]
    if "skipped" in ddp:
        print(f"\n2-GPU run: skipped ({ddp['skipped']})")
    else:
        for key in ("one_gpu", "nproc_2", "torchrun"):
            cells = ", ".join(f"{m} {v['seconds']} s" + (f" (loss diff {v['max_rel_diff_vs_one_gpu']:.2%})"
                                                        if "max_rel_diff_vs_one_gpu" in v else "")
                              for m, v in ddp[key].items() if isinstance(v, dict) and "seconds" in v)
            print(f"{key}: {cells or ddp[key].get('error', '')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "gpu_check.json", help="where the JSON goes")
    parser.add_argument("--cpu-fallback", action="store_true", help="run the cpu fallback even when CUDA is present")
    parser.add_argument("--refound-steps", type=int, default=300, help="ReFound full pre-training steps (CUDA)")
    parser.add_argument("--ddp-rank", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.ddp_rank:
        return _ddp_rank(args.ddp_rank)
    import torch

    cuda = torch.cuda.is_available() and not args.cpu_fallback
    mode = "cuda" if cuda else CPU_FALLBACK
    t0 = time.perf_counter()
    print(f"RegionLens GPU check: {mode}", flush=True)
    plan = dict(PLANS[mode])
    if cuda:
        plan["refound"] = {**plan["refound"], "steps": args.refound_steps}
    views = sample_views(None if cuda else FALLBACK_REGIONS, chips=cuda)
    report: dict[str, Any] = {"mode": mode, "environment": environment()}
    report["methods"] = check_methods(views, "cuda" if cuda else "cpu", plan, mode)
    from bench.hafusion import REFERENCE_MAX_FIT

    report["hafusion_speed"] = hafusion_speed("cuda" if cuda else "cpu", (1000, 5000, 10000) if cuda else (180,),
                                              mode, REFERENCE_MAX_FIT if cuda else 180, 3 if cuda else 2)
    report["refound_speed"] = refound_speed("cuda", 100) if cuda else []
    report["ddp"] = ddp_smoke(torch.cuda.device_count() if cuda else 0)
    if not cuda:
        report["ddp"]["skipped"] = f"{CPU_FALLBACK}: {report['ddp']['skipped']}"
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print_table(report)
    print(f"\nJSON: {args.json}")
    return 0 if all(r.get("ok") for r in report["methods"]) else 1


if __name__ == "__main__":
    sys.exit(main())
