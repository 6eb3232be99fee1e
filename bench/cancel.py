"""Benchmark: cancel latency and progress cadence of the worker, for every method and its slow stages.

For each case the real worker (``python -m backend.worker``) runs the bundled San Francisco sample city
(resources/sample_data/sf) with one method, with an empty cache folder (``REGIONLENS_CACHE_DIR``) so
that text encodings, image features and checkpoints are computed rather than read. When a progress
event of the case's stage arrives (stage name and message substrings), the stage is watched for a few
seconds (``observe``) and then ``cancel`` is sent. Measured:

* cancel latency: seconds from writing the ``cancel`` request to reading the job's ``error`` event
  (kind ``cancelled``); target under 3 s (the plugin's grace before it kills the worker is 5 s);
* max gap in stage: the longest time without a progress event from the stage's first event to the
  ``error`` event; target at most 2 s;
* max gap, run: the same from the first progress event of the run (reading inputs and building views
  included); ``--json`` also names the event that ended it (``gap_run_before``).

Prints a markdown table (and ``--json OUT`` writes the rows). Usage (repository root; it takes 10-25
minutes on a laptop CPU):

    OMP_NUM_THREADS=1 .venv/backend/bin/python bench/cancel.py
    OMP_NUM_THREADS=1 .venv/backend/bin/python bench/cancel.py --only calliper --json out/bench_cancel.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SF = ROOT / "resources" / "sample_data" / "sf"
LATENCY_TARGET_S = 3.0
GAP_TARGET_S = 2.0


@dataclass
class Case:
    """One method, cancelled in one stage."""

    method: str
    label: str  # the stage as shown in the table
    stage: str  # substring of the progress event's stage
    message: str = ""  # substring of the progress event's message
    observe: float = 3.0  # seconds of the stage watched before cancelling
    params: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("baseline", "clustering (k = auto)", "cluster", observe=0.3),
    Case("baseline", "prediction (ridge + gbm folds)", "predict", observe=2.0),
    Case("calliper", "text encoder load", "embed: calliper", "loading", observe=0.2),
    Case("calliper", "text encoding", "embed: calliper", "encoding texts", observe=1.5),
    Case("calliper", "training epochs", "embed: calliper", "epoch", observe=3.0),
    Case("hafusion", "training (reference, full batch)", "embed: hafusion", "epoch", observe=3.0,
         params={"config": "reference"}),
    Case("hafusion", "training (scalable, mini-batches)", "embed: hafusion", "epoch", observe=3.0,
         params={"config": "scalable", "batch_regions": 128}),
    Case("cookie", "image encoder load", "embed: cookie", "loading efficientnet", observe=0.2),
    Case("cookie", "image chip features", "embed: cookie", "image features", observe=1.0),
    Case("cookie", "POI text encoding", "embed: cookie", "encoding texts", observe=1.0),
    Case("cookie", "training (stage 1)", "embed: cookie", "stage 1", observe=3.0),
    Case("refound", "language teacher", "language teacher", "", observe=1.0),
    Case("refound", "vision teacher", "vision teacher", "vision teacher", observe=1.0),
    Case("refound", "pre-training steps", "pre-training", "step", observe=3.0),
]


def run_config(case: Case, out_dir: Path) -> dict[str, Any]:
    """The sample city's run configuration (absolute paths) with the case's method alone."""
    return {
        "output_dir": str(out_dir),
        "regions": {"path": str(SF / "sf_block_groups_crime_pop.geojson"), "id_field": "GEO_ID"},
        "pois": {"path": str(SF / "sf_pois_osm.geojson"), "category_field": "category", "name_field": "name"},
        "rasters": [{"path": str(SF / "sf_landsat7_3857_30m.tif")}],
        "labels": [{"name": "population", "field": "Population", "target": "density"}],
        "methods": [{"name": case.method, "dim": 16, "params": case.params}],
    }


def measure(case: Case, timeout: float = 600.0) -> dict[str, Any]:
    """Run one case; returns its table row."""
    with tempfile.TemporaryDirectory(prefix="regionlens-cancel-") as tmp:
        env = dict(os.environ, REGIONLENS_CACHE_DIR=str(Path(tmp) / "cache"), PYTHONIOENCODING="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        events: queue.Queue[tuple[float, dict[str, Any] | None]] = queue.Queue()

        def reader() -> None:
            for line in proc.stdout:
                events.put((time.monotonic(), json.loads(line)))
            events.put((time.monotonic(), None))

        threading.Thread(target=reader, daemon=True).start()

        def send(obj: dict[str, Any]) -> float:
            proc.stdin.write((json.dumps(obj) + "\n").encode())
            proc.stdin.flush()
            return time.monotonic()

        row: dict[str, Any] = {"method": case.method, "stage": case.label}
        try:
            send({"id": "run", "action": "run", "params": run_config(case, Path(tmp) / "out")})
            t_first = t_stage = t_cancel = None
            t_last, gap_run, gap_stage = None, 0.0, 0.0
            deadline = time.monotonic() + timeout
            while True:
                wait = (t_stage + case.observe - time.monotonic()) if t_stage is not None and t_cancel is None \
                    else deadline - time.monotonic()
                try:
                    t, ev = events.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    if t_stage is not None and t_cancel is None:
                        t_cancel = send({"id": "cancel", "action": "cancel"})
                        continue
                    row["note"] = "timed out"
                    break
                if ev is None:
                    row["note"] = "the worker exited"
                    break
                if ev.get("id") != "run":
                    continue
                kind = ev["event"]
                if kind in ("progress", "result", "error") and t_last is not None:
                    if t - t_last > gap_run:
                        gap_run = t - t_last
                        row["gap_run_before"] = f"{ev.get('stage', kind)}: {ev.get('message', '')[:60]}"
                    if t_stage is not None:
                        gap_stage = max(gap_stage, t - t_last)
                if kind == "progress":
                    t_first = t_first or t
                    t_last = t
                    if t_stage is None and case.stage in ev["stage"] and case.message in ev["message"]:
                        t_stage = t
                    elif t_stage is not None and t_cancel is None and case.stage not in ev["stage"]:
                        t_cancel = send({"id": "cancel", "action": "cancel"})  # the stage ended early
                        row["note"] = f"stage ended before {case.observe:g} s"
                elif kind in ("result", "error"):
                    if kind == "error" and ev.get("kind") == "cancelled" and t_cancel is not None:
                        row["latency_s"] = t - t_cancel
                    else:
                        row["note"] = (f"stage '{case.label}' never reached" if t_stage is None
                                       else f"ended with {kind} {ev.get('kind', '')}: {ev.get('message', '')[:80]}")
                    break
            row["gap_stage_s"] = gap_stage if t_stage is not None else None
            row["gap_run_s"] = gap_run
        finally:
            try:
                send({"action": "shutdown"})
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
    lat, gap = row.get("latency_s"), row.get("gap_stage_s")
    row["pass"] = lat is not None and lat < LATENCY_TARGET_S and gap is not None and gap <= GAP_TARGET_S
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the rows."""

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["| method | stage | cancel latency (s) | max gap in stage (s) | max gap, run (s) | target | result |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "pass" if r["pass"] else "FAIL" + (f" ({r['note']})" if r.get("note") else "")
        if r["pass"] and r.get("note"):
            verdict += f" ({r['note']})"
        lines.append(f"| {r['method']} | {r['stage']} | {num(r.get('latency_s'))} | {num(r.get('gap_stage_s'))} | "
                     f"{num(r.get('gap_run_s'))} | < {LATENCY_TARGET_S:g} s / <= {GAP_TARGET_S:g} s | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated methods to measure (default: all)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    only = {m.strip() for m in args.only.split(",") if m.strip()}
    rows = []
    for case in CASES:
        if only and case.method not in only:
            continue
        t0 = time.monotonic()
        rows.append(measure(case))
        print(f"{case.method} / {case.label}: {rows[-1]} ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, Python {platform.python_version()}\n")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
