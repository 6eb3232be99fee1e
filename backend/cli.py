"""Command line: ``python -m backend run CONFIG`` (also launched by ``torchrun ... -m backend run CONFIG``),
``python -m backend demo``, ``python -m backend info``, ``python -m backend similar --run DIR --ids A B ...``
(regions similar to chosen ones) and ``python -m backend report --run DIR`` (redraw the cluster map and rewrite
``report.html`` after clusters were renamed in ``clusters.json``).

Exit codes: 0 success, 2 bad input, configuration or output folder, 130 cancelled (Ctrl+C), 143 terminated
(SIGTERM), 1 internal error. A cancelled or terminated run removes its unfinished output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from backend.errors import Cancelled, RegionLensError
from backend.progress import Progress
from regionlens_common import SIMILAR_GPKG, SIMILAR_TOP_N

__all__ = ["main"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl+C: the run stops and removes its unfinished output."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _cleanup() -> None:
    """Remove staging folders this process still holds (a run interrupted where it could not clean up)."""
    outputs = sys.modules.get("backend.io.outputs")
    if outputs is not None:
        outputs.remove_active_staging()


def _terminal_progress(quiet: bool) -> tuple[Progress, Callable[[], None]]:
    """A Progress drawing a bar on stderr (one line per stage when stderr is not a terminal)."""
    from tqdm import tqdm

    interactive = sys.stderr.isatty() and not quiet
    bar = tqdm(total=1000, file=sys.stderr, disable=not interactive, mininterval=0.2,
               bar_format="{l_bar}{bar}| {elapsed} {postfix}", dynamic_ncols=True)
    lock = threading.Lock()
    last_stage = {"name": ""}

    def on_progress(stage: str, fraction: float, message: str) -> None:
        with lock:
            if interactive:
                bar.set_description_str(stage[:28].ljust(28), refresh=False)
                bar.set_postfix_str(message[:40], refresh=False)
                bar.update(int(fraction * 1000) - bar.n)
            elif not quiet and stage != last_stage["name"]:
                last_stage["name"] = stage
                print(f"[{fraction:4.0%}] {stage}", file=sys.stderr, flush=True)

    def on_log(message: str) -> None:
        if quiet:
            return
        with lock:
            if interactive:
                bar.write(f"  {message}", file=sys.stderr)
            else:
                print(f"       {message}", file=sys.stderr, flush=True)

    return Progress(callback=on_progress, log_callback=on_log), bar.close


def _run(cfg, quiet: bool, protect: tuple[str, ...] = ()) -> int:  # noqa: ANN001
    from backend.pipeline import run_pipeline

    progress, close = _terminal_progress(quiet)
    try:
        result = run_pipeline(cfg, progress, protect=protect)
    finally:
        close()
    print(f"RegionLens finished on {result.device} in {result.seconds:.1f} s")
    print(f"  outputs:  {result.output_dir}")
    print(f"  layers:   {', '.join(result.layers)}")
    how = {"best": "the highest mean cross-validated R2 of this run", "auto": "fusion, else the first method"}
    print(f"  primary:  {result.primary_method} ({how.get(cfg.primary, 'chosen in the configuration')})")
    print(f"  report:   {result.report_html}")
    _print_timings(result.run_json)
    shown = [m for m in result.metrics if m["model"] == "ridge"]
    if shown:
        print(f"  {'method':10s} {'label':12s} {'protocol':9s} {'R2 mean':>8s} {'R2 std':>7s}")
        for m in shown:
            print(f"  {m['method']:10s} {m['label']:12s} {m['protocol']:9s} {m['r2_mean']:8.3f} {m['r2_std']:7.3f}")
    return 0


def _run_under_torchrun(cfg, quiet: bool, protect: tuple[str, ...], world: int,  # noqa: ANN001
                        nproc: int | None) -> int:
    """``python -m backend run`` as one of the ``world`` processes torchrun started: join its process group;
    rank 0 runs the job and writes the outputs, the other ranks train their shard of every training job."""
    from backend.device import resolve_device
    from backend.errors import ConfigError
    from backend.models._distributed import join_torchrun, leave_torchrun, serve_training_jobs

    if nproc is not None and nproc != world:
        raise ConfigError(f"--nproc {nproc}, but torchrun started {world} processes; under torchrun the number "
                          "of processes is torchrun's (--nproc_per_node): leave --nproc out.")
    cfg.nproc = world
    ranks = join_torchrun(resolve_device(cfg.device))
    try:
        if not ranks.main:
            serve_training_jobs()
            return 0
        return _run(cfg, quiet, protect=protect)
    finally:
        leave_torchrun()


def _print_timings(run_json: str) -> None:
    """Seconds per stage and per method (``timings_s`` of run.json)."""
    try:
        timings = json.loads(Path(run_json).read_text(encoding="utf-8")).get("timings_s", {})
    except (OSError, ValueError):
        return
    print("  time per stage (s):")
    for stage, seconds in timings.items():
        name = f"embed: {stage[len('embed_'):]}" if stage.startswith("embed_") else stage
        print(f"    {name:24s} {float(seconds):8.1f}")


def _similar(args: argparse.Namespace) -> int:
    from backend.jobs import run_similar_job

    params = {"run": args.run, "ids": list(args.ids), "method": args.method, "layer": args.layer,
              "id_field": args.id_field, "top": args.top, "output": args.out, "overwrite": args.overwrite}
    result = run_similar_job(params)
    print(f"Similarity to {', '.join(result['ids'])} ({result['method']}, {result['n_regions']} regions): "
          f"{result['output']} (layer {result['layer']})")
    for row in result["top"]:
        print(f"  {row['region_id']:20s} {row['similarity']:6.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m backend", description="RegionLens backend")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a configuration file (TOML or JSON)")
    p_run.add_argument("config", help="path of the configuration file")
    p_run.add_argument("--overwrite", action="store_true", help="replace the output folder if it holds files")
    p_run.add_argument("--device", help="override the device (auto, cpu, cuda, mps)")
    p_run.add_argument("--nproc", type=int, help="training processes (data-parallel; one per GPU on CUDA); "
                       "overrides nproc")
    p_run.add_argument("--output-dir", help="override output_dir")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    p_demo = sub.add_parser("demo", help="run the bundled San Francisco sample city")
    p_demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p_demo.add_argument("--quick", action="store_true", help="small settings (for tests)")
    p_demo.add_argument("--device", default="auto")
    p_demo.add_argument("--quiet", action="store_true")
    sub.add_parser("info", help="versions, device and available methods as JSON")
    p_sim = sub.add_parser("similar", help="regions similar to chosen ones (cosine similarity of embeddings)")
    p_sim.add_argument("--run", required=True, help="a run folder, or a file with an embedding layer (e.g. the "
                       "GeoPackage written by apply)")
    p_sim.add_argument("--ids", required=True, nargs="+", help="ids of the chosen regions")
    p_sim.add_argument("--method", help="the run's method whose embeddings are compared (default: its primary)")
    p_sim.add_argument("--layer", help="embedding layer of a file (default: embeddings)")
    p_sim.add_argument("--id-field", default="region_id", help="region id field (default region_id)")
    p_sim.add_argument("--top", type=int, default=SIMILAR_TOP_N,
                       help=f"how many most similar regions to mark (default {SIMILAR_TOP_N})")
    p_sim.add_argument("--out", help=f"GeoPackage to write (default: <run>/{SIMILAR_GPKG})")
    p_sim.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p_rep = sub.add_parser("report", help="redraw a run's cluster map and rewrite its report.html (after its "
                           "clusters were renamed in clusters.json, as the plugin's cluster card does)")
    p_rep.add_argument("--run", required=True, help="a finished run's output folder")
    args = parser.parse_args(argv)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "info":
            from backend.worker import info

            print(json.dumps(info(), indent=2))
            return 0
        if args.command == "similar":
            return _similar(args)
        if args.command == "report":
            from backend.jobs import run_report_job

            written = run_report_job({"run": args.run})["written"]
            print("\n".join(f"Rewrote {path}" for path in written))
            return 0
        if args.command == "run":
            from backend.config import load_config

            cfg = load_config(args.config)
            if args.overwrite:
                cfg.overwrite = True
            if args.device:
                cfg.device = args.device
            if args.nproc is not None:
                from backend.config import check_nproc

                cfg.nproc = check_nproc(args.nproc, "--nproc")
            if args.output_dir:
                cfg.output_dir = str(Path(args.output_dir).resolve())
            protect = (str(Path(args.config).resolve()),)
            from backend.models._distributed import torchrun_launch

            launch = torchrun_launch()
            if launch is not None:
                return _run_under_torchrun(cfg, args.quiet, protect, launch[1], args.nproc)
            return _run(cfg, args.quiet, protect=protect)
        from backend.demo import demo_config

        out = Path(args.out).resolve()
        if out.exists() and any(out.iterdir()):
            # The demo folder is RegionLens's own; say so rather than replace it silently.
            print(f"Replacing the previous demo output in {out}", file=sys.stderr)
        cfg = demo_config(out, quick=args.quick, overwrite=True)
        cfg.device = args.device
        return _run(cfg, args.quiet)
    except Cancelled as exc:
        print(f"Cancelled: {exc}", file=sys.stderr)
        return 130
    except Terminated:
        print("Terminated (SIGTERM); no output was written.", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("Interrupted; no output was written.", file=sys.stderr)
        return 130
    except RegionLensError as exc:
        print(f"Error ({exc.kind}): {exc}", file=sys.stderr)
        return 2
    finally:
        _cleanup()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
