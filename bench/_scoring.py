"""Scoring helpers shared by the benches: every figure comes from the backend's prediction code.

Folds, scaler, regressors and the spread convention (sample standard deviation, ddof 1, as the pipeline's
metrics table) are the backend's (:mod:`backend.tasks.prediction`); the benches only pool records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from backend.tasks.prediction import _std, evaluate_label

METRICS = ("mae", "rmse", "r2")


def summary(records: list[dict[str, float]]) -> dict[str, list[float]]:
    """Mean and sample standard deviation (ddof 1, NaN for one record) of each metric over ``records``."""
    return {k: [float(np.mean([r[k] for r in records])), _std([r[k] for r in records])] for k in METRICS}


def write_results(path: Path, results: dict[str, Any], runs: dict[str, Any], **extra: dict[str, Any]) -> None:
    """A bench's JSON outputs: ``path`` (the scores), ``<stem>.runs.json`` (per run) and ``<stem>.<key>.json`` for
    each of ``extra`` (e.g. ``cost``, ``speed``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    for key, value in extra.items():
        path.with_suffix(f".{key}.json").write_text(json.dumps(value, indent=2))
    path.with_suffix(".runs.json").write_text(json.dumps(runs, indent=2, default=str))


def cell(vals: list[float | None], digits: int) -> str:
    """A table cell ``mean ± std`` of a ``[mean, std]`` pair (``mean`` alone without a std; a dash without a mean)."""
    mean, std = vals
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def finish(json_path: Path | None, results: dict[str, Any], runs: dict[str, Any], total: str,
           **extra: dict[str, Any]) -> int:
    """A bench's last step: print the ``total`` time and, where ``--json`` named a file, write the JSON outputs
    (:func:`write_results`); returns the exit status."""
    print(f"\ntotal {total}")
    if json_path is not None:
        write_results(json_path, results, runs, **extra)
    return 0


def ridge1_scores(x: np.ndarray, y: np.ndarray, folds: int, fold_seeds: list[int]) -> list[dict[str, float]]:
    """Per fold seed: the public HAFusion code's regressor (Ridge(alpha=1), unscaled, negative predictions
    clipped to 0) under the backend's shuffled K-fold (fold seeds ``fold_seeds[0]``, ``+ 1``, ...)."""
    res = evaluate_label(x, y, None, models=("ridge1",), folds=folds, repeats=len(fold_seeds), spatial=False,
                         seed=fold_seeds[0])
    return res.per_repeat[list(METRICS)].to_dict("records")
