"""Benchmark: the baseline embedder on the bundled San Francisco sample city.

Prints a table of wall time per stage and peak memory (RSS) for the whole job, and the R2 of the
baseline embedding beside two reference feature sets measured in the same run on the same folds:
the raw views without PCA (what the embedding compresses) and a constant predictor (R2 = 0 by
definition under out-of-fold evaluation, a sanity floor). Labels are log1p densities (per km2).

Usage: .venv/backend/bin/python bench/baseline.py [--repeats 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.demo import demo_config  # noqa: E402
from backend.pipeline import run_pipeline  # noqa: E402
from backend.progress import Progress  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()

    from backend.io.city import read_city
    from backend.tasks.prediction import evaluate_label
    from backend.tasks.targets import make_target
    from backend.views.build import build_views

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(Path(tmp) / "run")
        cfg.methods[0].dim = args.dim
        cfg.prediction.repeats = args.repeats
        cfg.figures = False
        t0 = time.perf_counter()
        result = run_pipeline(cfg, Progress())
        total = time.perf_counter() - t0
        manifest = json.loads(Path(result.run_json).read_text())

        # Raw views (no PCA) on the same protocol, for comparison.
        city = read_city(cfg)
        views = build_views(city)
        raw = np.hstack([t.to_numpy(dtype=float) for t in views.tables.values()])
        raw = np.nan_to_num(raw)
        rows = []
        for spec in cfg.labels:
            target = make_target(city.labels[spec.name].reindex(views.region_ids), spec, views.areas_km2, None)
            idx = views.region_ids.get_indexer(target.y.index)
            res = evaluate_label(raw[idx], target.y.to_numpy(), np.asarray(views.centroids)[idx], models=("ridge",),
                                 folds=cfg.prediction.folds, repeats=args.repeats, spatial=True, seed=cfg.seed)
            for rec in res.metrics.to_dict("records"):
                rows.append({"method": "raw views (no PCA)", "label": spec.name, **rec})

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nBaseline on the SF sample city ({manifest['n_regions']} regions, views {', '.join(manifest['views'])})")
    print(f"device {result.device}; total {total:.1f} s; peak RSS {peak_mb:.0f} MB\n")
    print(f"{'stage':24s} {'seconds':>8s}")
    for stage, sec in manifest["timings_s"].items():
        print(f"{stage:24s} {sec:8.2f}")
    print(f"\nR2 (mean ± std over {args.repeats} repeats of {cfg.prediction.folds}-fold CV; ridge; log1p density)")
    head = f"baseline d={args.dim}"
    print(f"{'label':12s} {'protocol':9s} {head:>16s} {'raw views':>16s} {'gbm on baseline':>16s}")
    table = {}
    for m in result.metrics:
        table[(m["label"], m["protocol"], m["model"])] = (m["r2_mean"], m["r2_std"])
    raw_table = {(r["label"], r["protocol"]): (r["r2_mean"], r["r2_std"]) for r in rows}
    for spec in cfg.labels:
        for protocol in ("shuffled", "spatial"):
            b = table.get((spec.name, protocol, "ridge"), (np.nan, np.nan))
            g = table.get((spec.name, protocol, "gbm"), (np.nan, np.nan))
            r = raw_table.get((spec.name, protocol), (np.nan, np.nan))
            print(f"{spec.name:12s} {protocol:9s} {b[0]:8.3f} ± {b[1]:5.3f} {r[0]:8.3f} ± {r[1]:5.3f} "
                  f"{g[0]:8.3f} ± {g[1]:5.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"timings_s": manifest["timings_s"], "total_s": total,
                                               "peak_rss_mb": peak_mb, "metrics": result.metrics,
                                               "raw_views": rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
