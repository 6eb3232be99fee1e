"""The worker process speaks JSON lines: ready, ping, progress, cancel, errors, busy."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend import __version__
from backend.worker import Worker, jsonable

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """The real worker process; requests are written as bytes (so tests can send bytes that are not UTF-8)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONIOENCODING="utf-8")  # what the plugin sets
        self.p = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def send(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else (obj if isinstance(obj, str) else json.dumps(obj)).encode()
        self.p.stdin.write(data + b"\n")
        self.p.stdin.flush()

    def read(self) -> dict:
        line = self.p.stdout.readline()
        assert line, self.p.stderr.read().decode(errors="replace")
        return json.loads(line, parse_constant=_no_constants)  # strict JSON: no NaN or Infinity

    def until(self, event: str, req_id=None) -> tuple[dict, list[dict]]:
        seen = []
        while True:
            ev = self.read()
            seen.append(ev)
            if ev["event"] == event and (req_id is None or ev["id"] == req_id):
                return ev, seen

    def close(self) -> int:
        self.send({"action": "shutdown"})
        return self.p.wait(timeout=30)


def _no_constants(name: str):
    raise AssertionError(f"the worker wrote {name}, which is not JSON")


@pytest.fixture
def worker():
    w = Proc()
    assert w.read()["event"] == "ready"
    yield w
    if w.p.poll() is None:
        w.p.kill()


def test_ping_and_bad_requests(worker) -> None:
    worker.send({"id": "a", "action": "ping"})
    assert worker.read() == {"id": "a", "event": "result", "result": {"pong": True, "version": __version__}}
    worker.send("not json")
    ev = worker.read()
    assert ev["event"] == "error" and ev["kind"] == "protocol"
    worker.send({"id": "b", "action": "fly"})
    assert worker.read()["kind"] == "protocol"
    assert worker.close() == 0


def test_sleep_progress_then_result(worker) -> None:
    worker.send({"id": 1, "action": "sleep", "params": {"seconds": 0.4}})
    ev, seen = worker.until("result", 1)
    assert ev["result"] == {"slept": 0.4}
    fractions = [e["fraction"] for e in seen if e["event"] == "progress"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_cancel_stops_job_quickly_and_busy_is_refused(worker) -> None:
    worker.send({"id": 1, "action": "sleep", "params": {"seconds": 60}})
    worker.until("progress", 1)
    worker.send({"id": 2, "action": "sleep", "params": {"seconds": 1}})
    busy, _ = worker.until("error", 2)
    assert busy["kind"] == "busy"
    t0 = time.monotonic()
    worker.send({"action": "cancel"})
    ev, _ = worker.until("error", 1)
    assert ev["kind"] == "cancelled"
    assert time.monotonic() - t0 < 5
    worker.send({"id": 3, "action": "ping"})
    assert worker.until("result", 3)[0]["result"]["pong"]


def test_run_with_bad_config_reports_config_error(worker, tmp_path) -> None:
    worker.send({"id": 7, "action": "run", "params": {"output_dir": str(tmp_path / "o")}})
    ev, _ = worker.until("error", 7)
    assert ev["kind"] == "config" and "regions" in ev["message"]
    assert not (tmp_path / "o").exists()


def test_info_describes_run_settings_for_the_plugin() -> None:
    """The plugin reads fusion, ensembles, context presets and the settings' ranges from ``info`` only."""
    from backend.config import LIMITS
    from backend.tasks.context import CONTEXT_PRESETS
    from backend.worker import info

    described = info()
    assert described["limits"]["ensemble"] == list(LIMITS["ensemble"])
    assert set(described["context_presets"]) == set(CONTEXT_PRESETS)
    assert described["methods"]["fusion"]["combines_methods"]
    assert not described["methods"]["baseline"]["ensemble"] and described["methods"]["calliper"]["ensemble"]


def test_info_about_a_saved_model(worker, tmp_path) -> None:
    import numpy as np
    import pandas as pd

    from backend.models import BaselineEmbedder
    from backend.views import Views

    ids = pd.Index([f"r{i}" for i in range(8)], name="region_id")
    counts = pd.DataFrame(np.arange(24).reshape(8, 3) % 5, index=ids, columns=["bank", "cafe", "school"])
    BaselineEmbedder(dim=2).fit(Views(region_ids=ids, tables={"poi_counts": counts})).save(tmp_path / "m")
    worker.send({"id": 4, "action": "info", "params": {"model": str(tmp_path / "m")}})
    ev, _ = worker.until("result", 4)
    model = ev["result"]["model"]
    assert model["name"] == "baseline" and model["dim"] == 2
    assert list(model["inputs"]) == ["regions", "pois"] and model["inputs"]["pois"]["required"] is True
    other = Proc()  # a fresh worker: the first job's thread may not have ended yet ("busy")
    try:
        assert other.read()["event"] == "ready"
        other.send({"id": 5, "action": "info", "params": {"model": str(tmp_path / "none")}})
        ev, _ = other.until("error", 5)
        assert ev["kind"] == "input" and "no saved RegionLens model" in ev["message"]
        assert other.close() == 0
    finally:
        if other.p.poll() is None:
            other.p.kill()


def test_stray_prints_do_not_corrupt_protocol() -> None:
    code = ("import os, sys; from backend.worker import Worker; fd=os.dup(1); os.dup2(2,1); sys.stdout=sys.stderr; "
            "print('noise'); os.system('echo c-noise'); Worker(fd).emit({'event':'x'})")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines() == ['{"event": "x"}']
    assert "noise" in out.stderr and "c-noise" in out.stderr


#: Lines that are not valid requests, with the id the error event must carry (None: the line has no usable id).
MALFORMED = [
    pytest.param(b'{"id": 3, "action": ["run"]}', 3, id="action-list"),
    pytest.param(b'{"id": 3, "action": {}}', 3, id="action-object-unhashable"),
    pytest.param(b'{"id": 3, "action": null}', 3, id="action-null"),
    pytest.param(b'{"id": 3, "action": 7}', 3, id="action-number"),
    pytest.param(b'{"id": 3}', 3, id="action-missing"),
    pytest.param(b'{"id": 3, "action": "fly"}', 3, id="action-unknown"),
    pytest.param(b"[" * 100_000, None, id="nested-100k-arrays"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, None, id="nested-50k-objects"),
    pytest.param(b'{"id": 3, "action": "p\xffing"}', None, id="invalid-utf8"),
    pytest.param(b"\xed\xa0\x80", None, id="utf8-encoded-surrogate"),
    pytest.param(b"\x00\x01\x02", None, id="control-bytes"),
    pytest.param(b"not json", None, id="not-json"),
    pytest.param(b'{"id": 3, "action": "ping"', None, id="truncated"),
    pytest.param(b'{"id": 3, "action": "ping"} trailing', None, id="trailing-garbage"),
    pytest.param(b"[1, 2]", None, id="array"),
    pytest.param(b'"ping"', None, id="string"),
    pytest.param(b"42", None, id="number"),
    pytest.param(b"null", None, id="null"),
    pytest.param(b'{"action": "ping"}', None, id="id-missing"),
    pytest.param(b'{"id": [1], "action": "ping"}', None, id="id-list"),
    pytest.param(b'{"id": {"a": 1}, "action": "ping"}', None, id="id-object"),
    pytest.param(b'{"id": true, "action": "ping"}', None, id="id-bool"),
    pytest.param(b'{"id": NaN, "action": "ping"}', None, id="id-nan"),
    pytest.param(b'{"id": 3, "action": "ping", "x": Infinity}', None, id="infinity"),
    pytest.param(b'{"id": 3, "action": "sleep", "params": [1]}', 3, id="params-list"),
    pytest.param(b'{"id": 3, "action": "run", "params": "config.toml"}', 3, id="params-string"),
    pytest.param(b'{"id": "\\ud800", "action": 1}', "\ud800", id="id-lone-surrogate"),
]


@pytest.fixture(scope="module")
def long_lived_worker():
    """One worker for many bad requests: it must survive every one of them (and imports the jobs once)."""
    w = Proc()
    assert w.read()["event"] == "ready"
    yield w
    assert w.close() == 0


@pytest.mark.parametrize(("line", "reply_id"), MALFORMED)
def test_malformed_line_gets_a_protocol_error_and_the_worker_keeps_serving(long_lived_worker, line: bytes,
                                                                           reply_id) -> None:
    worker = long_lived_worker
    assert worker.p.poll() is None, "an earlier line killed the worker"
    worker.send(line)
    ev = worker.read()
    assert ev["event"] == "error" and ev["kind"] == "protocol", ev
    assert ev["id"] == reply_id and ev["message"].startswith("Bad request: ")
    worker.send({"id": "next", "action": "sleep", "params": {"seconds": 0}})
    assert worker.until("result", "next")[0]["result"] == {"slept": 0}


@pytest.mark.parametrize(("action", "params", "words"), [
    ("sleep", {"seconds": "ten"}, "'seconds' must be a number"),
    ("sleep", {"seconds": -1}, "'seconds' must be a number"),
    ("sleep", {"seconds": 1, "minutes": 2}, "unknown parameters ['minutes']"),
    ("cluster", {"embeddings": "e.gpkg", "output": "o.gpkg", "k": [3]}, "'k' must be an integer or a text"),
    ("cluster", {"embeddings": 1, "output": "o.gpkg"}, "'embeddings' must be a text"),
    ("predict", {"embeddings": "e.gpkg", "output": "o.gpkg", "label_field": "y", "models": "gbm"},
     "'models' must be a list of texts"),
    ("predict", {"embeddings": "e.gpkg", "output": "o.gpkg", "label_field": "y", "folds": "3"},
     "'folds' must be an integer"),
    ("apply", {"model": "m", "regions": "r.gpkg", "output": "o.gpkg", "overwrite": "yes"},
     "'overwrite' must be true or false"),
])
def test_parameters_of_the_wrong_type_are_config_errors(long_lived_worker, action: str, params: dict,
                                                        words: str) -> None:
    long_lived_worker.send({"id": 9, "action": action, "params": params})
    ev, _ = long_lived_worker.until("error", 9)
    assert ev["kind"] == "config" and words in ev["message"], ev


def test_cancel_gets_an_answer_idle_or_running(worker) -> None:
    worker.send({"id": "c1", "action": "cancel"})
    ev = worker.read()
    assert ev == {"id": "c1", "event": "result",
                  "result": {"cancelling": False, "message": "No job is running; there was nothing to cancel."}}
    worker.send({"id": 1, "action": "sleep", "params": {"seconds": 60}})
    worker.until("progress", 1)
    worker.send({"id": "c2", "action": "cancel"})
    answer, _ = worker.until("result", "c2")
    assert answer["result"]["cancelling"] is True
    assert worker.until("error", 1)[0]["kind"] == "cancelled"
    assert worker.close() == 0


def test_events_are_strict_json_with_null_for_non_finite_numbers() -> None:
    import numpy as np

    r, w = os.pipe()
    try:
        Worker(w).emit({"id": 1, "event": "result", "result": {
            "slept": math.nan, "r2_std": np.float64("nan"), "inf": np.float32("inf"), "ok": np.float32(0.5),
            "rows": [{"mae_std": -math.inf}], "arr": np.array([1.0, np.nan]), "n": np.int64(3)}})
        Worker(w).emit({"id": 2, "event": "result", "result": {"bad": object()}})
        os.close(w)
        w = -1
        with os.fdopen(r, "rb") as fh:
            r = -1
            first, second = (json.loads(line, parse_constant=_no_constants) for line in fh)
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    assert first["result"] == {"slept": None, "r2_std": None, "inf": None, "ok": 0.5, "rows": [{"mae_std": None}],
                               "arr": [1.0, None], "n": 3}
    assert second["result"]["bad"].startswith("<object object")
    assert jsonable({1: (math.inf,)}) == {"1": [None]}


def test_a_job_sent_right_after_the_last_ones_final_event_is_never_busy(worker) -> None:
    for i in range(30):
        worker.send({"id": i, "action": "sleep", "params": {"seconds": 0}})
        ev = worker.read()
        while ev["event"] == "progress":
            ev = worker.read()
        assert ev == {"id": i, "event": "result", "result": {"slept": 0}}
    assert worker.close() == 0
