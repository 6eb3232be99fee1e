"""WorkerClient against the real backend worker (and a tiny fake one for failure modes)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from plugin.worker_client import (
    SCRUBBED_ENV_VARS,
    WorkerCancelled,
    WorkerClient,
    WorkerDied,
    WorkerError,
    build_worker_env,
    describe_exit,
    find_backend_python,
    venv_python,
)

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals and /proc")


@pytest.fixture
def worker(backend_python: Path, repo_root: Path):
    client = WorkerClient(backend_python, repo_root)
    client.start(timeout=60)
    yield client
    client.close()


# ---------------------------------------------------------------- real worker


def test_ready_and_ping_round_trip(worker: WorkerClient) -> None:
    assert worker.ready is not None
    assert worker.ready["event"] == "ready"
    assert worker.ready["pid"] == worker.pid
    result = worker.run_job("ping")
    assert result["pong"] is True
    assert result["version"] == worker.ready["version"]


def test_request_and_next_event(worker: WorkerClient) -> None:
    request_id = worker.request("ping")
    deadline = time.monotonic() + 10
    event = None
    while time.monotonic() < deadline:
        event = worker.next_event(timeout=0.5)
        if event is not None and event.get("id") == request_id:
            break
    assert event is not None
    assert event["event"] == "result"
    assert event["result"]["pong"] is True
    assert worker.next_event(timeout=0.05) is None  # nothing else pending; returns, never blocks


def test_sleep_reports_progress(worker: WorkerClient) -> None:
    events: list[dict] = []
    result = worker.run_job("sleep", {"seconds": 0.6}, on_event=events.append)
    assert result == {"slept": 0.6}
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert len(fractions) >= 4
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    assert all(e["stage"] == "sleep" for e in events if e["event"] == "progress")


def test_cancel_during_sleep(worker: WorkerClient) -> None:
    started = time.monotonic()
    with pytest.raises(WorkerCancelled):
        worker.run_job("sleep", {"seconds": 30}, is_cancelled=lambda: time.monotonic() - started > 0.3)
    assert time.monotonic() - started < 5
    assert worker.is_running  # a graceful cancel keeps the worker
    assert worker.run_job("ping")["pong"] is True


def test_cancel_from_another_thread(worker: WorkerClient) -> None:
    timer = threading.Timer(0.3, worker.cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(WorkerCancelled):
            worker.run_job("sleep", {"seconds": 30})
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5


def test_cancel_kills_after_grace(worker: WorkerClient) -> None:
    timer = threading.Timer(0.3, worker.cancel, kwargs={"grace": 0.0})
    timer.start()
    try:
        with pytest.raises(WorkerCancelled):
            worker.run_job("sleep", {"seconds": 30})
    finally:
        timer.cancel()
    assert not worker.is_running


@posix_only
def test_killed_worker_raises_worker_died(worker: WorkerClient) -> None:
    timer = threading.Timer(0.3, os.kill, args=(worker.pid, signal.SIGKILL))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(WorkerDied) as info:
            worker.run_job("sleep", {"seconds": 30})
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert info.value.returncode == -9
    assert "exit -9" in str(info.value)
    assert "out of memory" in str(info.value)


def test_error_events_become_worker_errors(worker: WorkerClient, tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as info:
        worker.run_job("no_such_action")
    assert info.value.kind == "protocol"
    with pytest.raises(WorkerError) as info:
        worker.run_job("run", {"output_dir": str(tmp_path / "out")})  # no regions section
    assert info.value.kind == "config"
    assert "regions" in info.value.message
    assert worker.run_job("ping")["pong"] is True


@posix_only
def test_worker_process_gets_scrubbed_environment(backend_python: Path, repo_root: Path) -> None:
    polluted = {**os.environ, "PROJ_LIB": "/old/qgis/proj", "PYTHONPATH": "/usr/share/qgis/python", "GDAL_DATA": "/x"}
    with WorkerClient(backend_python, repo_root, env=polluted) as client:
        client.start(timeout=60)
        environ = Path(f"/proc/{client.pid}/environ").read_bytes().decode(errors="replace").split("\0")
    names = {entry.split("=", 1)[0] for entry in environ if "=" in entry}
    assert not names & set(SCRUBBED_ENV_VARS)
    assert "PYTHONUNBUFFERED=1" in environ
    assert any(entry.startswith("PATH=") for entry in environ)


def test_close_stops_the_worker(backend_python: Path, repo_root: Path) -> None:
    client = WorkerClient(backend_python, repo_root)
    client.start(timeout=60)
    client.close()
    assert client.returncode == 0
    client.close()  # idempotent
    with pytest.raises(WorkerDied):
        client.request("ping")


# ---------------------------------------------------------------- environment and helpers


def test_build_worker_env_scrubs_variables() -> None:
    base = {name: "/somewhere" for name in SCRUBBED_ENV_VARS}
    base.update({"PATH": "/usr/bin", "HOME": "/home/u", "proj_lib": "/lower/case"})
    env = build_worker_env(base)
    assert not set(env) & set(SCRUBBED_ENV_VARS)
    assert "proj_lib" not in env  # Windows names are case-insensitive
    assert env["PATH"] == "/usr/bin"
    assert env["HOME"] == "/home/u"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert base["PROJ_LIB"] == "/somewhere"  # the input is not modified


def test_describe_exit() -> None:
    assert describe_exit(-9) == "the worker was killed (exit -9), most likely out of memory"
    assert "(exit 137), most likely out of memory" in describe_exit(137)
    text = describe_exit(3, "line 1\nTraceback\nValueError: boom\n")
    assert text.startswith("the worker stopped unexpectedly (exit 3)")
    assert text.endswith("ValueError: boom")


def test_find_backend_python(tmp_path: Path) -> None:
    from plugin.settings import Setting

    try:
        Setting.BACKEND_PYTHON.clear()
        assert find_backend_python(tmp_path) is None  # no dev venv there, none in the settings dir
        dev = venv_python(tmp_path / ".venv" / "backend")
        dev.parent.mkdir(parents=True)
        dev.write_text("")
        assert find_backend_python(tmp_path) == dev
        configured = tmp_path / "custom" / "python"
        configured.parent.mkdir()
        configured.write_text("")
        Setting.BACKEND_PYTHON.set(str(configured))
        assert find_backend_python(tmp_path) == configured
    finally:
        Setting.BACKEND_PYTHON.clear()


# ---------------------------------------------------------------- failure modes (fake worker)

FAKE_WORKER = """
import json, os, sys, time
mode = os.environ.get("FAKE_WORKER_MODE", "")
print("a stray print that is not JSON", flush=True)
if mode == "no_ready":
    time.sleep(60)
print(json.dumps({"id": None, "event": "ready", "version": "fake", "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["action"] == "ping":
        print(json.dumps({"id": req["id"], "event": "result", "result": {"pong": True}}), flush=True)
    elif req["action"] == "crash":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: boom", file=sys.stderr, flush=True)
        sys.exit(3)
    elif req["action"] == "silent":
        time.sleep(60)
    elif req["action"] == "shutdown":
        break
"""


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    package = tmp_path / "backend"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "worker.py").write_text(textwrap.dedent(FAKE_WORKER))
    return tmp_path


def test_non_json_stdout_goes_to_stderr_log(fake_root: Path) -> None:
    with WorkerClient(sys.executable, fake_root) as client:
        client.start(timeout=30)
        assert client.run_job("ping") == {"pong": True}
        assert "[stdout] a stray print that is not JSON" in client.stderr_text()


def test_crash_reports_exit_code_and_stderr(fake_root: Path) -> None:
    with WorkerClient(sys.executable, fake_root) as client:
        client.start(timeout=30)
        with pytest.raises(WorkerDied) as info:
            client.run_job("crash")
    assert info.value.returncode == 3
    assert "the worker stopped unexpectedly (exit 3)" in str(info.value)
    assert "RuntimeError: boom" in str(info.value)


def test_idle_timeout_stops_a_silent_worker(fake_root: Path) -> None:
    with WorkerClient(sys.executable, fake_root) as client:
        client.start(timeout=30)
        with pytest.raises(WorkerError) as info:
            client.run_job("silent", idle_timeout=0.5)
        assert info.value.kind == "timeout"
        assert not client.is_running


def test_start_timeout(fake_root: Path) -> None:
    client = WorkerClient(sys.executable, fake_root, env={**os.environ, "FAKE_WORKER_MODE": "no_ready"})
    started = time.monotonic()
    with pytest.raises(WorkerError) as info:
        client.start(timeout=1.0)
    assert info.value.kind == "startup"
    assert time.monotonic() - started < 10
    assert not client.is_running


def test_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as info:
        WorkerClient(tmp_path / "no" / "python", tmp_path).start()
    assert info.value.kind == "startup"
    assert "does not exist" in info.value.message


def test_import_failure_before_ready(tmp_path: Path) -> None:
    client = WorkerClient(sys.executable, tmp_path)  # no backend package in tmp_path
    with pytest.raises(WorkerDied) as info:
        client.start(timeout=30)
    assert info.value.returncode == 1
    assert "No module named 'backend'" in str(info.value)
