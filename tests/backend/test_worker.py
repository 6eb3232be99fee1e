"""The worker process speaks JSON lines: ready, ping, progress, cancel, errors, busy."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    def __init__(self) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def send(self, obj) -> None:
        self.p.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.p.stdin.flush()

    def read(self) -> dict:
        line = self.p.stdout.readline()
        assert line, self.p.stderr.read()
        return json.loads(line)

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


@pytest.fixture
def worker():
    w = Proc()
    assert w.read()["event"] == "ready"
    yield w
    if w.p.poll() is None:
        w.p.kill()


def test_ping_and_bad_requests(worker) -> None:
    worker.send({"id": "a", "action": "ping"})
    assert worker.read() == {"id": "a", "event": "result", "result": {"pong": True, "version": "0.1.0"}}
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
