"""A run's leaderboard: its methods ranked per label by the cross-validated R2, and the best method overall.

Only the run's own out-of-fold scores are used (``metrics`` rows of :mod:`backend.pipeline`): the method
with the highest *score*, the mean of its R2 over the labels and the protocols (shuffled and, when run,
spatially blocked), of the regressor whose predictions the run writes. No held-out test set exists or is
read; the choice is a model selection on cross-validated scores, so the winner's own figures are slightly
optimistic (docs/analysis.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["method_scores", "best_method", "leaderboard"]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(float(value))


def method_scores(rows: Iterable[Mapping[str, Any]], model: str) -> dict[str, float]:
    """Method -> mean R2 over its labels and protocols for regressor ``model`` (methods without a finite R2
    are left out)."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        if row.get("model") == model and _finite(row.get("r2_mean")):
            sums.setdefault(str(row["method"]), []).append(float(row["r2_mean"]))
    return {m: sum(v) / len(v) for m, v in sums.items()}


def best_method(rows: Iterable[Mapping[str, Any]], methods: Sequence[str], model: str) -> str | None:
    """The method of ``methods`` with the highest :func:`method_scores` score (ties: the earlier in ``methods``);
    None when no method has a score."""
    scores = method_scores(rows, model)
    ranked = [m for m in methods if m in scores]
    if not ranked:
        return None
    return max(ranked, key=lambda m: (scores[m], -methods.index(m)))


def leaderboard(rows: Iterable[Mapping[str, Any]], model: str) -> dict[str, list[dict[str, Any]]]:
    """Per label, the methods ranked by mean R2 over protocols (best first) for regressor ``model``.

    Returns:
        Label -> list of ``{"method", "score", "protocols": {protocol: {"r2_mean", "r2_std", "coverage"}},
        "lead_clear"}``; ``lead_clear`` (first entry only) says whether the best method's lead over the
        runner-up exceeds the larger of their spreads over repeats (R2 std, any protocol).
    """
    by_label: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row.get("model") != model:
            continue
        entry = by_label.setdefault(str(row["label"]), {}).setdefault(
            str(row["method"]), {"method": str(row["method"]), "protocols": {}})
        entry["protocols"][str(row["protocol"])] = {k: row.get(k) for k in ("r2_mean", "r2_std", "coverage")}
    board: dict[str, list[dict[str, Any]]] = {}
    for label, entries in by_label.items():
        for entry in entries.values():
            values = [p["r2_mean"] for p in entry["protocols"].values() if _finite(p["r2_mean"])]
            entry["score"] = sum(values) / len(values) if values else float("nan")
        ranked = sorted(entries.values(), key=lambda e: -e["score"] if _finite(e["score"]) else math.inf)
        if len(ranked) > 1 and _finite(ranked[0]["score"]) and _finite(ranked[1]["score"]):
            spread = [p["r2_std"] for e in ranked[:2] for p in e["protocols"].values() if _finite(p["r2_std"])]
            ranked[0]["lead_clear"] = bool(spread) and ranked[0]["score"] - ranked[1]["score"] > max(spread)
        board[label] = ranked
    return board
