"""Leaderboard: every RegionLens method at its shipped defaults, fusion, the raw views and srai, on every city.

One command, one evaluation path: every row is scored by the backend's own prediction code
(``backend.tasks.prediction`` and ``backend.tasks.fusion``: same folds, same scaler, same sample standard
deviation, ddof 1). Nothing is tuned per task or per city and nothing is chosen on test folds: every method
runs with the defaults a user gets (HAFusion's ``preset`` left at its default for every city), fusion chooses
its blocks inside each training fold only.

Cities:

* the bundled sample city (``--sample``, on unless ``--no-sample``): the demo's six labels as log1p densities
  per km2; RidgeCV, 5-fold shuffled and spatially blocked CV over 3 fold seeds;
* every ``--data DIR`` in the ``../shared/data/hafusion_nyc`` format (repeatable): labels as counts; RidgeCV and
  the public code's Ridge(alpha=1) with negative predictions clipped, 10-fold shuffled CV over 5 fold seeds;
  with ``--protocol reference`` also the public code's metric definition (SPEC 4.1: pooled out-of-fold
  predictions, its fold counts, regions with zero check-ins dropped where it drops them).

Learned methods train 3 seeds (``--seeds``); their row pools the scores of every (training seed, fold seed)
pair, and a second row, ``<method> x3``, is the seed ensemble (each fold's prediction the mean of the three
seeds' models). Fusion's row pools fusion run once per training seed on that seed's embeddings.

Rows: raw views (each alone, standardised as in the baseline, and all together), ``baseline``,
``baseline + 1 km`` (the baseline with its 1 km neighbour mean; cities with geometry), the learned methods,
``fusion``, and srai 0.10's CountEmbedder and ContextualCountEmbedder (computed in the separate environment
``.venv/bench``; see ``make bench-venv``).

Embeddings are cached per (city, method, seed) under ``out/leaderboard_cache/`` so an interrupted run resumes.

Usage (from the repository root; ``make leaderboard`` runs the full board in the background):

    OMP_NUM_THREADS=1 .venv/backend/bin/python bench/leaderboard.py --data ../shared/data/hafusion_nyc \\
        --protocol reference --json-dir out/leaderboard
    .venv/backend/bin/python bench/leaderboard.py --no-sample --data DIR --methods baseline hafusion fusion
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.tasks.prediction import _std, cross_validate, single_fit_predict  # noqa: E402

CACHE = ROOT / "out" / "leaderboard_cache"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hafusion_nyc"
BENCH_PYTHON = ROOT / ".venv" / "bench" / "bin" / "python"
#: Learned methods, cheapest first (the run trains them in this order).
LEARNED = ("cookie", "hafusion", "calliper", "refound")
SRAI = ("srai_count", "srai_contextual", "srai_contextual_d3")
FIXED = ("raw", "baseline", "baseline_1km")
ALL_METHODS = (*FIXED, *SRAI, *LEARNED, "fusion")
METRICS = ("mae", "rmse", "r2")


@dataclass
class City:
    """One benchmark city: views, labels (rows into the views and model-space values), folds."""

    name: str
    views: Any
    labels: dict[str, tuple[np.ndarray, np.ndarray]]
    coords: np.ndarray | None
    folds: int
    fold_seeds: int
    models: tuple[str, ...]
    targets: dict[str, np.ndarray] = field(default_factory=dict)  # HAFusion's training targets, if given
    sample_dir: Path | None = None  # the sample city's files (for srai)


# ------------------------------------------------------------------------------------------------ cities
def sample_city(needs: set[str]) -> City:
    """The bundled sample city with the demo's labels (log1p densities per km2), read as the CooKIE bench does."""
    from backend.demo import SAMPLE_DIR
    from bench.cookie import load_sf

    views, tasks, coords = load_sf(frozenset(needs))
    labels = {name: (task.rows, task.y) for name, task in tasks.items()}
    return City("sample", views, labels, coords, folds=5, fold_seeds=3, models=("ridge",), sample_dir=SAMPLE_DIR)


def matrix_city(folder: Path) -> City:
    """A city in the ``hafusion_nyc`` format (labels as counts)."""
    from bench.hafusion import INPUTS, load_city

    if not any((folder / f"{name}.npy").is_file() for name in [*INPUTS.values(), "mob_dist"]):
        raise SystemExit(f"{folder}: no benchmark inputs ({'.npy, '.join(INPUTS.values())}.npy or mob_dist.npy) found; "
                         "give a folder in the ../shared/data/hafusion_nyc format.")
    views, targets, labels = load_city(folder)
    rows = np.arange(len(views))
    return City(folder.name, views, {t: (rows, y) for t, y in labels.items()}, None, folds=10, fold_seeds=5,
                models=("ridge", "ridge1"), targets=targets)


def reference_plan(city: City, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The public code's folds and rows for one task (SPEC 4.1): rows kept and the fold of each row.

    The city is recognised by its number of regions (Manhattan 180, Chicago 77, San Francisco 175), a property
    of the data, not of any score; other sizes use Manhattan's definition.
    """
    from sklearn.model_selection import KFold

    rows, y = city.labels[task]
    n = len(rows)
    kind = {77: "chicago", 175: "sf"}.get(n, "ny")
    keep = np.ones(n, dtype=bool)
    if kind != "ny" and task == "checkIn":
        keep = y > 0
    k, shuffle = (25, True) if kind == "chicago" else (10, kind == "sf")
    fold_of = np.empty(int(keep.sum()), dtype=int)
    split = KFold(k, shuffle=shuffle, random_state=2024 if shuffle else None).split(np.zeros((len(fold_of), 1)))
    for f, (_, test) in enumerate(split):
        fold_of[test] = f
    return keep, fold_of


# ----------------------------------------------------------------------------------------------- caching
def cached(city: str, method: str, seed: int, make: Any) -> tuple[np.ndarray, float]:
    """The embedding of (city, method, seed) from the cache, computed by ``make()`` when missing."""
    folder = CACHE / city / method
    path, meta = folder / f"seed{seed}.npy", folder / f"seed{seed}.json"
    if path.is_file() and meta.is_file():
        return np.load(path, allow_pickle=False), float(json.loads(meta.read_text())["seconds"])
    t0 = time.perf_counter()
    emb = np.asarray(make(), dtype=float)
    seconds = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), emb)
    Path(path.with_suffix(".tmp.npy")).replace(path)
    meta.write_text(json.dumps({"seconds": round(seconds, 2), "shape": list(emb.shape)}))
    return emb, seconds


def learned_embedding(city: City, method: str, seed: int) -> tuple[np.ndarray, float]:
    """One training seed of a learned method at its shipped defaults (CPU)."""
    from backend.models import EMBEDDERS, get_embedder

    def make() -> np.ndarray:
        import torch

        torch.set_num_threads(1)
        model = get_embedder(method, dim=EMBEDDERS[method].default_dim, seed=seed, device="cpu")
        if city.targets and hasattr(model, "set_targets"):
            model.set_targets(**city.targets)
        return model.fit_transform(city.views).to_numpy()

    return cached(city.name, method, seed, make)


def srai_embeddings(city: City, python: Path) -> dict[str, np.ndarray]:
    """srai's embeddings of the sample city (computed once in the bench environment, then cached)."""
    out = {}
    missing = [m for m in SRAI if not (CACHE / city.name / m / "seed0.npy").is_file()]
    if missing and city.sample_dir is not None and python.is_file():
        folder = CACHE / city.name
        folder.mkdir(parents=True, exist_ok=True)
        ids = [str(i) for i in city.views.region_ids]
        (folder / "region_ids.json").write_text(json.dumps(ids))
        t0 = time.perf_counter()
        proc = subprocess.run([str(python), str(ROOT / "bench" / "srai_embed.py"), str(city.sample_dir),
                               str(folder)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"  srai failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
        else:
            print(f"  srai embeddings in {time.perf_counter() - t0:.0f} s", flush=True)
    for m in SRAI:
        path = CACHE / city.name / m / "seed0.npy"
        if path.is_file():
            out[m] = np.load(path, allow_pickle=False)
    return out


# ----------------------------------------------------------------------------------------------- scoring
class Board:
    """Scores of one city: method -> (protocol, model) -> task -> per-repeat metric records."""

    def __init__(self, city: City, reference: bool) -> None:
        self.city = city
        self.reference = reference
        self.scores: dict[str, dict[tuple[str, str], dict[str, list[dict[str, float]]]]] = {}
        self.seconds: dict[str, float] = {}
        self.notes: dict[str, Any] = {}

    def _add(self, method: str, res: Any, task: str, protocol_name: str | None = None) -> None:
        per = self.scores.setdefault(method, {})
        for rec in res.per_repeat.to_dict("records"):
            key = (protocol_name or rec["protocol"], rec["model"])
            per.setdefault(key, {}).setdefault(task, []).append({k: rec[k] for k in METRICS})

    def score(self, method: str, mats: list[np.ndarray], ensemble: bool = False) -> None:
        """Score feature matrices (one per training seed; pooled, or averaged as an ensemble)."""
        from backend.tasks.prediction import ensemble_fit_predict, evaluate_ensemble, evaluate_label

        c = self.city
        t0 = time.perf_counter()
        for task, (rows, y) in c.labels.items():
            coords = None if c.coords is None else c.coords[rows]
            groups = [mats] if ensemble else [[m] for m in mats]
            for group in groups:
                sub = [m[rows] for m in group]
                if len(sub) > 1:
                    res = evaluate_ensemble(sub, y, coords, models=c.models, folds=c.folds, repeats=c.fold_seeds,
                                            spatial=coords is not None)
                else:
                    res = evaluate_label(sub[0], y, coords, models=c.models, folds=c.folds, repeats=c.fold_seeds,
                                         spatial=coords is not None)
                self._add(method, res, task)
                if self.reference:
                    keep, fold_of = reference_plan(c, task)
                    fp = (ensemble_fit_predict(sub, y) if len(sub) > 1 else single_fit_predict(sub[0], y))
                    res = cross_validate(_subset(fp, keep), y[keep], {"reference": [fold_of]}, c.models)
                    self._add(method, res, task)
        self.seconds[method] = self.seconds.get(method, 0.0) + time.perf_counter() - t0

    def score_fusion(self, blocks_per_seed: list[dict[str, np.ndarray]], name: str = "fusion") -> None:
        """Fusion once per block set (one per training seed, or the seed ensembles' one), pooled."""
        from backend.tasks.fusion import evaluate_fusion, select_rows

        c = self.city
        t0 = time.perf_counter()
        choices: dict[str, Any] = {}
        for s, blocks in enumerate(blocks_per_seed):
            for task, (rows, y) in c.labels.items():
                coords = None if c.coords is None else c.coords[rows]
                sub = select_rows(blocks, rows)
                res, ch = evaluate_fusion(sub, y, coords, models=c.models, folds=c.folds, repeats=c.fold_seeds,
                                          spatial=coords is not None)
                self._add(name, res, task)
                choices.setdefault(task, {})[f"seed{s}"] = {p: v.describe() for p, v in ch.items()}
                if self.reference:
                    keep, fold_of = reference_plan(c, task)
                    res, ch = evaluate_fusion(select_rows(sub, keep), y[keep], None, models=c.models,
                                              plans={"reference": [fold_of]})
                    self._add(name, res, task)
                    choices[task][f"seed{s}"]["reference"] = ch["reference"].describe()
        self.notes[f"{name}_choices"] = choices
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def records(self) -> dict[str, dict[str, list[dict[str, float]]]]:
        """``method[@protocol][@ridge_alpha1] -> task -> per-repeat records`` (what :meth:`summary` pools)."""
        out: dict[str, Any] = {}
        for method, per in self.scores.items():
            for (protocol, model), tasks in per.items():
                key = method + ("" if protocol == "shuffled" else f"@{protocol}") + \
                    ("@ridge_alpha1" if model == "ridge1" else "")
                out[key] = tasks
        return out

    def summary(self) -> dict[str, dict[str, dict[str, list[float | None]]]]:
        """``method[@protocol][@ridge_alpha1] -> task -> metric -> [mean, std]`` (std with ddof 1)."""
        return pool_summary(self.records())


def pool_summary(records: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    """Mean and sample std (ddof 1) of every metric over each row's records."""
    return {key: {t: {k: [float(np.mean([r[k] for r in recs])), _std([r[k] for r in recs])] for k in METRICS}
                  for t, recs in tasks.items()} for key, tasks in records.items()}


def _subset(fp: Any, keep: np.ndarray) -> Any:
    """A fold fit on the rows ``keep`` of the full matrices (for the reference protocol's dropped rows)."""
    idx = np.flatnonzero(keep)

    def fit_predict(model: str, seed: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        full_train = np.zeros(len(keep), dtype=bool)
        full_test = np.zeros(len(keep), dtype=bool)
        full_train[idx[train]] = True
        full_test[idx[test]] = True
        return fp(model, seed, full_train, full_test)

    return fit_predict


# ---------------------------------------------------------------------------------------------- the run
def run_city(city: City, methods: list[str], seeds: list[int], reference: bool, bench_python: Path,
             write: Any) -> Board:
    """Every requested method on one city; ``write(board)`` after each method (partial results survive)."""
    from backend.errors import InputError
    from backend.models import EMBEDDERS, BaselineEmbedder, FusionEmbedder
    from backend.models.ensemble import combine_seeds
    from backend.views._base import Views

    board = Board(city, reference)
    views = city.views
    base = BaselineEmbedder(dim=32).fit(views)
    baseline = base.transform(views).to_numpy()
    available = [v for v in BaselineEmbedder.uses_views if v in views.available()]
    if "raw" in methods:
        for v in available:
            only = Views(region_ids=views.region_ids, tables={v: views.tables[v]} if v in views.tables else {},
                         mobility=views.mobility if v == "mobility" else None)
            board.score(f"raw {v}", [BaselineEmbedder(dim=1).fit(only).standardised(only)])
        if len(available) > 1:
            board.score("raw views (all)", [base.standardised(views)])
        write(board)
    if "baseline" in methods:
        board.score("baseline", [baseline])
    if "baseline_1km" in methods and views.centroids is not None:
        board.score("baseline + 1 km", [BaselineEmbedder(dim=32, neighbourhood_m=1000.0).fit_transform(views)
                                        .to_numpy()])
    write(board)
    if any(m in methods for m in SRAI):
        for name, emb in srai_embeddings(city, bench_python).items():
            if name in methods:
                board.score(name, [emb])
        write(board)
    learned: dict[str, list[np.ndarray]] = {}
    for method in LEARNED:
        if method not in methods:
            continue
        embs = []
        try:
            for s in seeds:
                emb, sec = learned_embedding(city, method, s)
                print(f"  {city.name}: {method} seed {s}: {emb.shape[1]}-d, trained in {sec:.0f} s", flush=True)
                board.seconds[method] = board.seconds.get(method, 0.0) + sec
                embs.append(emb)
        except InputError as exc:
            print(f"  {city.name}: {method} cannot run here: {exc}", flush=True)
            board.notes.setdefault("not_applicable", {})[method] = str(exc)
            continue
        learned[method] = embs
        board.score(method, embs)
        if len(embs) > 1:
            board.score(f"{method} x{len(embs)}", embs, ensemble=True)
            board.seconds[f"{method} x{len(embs)}"] = board.seconds[method]
        write(board)
    if "fusion" in methods:
        blocks_per_seed = []
        for i in range(len(seeds)):
            sources = {"baseline": baseline, **{m: e[i] for m, e in learned.items()}}
            fusion = FusionEmbedder().set_sources({k: pd.DataFrame(v, index=views.region_ids)
                                                   for k, v in sources.items()})
            fusion.fit(views)
            blocks_per_seed.append(fusion.blocks(views))
        board.notes["fusion_blocks"] = list(blocks_per_seed[0])
        board.score_fusion(blocks_per_seed)
        write(board)
        if len(seeds) > 1 and learned:
            # what a run with `ensemble = k` on every learned method gives fusion (as the pipeline does):
            # each source's embedding is the one its seed ensemble writes (combine_seeds), and prediction
            # stacks the ensemble itself (one regressor per member, averaged)
            frame = lambda x: pd.DataFrame(x, index=views.region_ids)  # noqa: E731
            sources = {"baseline": baseline, **{m: combine_seeds(e, EMBEDDERS[m].default_dim)
                                                for m, e in learned.items()}}
            fusion = FusionEmbedder().set_sources({k: frame(v) for k, v in sources.items()},
                                                  members={m: [frame(x) for x in e] for m, e in learned.items()})
            fusion.fit(views)
            name = f"fusion x{len(seeds)}"
            board.score_fusion([fusion.prediction_blocks(views)], name=name)
            write(board)
    return board


def print_board(board: Board) -> str:
    """Print and return the board's markdown tables."""
    text = render(board.city.name, board.summary(), board.seconds)
    print(text, flush=True)
    return text


def render(city: str, summary: dict[str, Any], seconds: dict[str, float]) -> str:
    """Markdown tables (R2 mean ± std) per protocol and regressor, with time per method (training + scoring)."""
    tasks = list(next(iter(summary.values()))) if summary else []
    lines = []
    suffixes = sorted({k.partition("@")[2] for k in summary}, key=lambda s: (s != "", s))
    titles = {"": "shuffled CV, RidgeCV", "spatial": "spatially blocked CV, RidgeCV",
              "ridge_alpha1": "shuffled CV, Ridge(1) clipped (public code's regressor)",
              "reference": "public code's metric definition (SPEC 4.1), RidgeCV",
              "reference@ridge_alpha1": "public code's metric definition (SPEC 4.1), Ridge(1) clipped"}
    for sfx in suffixes:
        lines.append(f"\n**{city}: {titles.get(sfx, sfx)}** (R2, mean ± std)\n")
        lines.append("| method | " + " | ".join(tasks) + " | time (s) |")
        lines.append("|---" * (len(tasks) + 2) + "|")
        for key, per in summary.items():
            method, _, rest = key.partition("@")
            if rest != sfx:
                continue
            cells = []
            for t in tasks:
                mean, std = per.get(t, {}).get("r2", [None, None])
                cells.append("–" if mean is None else f"{mean:.3f}" + ("" if std is None or np.isnan(std)
                                                                        else f" ± {std:.3f}"))
            sec = seconds.get(method)
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {'' if sec is None else f'{sec:.0f}'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="a city folder in the hafusion_nyc format (repeatable)")
    parser.add_argument("--no-sample", action="store_true", help="skip the bundled sample city")
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS))
    parser.add_argument("--seeds", type=int, default=3, help="training seeds of every learned method")
    parser.add_argument("--seed-list", type=int, nargs="+", help="these training seeds instead of 0..seeds-1 "
                        "(split a long run over processes; pool their folders with --render ... --pool)")
    parser.add_argument("--protocol", choices=["honest", "reference"], default="honest",
                        help="reference: also the public code's metric definition (cities given with --data)")
    parser.add_argument("--json", type=Path, help="write method -> task -> {mae, rmse, r2} -> [mean, std] (one city)")
    parser.add_argument("--json-dir", type=Path, help="write <city>.json (and <city>.runs.json) per city here")
    parser.add_argument("--markdown", type=Path, help="write the tables here too")
    parser.add_argument("--bench-python", type=Path, default=BENCH_PYTHON, help="python of the srai environment")
    parser.add_argument("--render", type=Path, nargs="+", metavar="DIR",
                        help="only print the tables of the <city>.json files runs wrote into these folders (partial "
                             "or not; rows of a later folder replace those of an earlier one)")
    parser.add_argument("--pool", type=Path, nargs="+", default=[], metavar="DIR",
                        help="with --render: pool the per-repeat records of runs over disjoint --seed-list's")
    args = parser.parse_args()
    if args.render:
        summaries: dict[str, dict[str, Any]] = {}
        seconds: dict[str, dict[str, float]] = {}
        for folder in args.render:
            for path in sorted(folder.glob("*.json")):
                if path.name.endswith((".runs.json", ".records.json")):
                    continue
                summaries.setdefault(path.stem, {}).update(json.loads(path.read_text()))
                runs = path.with_suffix(".runs.json")
                if runs.is_file():
                    seconds.setdefault(path.stem, {}).update(json.loads(runs.read_text()).get("seconds", {}))
        pooled: dict[str, dict[str, Any]] = {}
        pooled_seconds: dict[str, dict[str, float]] = {}  # disjoint seeds: times add up
        for folder in args.pool:
            for path in sorted(folder.glob("*.records.json")):
                city = path.name.removesuffix(".records.json")
                for key, tasks in json.loads(path.read_text()).items():
                    for t, recs in tasks.items():
                        pooled.setdefault(city, {}).setdefault(key, {}).setdefault(t, []).extend(recs)
                runs = folder / f"{city}.runs.json"
                if runs.is_file():
                    for m, sec in json.loads(runs.read_text()).get("seconds", {}).items():
                        pooled_seconds.setdefault(city, {})[m] = pooled_seconds.get(city, {}).get(m, 0.0) + sec
        for city, recs in pooled.items():
            summaries.setdefault(city, {}).update(pool_summary(recs))
            seconds.setdefault(city, {}).update(pooled_seconds.get(city, {}))
        for city, summary in summaries.items():
            print(render(city, summary, seconds.get(city, {})))
        return 0
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    import torch

    torch.set_num_threads(1)
    needs = {"chips"} if {"cookie", "refound"} & set(args.methods) else set()
    if "refound" in args.methods:
        needs.add("samples")
    cities: list[Any] = [] if args.no_sample else [lambda: sample_city(needs)]
    cities += [lambda d=d: matrix_city(d) for d in args.data]
    if args.json and len(cities) != 1:
        parser.error("--json is for one city; use --json-dir for several")
    texts = []
    seeds = args.seed_list or list(range(args.seeds))
    t_all = time.perf_counter()
    for load in cities:
        city = load()
        print(f"\n{city.name}: {len(city.views)} regions, views {sorted(city.views.available())}, "
              f"labels {list(city.labels)}", flush=True)

        def write(board: Board) -> None:
            summary = board.summary()
            runs = {"seconds": {k: round(v, 1) for k, v in board.seconds.items()}, **board.notes,
                    "protocol": {"folds": board.city.folds, "fold_seeds": board.city.fold_seeds,
                                 "training_seeds": seeds, "models": list(board.city.models)}}
            targets = []
            if args.json:
                targets.append(args.json)
            if args.json_dir:
                targets.append(args.json_dir / f"{board.city.name}.json")
            for path in targets:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(summary, indent=2, allow_nan=True))
                path.with_suffix(".records.json").write_text(json.dumps(board.records()))
                path.with_suffix(".runs.json").write_text(json.dumps(runs, indent=2))

        board = run_city(city, args.methods, seeds, args.protocol == "reference" and city.coords is None,
                         args.bench_python, write)
        texts.append(print_board(board))
    print(f"\nTotal {time.perf_counter() - t_all:.0f} s")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(texts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
