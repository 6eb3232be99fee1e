"""The benches' shared printing (bench/_scoring.py): table cells, the total line and the JSON outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._scoring import cell, finish


def test_finish_prints_the_total_and_writes_the_json_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results, runs = {"baseline": {"crime": {"r2": [0.5, 0.1]}}}, {"total_seconds": 3.0}
    target = tmp_path / "out" / "bench.json"
    assert finish(target, results, runs, "3.0 s", cost={"growth": []}) == 0
    assert capsys.readouterr().out == "\ntotal 3.0 s\n"
    assert json.loads(target.read_text()) == results
    assert json.loads(target.with_suffix(".runs.json").read_text()) == runs
    assert json.loads(target.with_suffix(".cost.json").read_text()) == {"growth": []}


def test_finish_without_a_json_path_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert finish(None, {"a": 1}, {}, "1 s") == 0
    assert capsys.readouterr().out == "\ntotal 1 s\n" and not list(tmp_path.iterdir())


def test_cell_formats_mean_and_std() -> None:
    assert cell([0.51234, 0.0456], 3) == "0.512 ± 0.046"
    assert cell([12.0, None], 1) == "12.0" and cell([None, None], 2) == "–"
