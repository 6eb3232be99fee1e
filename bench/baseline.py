"""Benchmark: the baseline embedder on the bundled San Francisco sample city.

Runs the whole demo job once (all stages, figures off) and prints wall time per stage and the peak
memory (RSS) of the process. Then, on the same views, targets and folds, compares the baseline
embedding with reference feature sets measured in the same run:

- raw views without PCA (what the baseline compresses),
- image statistics alone and log1p POI counts alone (each view on its own),
- the baseline with the 1 km neighbourhood mean appended (``neighbourhood_m = 1000``).

Ridge (penalty by inner CV on the training folds), out-of-fold, 5-fold shuffled and spatially blocked
CV repeated over seeds; targets are log1p densities (per km2). Usage:

    .venv/backend/bin/python bench/baseline.py [--repeats 3] [--dim 32] [--json OUT.json]
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
from backend.models import get_embedder  # noqa: E402
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
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    city = read_city(cfg)
    views = build_views(city)
    feature_sets = {
        f"baseline d={args.dim}": get_embedder("baseline", dim=args.dim).fit_transform(views).to_numpy(),
        f"baseline d={args.dim} + 1 km mean": get_embedder("baseline", dim=args.dim, neighbourhood_m=1000.0)
        .fit_transform(views).to_numpy(),
        "raw views (no PCA)": np.nan_to_num(np.hstack([t.to_numpy(dtype=float) for t in views.tables.values()])),
        "image statistics only": views.tables["image_stats"].to_numpy(dtype=float),
        "log1p POI counts only": np.log1p(views.tables["poi_counts"].to_numpy(dtype=float)),
    }
    rows = []
    for spec in cfg.labels:
        target = make_target(city.labels[spec.name].reindex(views.region_ids), spec, views.areas_km2, None)
        idx = views.region_ids.get_indexer(target.y.index)
        for name, x in feature_sets.items():
            res = evaluate_label(x[idx], target.y.to_numpy(), np.asarray(views.centroids)[idx], models=("ridge",),
                                 folds=cfg.prediction.folds, repeats=args.repeats, spatial=True, seed=cfg.seed)
            for rec in res.metrics.to_dict("records"):
                rows.append({"features": name, "label": spec.name, **rec})

    print(f"\nBaseline on the SF sample city: {manifest['n_regions']} regions, views {', '.join(manifest['views'])}")
    print(f"device {result.device}; whole job {total:.1f} s (ridge + gbm, {args.repeats} repeats, both protocols); "
          f"peak RSS {peak_mb:.0f} MB\n")
    print(f"{'stage':24s} {'seconds':>8s}")
    for stage, sec in manifest["timings_s"].items():
        print(f"{stage:24s} {sec:8.2f}")
    for protocol in ("shuffled", "spatial"):
        print(f"\nR2, {protocol} {cfg.prediction.folds}-fold CV, mean ± std over {args.repeats} repeats "
              "(ridge, log1p density per km2)")
        labels = [s.name for s in cfg.labels]
        print(f"{'features':34s}" + "".join(f"{lab:>16s}" for lab in labels))
        for name in feature_sets:
            cells = []
            for lab in labels:
                r = next(r for r in rows if r["features"] == name and r["label"] == lab and r["protocol"] == protocol)
                cells.append(f"{r['r2_mean']:8.3f} ± {r['r2_std']:.3f}")
            print(f"{name:34s}" + "".join(f"{c:>16s}" for c in cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"timings_s": manifest["timings_s"], "total_s": total,
                                               "peak_rss_mb": peak_mb, "pipeline_metrics": result.metrics,
                                               "comparison": rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
