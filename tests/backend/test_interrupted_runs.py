"""Runs stopped from outside: SIGTERM is handled like a cancel (CLI and worker), and the staging folder a
killed run (SIGKILL) cannot remove is removed by the next run, never one of a live process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backend.cli import main
from backend.demo import demo_config_dict
from backend.io.outputs import STAGING_MARKER

ROOT = Path(__file__).resolve().parents[2]


def _wait_for_staging(folder: Path, name: str, proc: subprocess.Popen, timeout: float = 120.0) -> Path:
    """The staging folder of output ``name`` once its marker is written (the run is under way)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = [p for p in folder.glob(f".{name}.tmp-*") if (p / STAGING_MARKER).is_file()]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never started writing")


def _demo_config(tmp_path: Path, name: str) -> Path:
    cfg = demo_config_dict(tmp_path / name, quick=True)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def test_sigterm_stops_the_cli_and_removes_its_staging(tmp_path: Path) -> None:
    config = _demo_config(tmp_path, "run")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", str(config), "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = _wait_for_staging(tmp_path, "run", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Terminated" in err
    assert not staging.exists() and not (tmp_path / "run").exists()


def test_sigterm_stops_the_worker_and_removes_its_staging(tmp_path: Path) -> None:
    cfg: dict[str, Any] = demo_config_dict(tmp_path / "run", quick=True)
    proc = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    assert json.loads(proc.stdout.readline())["event"] == "ready"
    proc.stdin.write(json.dumps({"id": 1, "action": "run", "params": cfg}) + "\n")
    proc.stdin.flush()
    staging = _wait_for_staging(tmp_path, "run", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    events = [json.loads(line) for line in proc.stdout.read().splitlines()]
    assert events and events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled"
    assert not staging.exists() and not (tmp_path / "run").exists()


def test_next_run_removes_the_staging_of_a_killed_run(small_city: dict[str, Any], tmp_path: Path, capsys) -> None:
    config = _demo_config(tmp_path, "killed")
    proc = subprocess.Popen([sys.executable, "-m", "backend", "run", str(config), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = _wait_for_staging(tmp_path, "killed", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert staging.is_dir()  # a killed process cannot clean up
    live = tmp_path / ".other.tmp-live"  # a staging folder of a process that still runs: never touched
    live.mkdir()
    (live / STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    unrelated = tmp_path / ".notes.tmp-1"  # no marker: not RegionLens's
    unrelated.mkdir()

    (tmp_path / "config.json").write_text(json.dumps(small_city))
    assert main(["run", str(tmp_path / "config.json")]) == 0
    assert f"removed {staging.name}" in capsys.readouterr().err
    assert not staging.exists() and live.is_dir() and unrelated.is_dir()
    assert (tmp_path / "out" / "run.json").is_file()
