"""Benchmark: reading POIs from an OpenStreetMap extract (``.osm.pbf``) against the same POIs in a GeoPackage.

Builds a synthetic extract over a small city (10 km x 10 km in San Francisco, UTM 10N) with ``--n`` tagged POI
nodes (default 1,000,000: 11 OSM tag keys, Zipf-like values, a name on every third), one untagged node per ten
POIs (the kind of nodes that make up most of a real extract), and a few tagged closed ways (areas, read as
their centroids), written with pyosmium. The same POIs (the nodes' points and the areas' centroids, with the
``key=value`` category and the name the PBF reader gives them) go into a GeoPackage point layer. Both files and
a grid of regions covering the city are cached in ``--out`` (``--rebuild`` writes them again).

Each file is then read once through :func:`backend.io.vectors.read_pois`, the reader a run uses (regions read
by :func:`backend.io.vectors.read_regions` beforehand, not timed), each in its own child process, so the peak
resident memory (``VmHWM``, the same as ``ru_maxrss``) is that reader's alone. The table gives the features
read, the seconds of ``read_pois``, the peak RSS of the child and its RSS before the read (the imported
libraries), and the ratio to the GeoPackage row, which is the baseline.

Usage (one benchmark process at a time)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/backend/bin/python bench/poi_read.py --json out/bench_poi/poi_read.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess  # nosec B404
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CRS = "EPSG:32610"
ORIGIN = (545_000.0, 4_175_000.0)  # south-west corner of the city, metres in UTM 10N (San Francisco)
SIDE_M = 10_000.0
GRID = 20  # regions: GRID x GRID square cells over the city
#: POI tag keys and a few values each (the reader's default tags); the category is ``key=value``.
TAGS: dict[str, list[str]] = {
    "amenity": ["restaurant", "cafe", "bench", "parking", "bank", "school", "pharmacy", "bar"],
    "shop": ["convenience", "clothes", "supermarket", "bakery", "hairdresser"],
    "leisure": ["park", "playground", "pitch", "fitness_centre"],
    "tourism": ["hotel", "museum", "attraction"],
    "office": ["company", "lawyer", "government"],
    "healthcare": ["doctor", "dentist"],
    "craft": ["carpenter", "brewery"],
    "public_transport": ["platform", "stop_position"],
    "railway": ["station"],
    "historic": ["memorial", "building"],
    "sport": ["tennis", "basketball"],
}
N_AREAS = 50
SOURCES = ("gpkg", "pbf")
LABELS = {"gpkg": "GeoPackage (baseline)", "pbf": "OpenStreetMap .osm.pbf"}


# ------------------------------------------------------------------------------------------- build


def _categories() -> list[str]:
    return [f"{key}={value}" for key, values in TAGS.items() for value in values]


def make_data(n: int, folder: Path, rebuild: bool = False, seed: int = 0) -> dict[str, Any]:
    """Write (or reuse) the extract, the GeoPackage of the same POIs and the regions for ``n`` POI nodes.

    Returns:
        ``{"pbf", "gpkg", "regions"}`` paths and ``n_pois`` (tagged nodes plus areas), ``n_untagged``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"city_{n}"
    info_path = folder / f"{stem}.json"
    if info_path.is_file() and not rebuild:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if all(Path(info[k]).is_file() for k in ("pbf", "gpkg", "regions")):
            return info
    import geopandas as gpd
    import osmium
    from osmium.osm.mutable import Node, Way
    from pyproj import Transformer
    from shapely.geometry import box

    rng = np.random.default_rng(seed)
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    cats = _categories()
    weights = 1.0 / np.arange(1, len(cats) + 1)
    cat_idx = rng.choice(len(cats), size=n, p=weights / weights.sum())
    # dense around a few centres, kept inside the city (margin 5 m off the edges)
    centres = rng.uniform(0.2, 0.8, size=(5, 2)) * SIDE_M
    which = rng.integers(0, len(centres), size=n)
    xy = centres[which] + rng.normal(0.0, SIDE_M / 8, size=(n, 2))
    xy = np.clip(xy, 5.0, SIDE_M - 5.0) + np.asarray(ORIGIN)
    n_untagged = max(n // 10, 1)
    xy_untagged = rng.uniform(5.0, SIDE_M - 5.0, size=(n_untagged, 2)) + np.asarray(ORIGIN)
    area_sw = rng.uniform(100.0, SIDE_M - 200.0, size=(N_AREAS, 2)) + np.asarray(ORIGIN)
    corners = np.array([(0.0, 0.0), (60.0, 0.0), (60.0, 40.0), (0.0, 40.0)])
    area_xy = (area_sw[:, None, :] + corners[None, :, :]).reshape(-1, 2)
    lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
    ulon, ulat = to_lonlat.transform(xy_untagged[:, 0], xy_untagged[:, 1])
    alon, alat = to_lonlat.transform(area_xy[:, 0], area_xy[:, 1])

    pbf = folder / f"{stem}.osm.pbf"
    pbf.unlink(missing_ok=True)
    writer = osmium.SimpleWriter(str(pbf))
    names: list[str | None] = []
    try:
        for i in range(n):
            key, _, value = cats[cat_idx[i]].partition("=")
            tags = {key: value}
            name = f"{value.replace('_', ' ').title()} {i}" if i % 3 == 0 else None
            if name:
                tags["name"] = name
            names.append(name)
            writer.add_node(Node(id=i + 1, location=(float(lon[i]), float(lat[i])), tags=tags))
        for j in range(n_untagged):
            writer.add_node(Node(id=n + 1 + j, location=(float(ulon[j]), float(ulat[j]))))
        first = n + n_untagged + 1
        for k in range(len(area_xy)):
            writer.add_node(Node(id=first + k, location=(float(alon[k]), float(alat[k]))))
        area_names = []
        for a in range(N_AREAS):
            refs = [first + 4 * a + c for c in (0, 1, 2, 3, 0)]
            name = f"Area {a}"
            area_names.append(name)
            writer.add_way(Way(id=a + 1, nodes=refs, tags={"leisure": "park", "name": name}))
    finally:
        writer.close()

    points = gpd.GeoDataFrame(
        {"category": np.asarray(cats, dtype=object)[cat_idx], "name": np.asarray(names, dtype=object)},
        geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=CRS)
    area_pts = gpd.GeoDataFrame(
        {"category": ["leisure=park"] * N_AREAS, "name": area_names},
        geometry=gpd.points_from_xy(area_sw[:, 0] + 30.0, area_sw[:, 1] + 20.0), crs=CRS)
    pois = gpd.GeoDataFrame(np.concatenate([points.to_numpy(), area_pts.to_numpy()]),
                            columns=points.columns, geometry="geometry", crs=CRS)
    gpkg = folder / f"{stem}_pois.gpkg"
    gpkg.unlink(missing_ok=True)
    pois.to_file(gpkg, layer="pois", driver="GPKG", engine="pyogrio")

    side = SIDE_M / GRID
    cells = [box(ORIGIN[0] + i * side, ORIGIN[1] + j * side, ORIGIN[0] + (i + 1) * side, ORIGIN[1] + (j + 1) * side)
             for j in range(GRID) for i in range(GRID)]
    regions = gpd.GeoDataFrame({"rid": [f"r{k}" for k in range(len(cells))]}, geometry=cells, crs=CRS)
    regions_path = folder / "regions.gpkg"
    regions.to_file(regions_path, layer="regions", driver="GPKG", engine="pyogrio")

    info = {"n": n, "pbf": str(pbf), "gpkg": str(gpkg), "regions": str(regions_path), "n_pois": n + N_AREAS,
            "n_untagged": n_untagged, "pbf_mb": round(pbf.stat().st_size / 2**20, 1),
            "gpkg_mb": round(gpkg.stat().st_size / 2**20, 1)}
    info_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


# ------------------------------------------------------------------------------------------- read


def _rss_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (``ru_maxrss`` where /proc is missing)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_once(source: str, info: dict[str, Any]) -> dict[str, Any]:
    """Read one source through ``read_pois`` in this process: features, seconds, RSS before and peak RSS."""
    from backend.config import PoiSource, RegionsSource
    from backend.io.vectors import read_pois, read_regions

    report: list[str] = []
    regions, crs = read_regions(RegionsSource(path=info["regions"], id_field="rid"), report)
    if source == "pbf":
        src = PoiSource(path=info["pbf"])
    else:
        src = PoiSource(path=info["gpkg"], layer="pois", category_field="category", name_field="name")
    rss_before = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    pois = read_pois(src, regions, crs, report)
    seconds = time.perf_counter() - t0
    return {"source": source, "features": len(pois), "seconds": round(seconds, 3),
            "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(_rss_mb("VmHWM"), 1),
            "categories": int(pois["category"].nunique()), "named": int(pois["name"].notna().sum())}


def _child(source: str, info: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", source, "--info", json.dumps(info)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"reading the {source} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: one row per source, the GeoPackage first, ratios to it."""
    base = next(r for r in rows if r["source"] == "gpkg")
    lines = ["| source | features read | seconds | peak RSS MB | RSS before read MB | time vs GeoPackage "
             "| peak RSS vs GeoPackage |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {LABELS[r['source']]} | {r['features']:,} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} "
                     f"| {r['rss_before_mb']:.0f} | {r['seconds'] / base['seconds']:.2f}x "
                     f"| {r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the data, read each source in its own child process and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="tagged POI nodes in the extract (default 1,000,000)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench_poi", help="cache folder of the data")
    ap.add_argument("--rebuild", action="store_true", help="write the extract and the GeoPackage again")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--child", choices=SOURCES, help=argparse.SUPPRESS)
    ap.add_argument("--info", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(read_once(args.child, json.loads(args.info))))
        return 0
    if args.n < 1:
        ap.error("--n must be at least 1")
    t0 = time.perf_counter()
    info = make_data(args.n, args.out, rebuild=args.rebuild)
    build_s = time.perf_counter() - t0
    print(f"data: {info['n_pois']:,} POIs ({info['n']:,} tagged nodes + {N_AREAS} areas), "
          f"{info['n_untagged']:,} untagged nodes; {info['pbf']} ({info['pbf_mb']} MB), "
          f"{info['gpkg']} ({info['gpkg_mb']} MB); ready in {build_s:.1f} s", flush=True)
    rows = [_child(source, info) for source in SOURCES]
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        base = rows[0]
        result = {"n": info["n"], "n_pois": info["n_pois"], "n_untagged": info["n_untagged"],
                  "pbf_mb": info["pbf_mb"], "gpkg_mb": info["gpkg_mb"], "rows": rows,
                  "ratio": {"seconds": round(rows[1]["seconds"] / base["seconds"], 3),
                            "peak_rss_mb": round(rows[1]["peak_rss_mb"] / base["peak_rss_mb"], 3)},
                  "cpu": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
