"""Benchmark: how every stage of a RegionLens run grows with the number of regions.

Builds synthetic cities of 10,000 / 50,000 / 250,000 regions and runs the whole job (the same
:func:`backend.pipeline.run_pipeline` the plugin and the CLI run) once per method and size, each in its
own child process, and prints per method and stage the wall time, the peak RSS of the stage and the
longest gap between two progress reports; then, per method and stage, the growth exponent ``b`` of a
least-squares fit ``seconds ~ a * N^b`` over the sizes that finished (1 = linear, 2 = quadratic).

The synthetic city (written once per size into ``--out``, reused by later runs):

* regions: square-ish polygons on a grid (cell side ``--cell-m``, default 300 m, about a US block group in a
  dense city); the grid nodes are jittered, so neighbouring cells still share their edges; a projected CRS
  (UTM 10N);
* POIs: a Poisson number per region around ``--pois-per-region`` (default 40: 10 M POIs at 250,000 regions),
  with a smooth density field (dense centres, sparse edges), 26 categories with Zipf-like frequencies, no
  names (POI texts are the templated category descriptions);
* a 3-band 8-bit raster at 30 m covering the city (a smooth field plus noise);
* a label ``population`` that follows the POI density field plus noise, predicted as a log1p density.

Each run uses the run configuration's defaults for clustering (``k = "auto"``, 4..12) and prediction (ridge
and gradient boosting, 5 folds, 3 repeats, shuffled and spatial protocols), the ``standard`` spatial context
(adjacency ring 1 and 1 km), figures off, and a *fixed, short training length* per method
(:data:`METHODS`; training time is linear in the number of epochs, so the growth with N is what counts).
``fusion`` runs with the baseline as its other method, as a user would run it.

Usage (one benchmark process at a time; it takes hours at 250,000 regions)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/backend/bin/python bench/scale.py --sizes 10000,50000 \\
        --methods baseline,calliper,cookie,hafusion,fusion --json out/scale/scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess  # nosec B404
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Methods and the parameters the benchmark runs them with (short, fixed training lengths).
METHODS: dict[str, dict[str, Any]] = {
    "baseline": {"dim": 32, "params": {}},
    "calliper": {"dim": 128, "params": {"epochs": 2, "patience": 0, "val_share": 0.0}},
    "cookie": {"dim": 64, "params": {"stage1_epochs": 3, "stage2_epochs": 3, "image_encoder": "stats",
                                     "modalities": "poi,image"}},
    "hafusion": {"dim": 144, "params": {"config": "scalable", "epochs": 3}},
    "fusion": {"dim": 32, "params": {}},
}
#: Stage names of the pipeline (``progress.stage``) -> short names in the table.
STAGES = {"read inputs": "read", "build views": "views", "cluster": "cluster", "predict": "predict",
          "write outputs": "write"}
#: How often a run writes its stage in progress to its partial record (seconds).
PARTIAL_EVERY_S = 10.0
CATEGORIES = [f"category_{i:02d}" for i in range(26)]
CRS = "EPSG:32610"
ORIGIN = (540_000.0, 4_170_000.0)


# ------------------------------------------------------------------------------------------- city


def _field(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """A smooth positive field on [0, 1]^2: a few Gaussian centres plus waves (the city's density)."""
    rng = np.random.default_rng(seed)
    out = np.full(np.shape(u), 0.15)
    for _ in range(6):
        cx, cy, s, w = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2), rng.uniform(0.5, 2.0)
        out += w * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * s * s))
    out += 0.1 * (1 + np.sin(9 * u) * np.cos(7 * v))
    return out / out.mean()


def make_city(n: int, folder: Path, pois_per_region: float = 40.0, cell_m: float = 300.0,
              seed: int = 0) -> dict[str, Any]:
    """Write the synthetic city of about ``n`` regions into ``folder`` (reused when already there).

    Returns:
        ``{"regions", "pois", "raster"}`` paths and counts.
    """
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    info_path = folder / "city.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    rng = np.random.default_rng(seed)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    # jittered grid nodes: every cell is a quadrilateral sharing its edges with its neighbours
    nx_, ny_ = np.meshgrid(np.arange(cols + 1, dtype=float), np.arange(rows + 1, dtype=float))
    jit = rng.uniform(-0.2, 0.2, size=(2, rows + 1, cols + 1))
    gx = ORIGIN[0] + (nx_ + jit[0]) * cell_m
    gy = ORIGIN[1] + (ny_ + jit[1]) * cell_m
    r, c = np.divmod(np.arange(n), cols)
    ring = np.stack([
        np.stack([gx[r, c], gy[r, c]], axis=1), np.stack([gx[r, c + 1], gy[r, c + 1]], axis=1),
        np.stack([gx[r + 1, c + 1], gy[r + 1, c + 1]], axis=1), np.stack([gx[r + 1, c], gy[r + 1, c]], axis=1),
        np.stack([gx[r, c], gy[r, c]], axis=1),
    ], axis=1)
    polygons = shapely.polygons(ring)
    u, v = (c + 0.5) / cols, (r + 0.5) / rows
    density = _field(u, v, seed)
    area_km2 = shapely.area(polygons) / 1e6
    population = np.round(rng.lognormal(np.log(8000 * density) - 0.08, 0.4) * area_km2).astype(int)
    regions = gpd.GeoDataFrame({"region": [f"r{i:07d}" for i in range(n)], "population": population},
                               geometry=polygons, crs=CRS)
    regions.to_file(folder / "regions.gpkg", layer="regions", driver="GPKG")

    # POIs: a Poisson count per region, uniform inside the region's bounding square, then kept inside by
    # construction (points drawn in the cell's parametric square are inside the convex quadrilateral)
    counts = rng.poisson(pois_per_region * density)
    owner = np.repeat(np.arange(n), counts)
    s, t = rng.random(len(owner)), rng.random(len(owner))
    q = ring[owner]
    pts = ((1 - s)[:, None] * (1 - t)[:, None] * q[:, 0] + s[:, None] * (1 - t)[:, None] * q[:, 1]
           + s[:, None] * t[:, None] * q[:, 2] + (1 - s)[:, None] * t[:, None] * q[:, 3])
    zipf = 1.0 / np.arange(1, len(CATEGORIES) + 1)
    cat = rng.choice(len(CATEGORIES), size=len(owner), p=zipf / zipf.sum())
    pois = gpd.GeoDataFrame({"category": np.asarray(CATEGORIES)[cat]},
                            geometry=shapely.points(pts), crs=CRS)
    pois.to_file(folder / "pois.gpkg", layer="pois", driver="GPKG")
    del pois, pts, q, owner

    # raster: 30 m, 3 bands, a smooth field (upsampled) plus noise
    res = 30.0
    x0, y0 = float(gx.min()) - res, float(gy.max()) + res
    width = int(math.ceil((gx.max() - gx.min()) / res)) + 2
    height = int(math.ceil((gy.max() - gy.min()) / res)) + 2
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8", "crs": CRS,
               "transform": from_origin(x0, y0, res, res), "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate"}
    with rasterio.open(folder / "image.tif", "w", **profile) as dst:
        for row0 in range(0, height, 1024):
            h = min(1024, height - row0)
            yy, xx = np.mgrid[row0:row0 + h, 0:width]
            base = _field(xx / width, 1 - yy / height, seed)
            for b in range(3):
                band = 60 + 40 * base * (1 + 0.3 * b) + rng.normal(0, 12, size=base.shape)
                dst.write(np.clip(band, 0, 255).astype(np.uint8), b + 1, window=((row0, row0 + h), (0, width)))
    info = {"regions": str(folder / "regions.gpkg"), "pois": str(folder / "pois.gpkg"),
            "raster": str(folder / "image.tif"), "n_regions": n, "n_pois": int(counts.sum()),
            "raster_px": [width, height]}
    info_path.write_text(json.dumps(info, indent=2))
    return info


def city_config(city: dict[str, Any], method: str, output_dir: Path, repeats: int) -> dict[str, Any]:
    """The run configuration of one benchmark run."""
    methods = [{"name": method, **METHODS[method]}]
    if method == "fusion":
        methods.append({"name": "baseline", **METHODS["baseline"]})
    return {
        "output_dir": str(output_dir),
        "overwrite": True,
        "seed": 0,
        "device": "cpu",
        "figures": False,
        "regions": {"path": city["regions"], "id_field": "region"},
        "pois": {"path": city["pois"], "category_field": "category"},
        "rasters": [{"path": city["raster"], "name": "image"}],
        "labels": [{"name": "population", "field": "population", "target": "density", "log1p": True}],
        "methods": methods,
        "context": "standard",
        "clustering": {"k": "auto"},
        "prediction": {"models": ["ridge", "gbm"], "folds": 5, "repeats": repeats, "spatial": True,
                       "write_model": "ridge"},
    }


# ------------------------------------------------------------------------------------------- child


def _vm_hwm_mb() -> float | None:
    """Peak RSS since the last reset (VmHWM), or None where /proc does not offer it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the peak RSS counter (Linux: ``echo 5 > /proc/self/clear_refs``); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (independent of what else the machine runs)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


#: Progress gaps of at least this many seconds are recorded with the messages around them ...
GAP_NOTED_S = 1.0
#: ... the longest this many per stage (``gaps`` in the JSON: where a stage went quiet).
GAPS_KEPT = 3


class _StageMeter:
    """Seconds, peak RSS and the longest gap between progress reports of every pipeline stage; every finished
    stage is also written to ``partial`` (when given), and so is, every :data:`PARTIAL_EVERY_S` seconds, the
    stage in progress (seconds, CPU seconds, peak RSS so far, the last progress fraction and message), so a run
    stopped part-way still tells which stage it was in and how far that stage got."""

    def __init__(self, partial: Path | None = None) -> None:
        self.partial = partial
        self.rows: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.t0 = time.perf_counter()
        self.cpu0 = _cpu_seconds()
        self.last_report = self.t0
        self.last_written = self.t0
        self.max_gap = 0.0
        self.gaps: list[tuple[float, float, str, str]] = []  # longest gaps: (seconds, CPU s, message before, after)
        self.last_cpu = self.cpu0
        self.fraction = 0.0
        self.message = ""
        self.lock = threading.Lock()

    def start(self, stage: str) -> None:
        with self.lock:
            self._close()
            self.current = stage
            self.t0 = self.last_report = time.perf_counter()
            self.cpu0 = self.last_cpu = _cpu_seconds()
            self.max_gap = 0.0
            self.gaps = []
            _reset_hwm()

    def _gap(self, now: float, after: str) -> None:
        """Record the gap ending now (the longest :data:`GAPS_KEPT` of the stage are kept, with their messages and
        the CPU seconds the process spent in them: far less than the gap's seconds means the process was waiting
        for a core on a busy machine, not working without reporting)."""
        gap, cpu = now - self.last_report, _cpu_seconds()
        self.max_gap = max(self.max_gap, gap)
        if gap >= GAP_NOTED_S:
            self.gaps = sorted([*self.gaps, (gap, cpu - self.last_cpu, self.message, after)],
                               reverse=True)[:GAPS_KEPT]
        self.last_cpu = cpu

    def report(self, fraction: float | None = None, message: str = "") -> None:
        with self.lock:
            now = time.perf_counter()
            self._gap(now, message)
            self.last_report = now
            if fraction is not None:
                self.fraction = float(fraction)
            if message:
                self.message = message
            if self.partial is not None and self.current is not None and now - self.last_written >= PARTIAL_EVERY_S:
                self.last_written = now
                self._write({**self.rows, self.current: {**self._row(now), "unfinished": True,
                                                          "run_fraction": round(self.fraction, 4),
                                                          "last_message": self.message}})

    def _row(self, now: float) -> dict[str, Any]:
        hwm = _vm_hwm_mb()
        return {"seconds": round(now - self.t0, 2), "cpu_s": round(_cpu_seconds() - self.cpu0, 2),
                "peak_rss_mb": round(hwm or float("nan"), 1), "max_gap_s": round(self.max_gap, 2),
                "gaps": [{"s": round(g, 2), "cpu_s": round(c, 2), "after": before, "before": after}
                         for g, c, before, after in self.gaps]}

    def _write(self, rows: dict[str, dict[str, Any]]) -> None:
        if self.partial is not None:
            self.partial.write_text(json.dumps(rows))

    def _close(self) -> None:
        if self.current is None:
            return
        now = time.perf_counter()
        self._gap(now, "(end of stage)")
        self.rows[self.current] = self._row(now)
        self.current = None
        self._write(self.rows)

    def close(self) -> None:
        with self.lock:
            self._close()


def _merge_into(path: Path, res: dict[str, Any]) -> None:
    """Put one run's row into the JSON as it is now (replacing the row of the same method and size), so that
    invocations running side by side on one JSON keep each other's rows; written atomically."""
    rows = json.loads(path.read_text()) if path.is_file() else []
    rows = [r for r in rows if (r["method"], r["n_regions"]) != (res["method"], res["n_regions"])] + [res]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    os.replace(tmp, path)


def _partial_path(out_dir: Path) -> Path:
    """Where a child run records its finished stages as it goes."""
    return out_dir.parent / f"{out_dir.name}.stages.json"


def child(city_dir: Path, method: str, out_dir: Path, repeats: int) -> dict[str, Any]:
    """One run of the pipeline on a synthetic city (in this process); per-stage figures."""
    from backend.config import config_from_dict
    from backend.pipeline import run_pipeline
    from backend.progress import Progress

    city = json.loads((city_dir / "city.json").read_text())
    cfg = config_from_dict(city_config(city, method, out_dir, repeats))
    meter = _StageMeter(_partial_path(out_dir))

    class MeteredProgress(Progress):
        def stage(self, name: str, start: float, end: float) -> Progress:
            meter.start(STAGES.get(name, name.replace("embed: ", "embed ")))
            return super().stage(name, start, end)

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = run_pipeline(cfg, MeteredProgress(callback=lambda _stage, fraction, message:
                                               meter.report(fraction, message)))
    meter.close()
    return {"method": method, "n_regions": city["n_regions"], "n_pois": city["n_pois"], "stages": meter.rows,
            "total_s": round(time.perf_counter() - t0, 1), "total_cpu_s": round(_cpu_seconds() - cpu0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "r2": {f"{m['model']}/{m['protocol']}": round(m["r2_mean"], 3) for m in result.metrics
                   if m["method"] == method}}


# ------------------------------------------------------------------------------------------ parent


def growth_exponent(sizes: list[float], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(N) (least squares); None with fewer than two usable sizes."""
    pts = [(math.log(n), math.log(max(s, 0.01))) for n, s in zip(sizes, seconds, strict=True) if s is not None]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def print_table(results: list[dict[str, Any]]) -> None:
    """The per-method, per-stage table (wall s, CPU s, peak RSS MB, longest progress gap s per size) and the
    fitted growth exponents of the CPU time and of the wall time."""
    sizes = sorted({r["n_regions"] for r in results})
    head = "".join(f"{f'{n:,}: wall':>14s}{'cpu':>8s}{'MB':>7s}{'gap':>6s}" for n in sizes)
    print(f"\n{'method':9s} {'stage':16s}{head}{'exp cpu':>9s}{'exp wall':>9s}")
    for method in dict.fromkeys(r["method"] for r in results):
        runs = {r["n_regions"]: r for r in results if r["method"] == method}
        stages = list(dict.fromkeys(s for r in runs.values() for s in r.get("stages", {})))
        for stage in [*stages, "total"]:
            cells, walls, cpus = "", [], []
            for n in sizes:
                run = runs.get(n)
                row = None if run is None else (
                    {"seconds": run.get("total_s"), "cpu_s": run.get("total_cpu_s"),
                     "peak_rss_mb": run.get("peak_rss_mb"), "max_gap_s": None}
                    if stage == "total" and "error" not in run else run.get("stages", {}).get(stage))
                if row is None or row.get("seconds") is None:
                    why = "" if run is None else ("failed" if "error" in run else "-")
                    cells += f"{why:>14s}{'':>8s}{'':>7s}{'':>6s}"
                    walls.append(None)
                    cpus.append(None)
                    continue
                gap = "" if row.get("max_gap_s") is None else f"{row['max_gap_s']:.1f}"
                cpu = "" if row.get("cpu_s") is None else f"{row['cpu_s']:.1f}"
                # a stage a stopped run was still in: "> seconds so far", left out of the fit
                wall = f"{'>' if row.get('unfinished') else ''}{row['seconds']:.1f}"
                cells += f"{wall:>14s}{cpu:>8s}{row['peak_rss_mb']:>7.0f}{gap:>6s}"
                walls.append(None if row.get("unfinished") else row["seconds"])
                cpus.append(None if row.get("unfinished") else row.get("cpu_s"))
            b_cpu, b_wall = growth_exponent(sizes, cpus), growth_exponent(sizes, walls)
            fmt = lambda b: f"{b:>9.2f}" if b is not None else f"{'':>9s}"  # noqa: E731
            print(f"{method:9s} {stage:16s}{cells}{fmt(b_cpu)}{fmt(b_wall)}")
    for r in results:
        if "error" in r:
            print(f"{r['method']} at {r['n_regions']:,} regions: {r['error']}")
            for stage, row in r.get("stages", {}).items():
                if row.get("unfinished"):
                    print(f"  stopped in stage {stage!r} after {row['seconds']:.0f} s ({row['cpu_s']:.0f} s CPU, "
                          f"{row['peak_rss_mb']:.0f} MB): run at {100 * row['run_fraction']:.1f} %, "
                          f"last message {row['last_message']!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,50000,250000", help="comma-separated region counts")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {list(METHODS)}")
    parser.add_argument("--pois-per-region", type=float, default=40.0)
    parser.add_argument("--cell-m", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3, help="CV repeats of the prediction stage")
    parser.add_argument("--out", default=str(ROOT / "out" / "scale"), help="cities and runs go here")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds one run may take")
    parser.add_argument("--json", help="write (and, when it exists, extend) the results here")
    parser.add_argument("--reuse-baseline", action="store_true",
                        help="keep the baseline rows already in --json for these sizes instead of measuring again")
    parser.add_argument("--table", action="store_true", help="only print the table of the results in --json")
    parser.add_argument("--child", nargs=3, metavar=("CITY_DIR", "METHOD", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        res = child(Path(args.child[0]), args.child[1], Path(args.child[2]), args.repeats)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    if args.table:
        if not args.json or not Path(args.json).is_file():
            parser.error("--table needs --json with the results of earlier runs")
        print_table(sorted(json.loads(Path(args.json).read_text()),
                           key=lambda r: (list(METHODS).index(r["method"]), r["n_regions"])))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if "baseline" not in methods:
        methods.insert(0, "baseline")  # every table has its baseline row, measured in the same run
    out = Path(args.out)
    results: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    if args.json and Path(args.json).is_file():
        earlier = json.loads(Path(args.json).read_text())
        kept = [r for r in earlier if r["method"] == "baseline"] if args.reuse_baseline else []
        redo = {(m, n) for m in methods for n in sizes if not (m == "baseline" and args.reuse_baseline)}
        results = [r for r in earlier if (r["method"], r["n_regions"]) not in redo]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    for n in sizes:
        t0 = time.perf_counter()
        city = make_city(n, out / f"city_{n}", args.pois_per_region, args.cell_m)
        print(f"city of {n:,} regions, {city['n_pois']:,} POIs, raster {city['raster_px']} px "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        for method in methods:
            if method == "baseline" and args.reuse_baseline and any(
                    r["method"] == "baseline" and r["n_regions"] == n and "error" not in r for r in kept):
                continue
            _partial_path(out / f"run_{n}_{method}").unlink(missing_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--repeats", str(args.repeats),
                   "--child", str(out / f"city_{n}"), method, str(out / f"run_{n}_{method}")]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env,  # nosec B603
                                      check=False)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                    killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
                    res = {"method": method, "n_regions": n, "error": f"exit {proc.returncode}{killed}: {tail}"}
                else:
                    res = json.loads(line[len("RESULT "):])
            except subprocess.TimeoutExpired:
                res = {"method": method, "n_regions": n, "error": f"stopped after {args.timeout:.0f} s"}
            partial = _partial_path(out / f"run_{n}_{method}")
            if "error" in res and partial.is_file():  # the stages that finished before it stopped
                res["stages"] = json.loads(partial.read_text())
            res["wall_s"] = round(time.perf_counter() - t0, 1)
            results = [r for r in results if (r["method"], r["n_regions"]) != (method, n)] + [res]
            print(f"{method} at {n:,}: {res.get('total_s', res.get('error'))}", flush=True)
            (out / f"run_{n}_{method}.result.json").write_text(json.dumps(res, indent=2))
            if args.json:
                _merge_into(Path(args.json), res)
    print_table(sorted(results, key=lambda r: (list(METHODS).index(r["method"]), r["n_regions"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
