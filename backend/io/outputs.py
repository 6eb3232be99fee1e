"""Writing outputs atomically, the backend's one place for it: a run's outputs go to a hidden sibling folder
(:class:`OutputFolder`) and a job's GeoPackage to a hidden sibling file (:class:`OutputFile`), renamed into
place when complete, so a failed or cancelled job leaves nothing half-written and an existing output is only
ever replaced when the user asked for it. :func:`replace_atomically` does the same for a single cache or
checkpoint file.

Safety rules (docs/protocol.md, "Output folder"):

- An existing, non-empty output folder is replaced only with ``overwrite`` and only when it holds a
  previous RegionLens run (its ``run.json``), and never when it contains (or is) an input, the
  configuration file or the current directory.
- Each staging folder ``.<name>.tmp-*`` holds a marker file (:data:`STAGING_MARKER`) with the pid of
  the process writing it. A run removes the staging folders of dead processes it finds beside its
  output (left by a run that was killed); it never touches a folder without the marker or one whose
  process still runs.
- :func:`remove_active_staging` removes this process's own staging folders and temporary files (the CLI
  and the worker call it on SIGTERM).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import geopandas as gpd
import pandas as pd

from backend.errors import OutputError
from backend.progress import Progress
from regionlens_common import GPKG_NAME, OBS, PRED, RES, RUN_JSON, prediction_column

__all__ = [
    "OutputFile",
    "OutputFolder",
    "replace_atomically",
    "check_output_dir",
    "prediction_columns",
    "write_layer",
    "write_table",
    "write_json",
    "GPKG_NAME",
    "RUN_JSON",
    "STAGING_MARKER",
    "register_temporary",
    "unregister_temporary",
    "remove_active_staging",
    "remove_stale_staging",
    "remove_stale_temporary_files",
]

#: File inside a staging folder naming the process that writes it (JSON: pid, host, start).
STAGING_MARKER = ".regionlens-staging"

_ACTIVE: set[Path] = set()  # this process's staging folders and temporary files, for SIGTERM cleanup
_ACTIVE_LOCK = threading.Lock()


def prediction_columns(label: str, observed: pd.Series, predicted: pd.Series) -> dict[str, pd.Series]:
    """The predictions layer's columns of one label: ``<label>_obs``, ``<label>_pred`` and ``<label>_res``
    (observed minus predicted), in the label's own units."""
    observed = observed.astype(float)
    return {prediction_column(label, OBS): observed, prediction_column(label, PRED): predicted,
            prediction_column(label, RES): observed - predicted}


def register_temporary(path: Path) -> None:
    """Remember a staging folder or temporary file of this process (removed by :func:`remove_active_staging`)."""
    with _ACTIVE_LOCK:
        _ACTIVE.add(Path(path))


def unregister_temporary(path: Path) -> None:
    """Forget a path given to :func:`register_temporary` (it was committed or removed)."""
    with _ACTIVE_LOCK:
        _ACTIVE.discard(Path(path))


def remove_active_staging() -> list[Path]:
    """Remove every staging folder and temporary file this process still holds; returns them.

    Called when the process is told to stop (SIGTERM) and the job cannot clean up itself.
    """
    with _ACTIVE_LOCK:
        paths = sorted(_ACTIVE)
        _ACTIVE.clear()
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return paths


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or None where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _alive_windows(pid: int) -> bool:
    """Whether process ``pid`` runs, on Windows (where ``os.kill(pid, 0)`` would terminate it)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists; anything else: no such process
    try:
        code = wintypes.DWORD()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` runs (and, when ``start`` is known, is the same process, not a reused pid)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] == "Z":
        return False  # a zombie has finished; only its exit status is left
    return start is None or len(fields) <= 19 or fields[19] == start


def _write_marker(folder: Path) -> None:
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}
    (folder / STAGING_MARKER).write_text(json.dumps(marker), encoding="utf-8")


def _stale(folder: Path) -> bool:
    """Whether ``folder`` is a staging folder (it has the marker) of a dead process on this host."""
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))
        pid = int(marker["pid"])
        host = str(marker.get("host", ""))
        start = marker.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no marker (not ours, or being created): never touched
    if host != socket.gethostname():
        return False  # another machine's run (shared folder): its pid means nothing here
    return not _alive(pid, None if start is None else str(start))


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Remove the staging folders (``.<name>.tmp-*`` with :data:`STAGING_MARKER`) of dead runs in ``folder``.

    Only folders whose marker names a process of this host that no longer runs are removed; anything
    else (no marker, a live process, another host) is left alone.

    Returns:
        The folders removed.
    """
    parent = Path(folder)
    removed: list[Path] = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(".") and ".tmp-" in p.name]
    except OSError:
        return removed
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and _stale(path):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


def remove_stale_temporary_files(target: Path) -> list[Path]:
    """Remove ``.<stem>.tmp-<pid>.gpkg`` files (and their SQLite journals) of dead processes beside ``target``.

    These are the temporary GeoPackages of the ``cluster``, ``predict`` and ``apply`` jobs; the pid in
    the name says whose they are.
    """
    pattern = re.compile(rf"^\.{re.escape(target.stem)}\.tmp-(\d+)\.gpkg(-journal|-wal|-shm)?$")
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = pattern.match(path.name)
        if match and path.is_file() and not path.is_symlink() and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _contains(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    return path == folder or folder in path.parents


def _is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a RegionLens run manifest (``run.json`` with a ``regionlens`` version)."""
    try:
        manifest = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "regionlens" in manifest


def check_output_dir(path: str | Path, overwrite: bool, protect: Iterable[str | Path] = ()) -> Path:
    """Fail early (before any work) if results cannot be written to ``path``.

    Args:
        path: The output folder.
        overwrite: Whether an existing RegionLens run in ``path`` may be replaced.
        protect: Paths that must survive the run (inputs, the configuration file); the current
            directory is always protected.

    Raises:
        OutputError: If ``path`` is a file; holds files and ``overwrite`` is false; holds files that
            are not a previous RegionLens run; contains (or is) a protected path or the current
            directory; or its parent folder cannot be created or written.
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise OutputError(f"Output path {target} is a file; choose a folder for the results.")
    if target.is_dir():
        guarded = [(Path.cwd().resolve(), "the current directory")]
        guarded += [(Path(p).expanduser().resolve(), "an input or the configuration file") for p in protect if p]
        for kept, what in guarded:
            if _contains(target, kept):
                raise OutputError(
                    f"Output folder {target} contains {what} ({kept}); replacing it would delete it. Choose a "
                    "new, separate folder for the results. Nothing was changed."
                )
        if any(target.iterdir()):
            if not overwrite:
                raise OutputError(
                    f"Output folder {target} already holds files. Choose a new folder, or allow replacing it "
                    "(CLI: --overwrite; config: overwrite = true). Nothing was changed."
                )
            if not _is_run_folder(target):
                raise OutputError(
                    f"Output folder {target} holds files but no RegionLens run ({RUN_JSON}); only a previous "
                    "run's folder is ever replaced. Choose a new folder for the results. Nothing was changed."
                )
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder's parent {parent}: {exc.strerror}. "
                          "Choose a folder you can write to.") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write into {parent} (permission denied). Choose a folder you can write to.")
    return target


class OutputFolder:
    """A staging folder next to ``target`` that replaces it on :meth:`commit`.

    Use as a context manager: on an exception the staging folder is removed and ``target`` is untouched.
    Staging folders of dead runs beside ``target`` are removed first (:attr:`removed_stale` lists them).
    """

    def __init__(self, target: str | Path, overwrite: bool = False, protect: Iterable[str | Path] = ()) -> None:
        self.protect = [str(p) for p in protect if p]
        self.target = check_output_dir(target, overwrite, self.protect)
        self.overwrite = overwrite
        self.removed_stale = remove_stale_staging(self.target.parent)
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        except OSError as exc:
            raise OutputError(f"Cannot write into {self.target.parent}: {exc.strerror}.") from exc
        register_temporary(self.staging)
        try:
            _write_marker(self.staging)
        except OSError as exc:
            self._discard()
            raise OutputError(f"Cannot write into {self.target.parent}: {exc.strerror}.") from exc
        umask = os.umask(0)
        os.umask(umask)
        self.staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; results are ordinary folders
        self.committed = False

    def _discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        unregister_temporary(self.staging)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.committed:
            self._discard()

    def path(self, *parts: str) -> Path:
        """A path inside the staging folder (parent folders are created)."""
        p = self.staging.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def final_path(self, *parts: str) -> Path:
        """Where ``path(*parts)`` will be after :meth:`commit`."""
        return self.target.joinpath(*parts)

    def commit(self) -> Path:
        """Move the staged outputs into place; returns the final folder.

        The folder state is checked again first (someone may have filled the folder meanwhile).
        """
        target = self.target
        if target.exists() and any(target.iterdir()):
            try:
                check_output_dir(target, self.overwrite, self.protect)
            except OutputError as exc:
                unregister_temporary(self.staging)  # kept for the user: the message names it
                (self.staging / STAGING_MARKER).unlink(missing_ok=True)  # so no later run removes it
                self.committed = True
                raise OutputError(f"{exc} The results were left in {self.staging}.") from exc
        (self.staging / STAGING_MARKER).unlink(missing_ok=True)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(self.staging, target)
        self.committed = True
        unregister_temporary(self.staging)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target


class OutputFile:
    """A temporary GeoPackage next to ``target``, renamed onto it when the job succeeds.

    Use as a context manager (it yields the temporary path): on an exception the temporary file is removed
    and ``target`` is untouched. The target must not be one of the job's inputs. Temporary GeoPackages of
    dead jobs beside the target are removed first (the pid in their name says whose they are).

    Raises:
        OutputError: If ``target`` is not a ``.gpkg`` file name, is an input or a folder, exists (and
            ``overwrite`` is false), or its folder cannot be created or written.
    """

    def __init__(self, target: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> None:
        self.target = Path(target).expanduser().resolve()
        if self.target.suffix.lower() != ".gpkg":
            raise OutputError(f"Output {self.target} must be a GeoPackage file ending in .gpkg.")
        for path in inputs:
            if path and Path(path).expanduser().resolve() == self.target:
                raise OutputError(f"Output {self.target} is also an input of this job; choose another file. "
                                  "Nothing was changed.")
        if self.target.is_dir():
            raise OutputError(f"Output {self.target} is a folder; choose a .gpkg file name.")
        if self.target.exists() and not overwrite:
            raise OutputError(f"Output {self.target} exists; choose another file or allow replacing it. "
                              "Nothing was changed.")
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create {parent}: {exc.strerror}. Choose a folder you can write to.") from exc
        if not os.access(parent, os.W_OK):
            raise OutputError(f"Cannot write into {parent} (permission denied). Choose a folder you can write to.")
        remove_stale_temporary_files(self.target)
        self.tmp = parent / f".{self.target.stem}.tmp-{os.getpid()}.gpkg"
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        register_temporary(self.tmp)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)
        unregister_temporary(self.tmp)


def replace_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write one file through ``write(file object)`` into a temporary sibling renamed onto ``path``.

    Readers see the old file or the complete new one, never a partial one (a cache shared by runs, a
    checkpoint). The folder is created; on any error the temporary file is removed and the error raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: Rows per GeoPackage write: a larger layer is written in batches (appended), with progress between them.
WRITE_BATCH = 50000
#: Values (rows x columns) per GeoPackage write: one write holds the GIL throughout (2.6 s for 50,000 rows of
#: a 192-column embedding with context, so no progress heartbeat meanwhile); wide layers get fewer rows.
WRITE_CELLS = 1_000_000


def write_batch_rows(columns: int) -> int:
    """Rows per write of a layer with ``columns`` columns (at most :data:`WRITE_BATCH`, at least 1,000 or that)."""
    return max(min(1_000, WRITE_BATCH), min(WRITE_BATCH, WRITE_CELLS // max(1, columns)))


def write_layer(gdf: gpd.GeoDataFrame, gpkg: Path, layer: str, progress: Progress | None = None) -> None:
    """Append one vector layer to a GeoPackage (created as version 1.3 on first write).

    The layer gets GDAL's R-tree spatial index (``rtree_<layer>_geom``), so QGIS draws and selects a
    250,000-polygon layer without scanning it. Up to :func:`write_batch_rows` rows (:data:`WRITE_BATCH`, fewer
    for a wide layer) go in one transaction; a larger layer is written batch by batch (the later batches
    appended), and ``progress`` is polled (heartbeat and cancel) between batches.
    """
    import pyogrio

    frame = gdf.reset_index()
    kwargs: dict[str, Any] = {"layer_options": {"SPATIAL_INDEX": "YES"}}
    if not gpkg.exists():
        kwargs["dataset_options"] = {"VERSION": "1.3"}
    rows = write_batch_rows(frame.shape[1])
    for start in range(0, max(len(frame), 1), rows):
        if progress is not None:
            progress.poll()
        part = frame.iloc[start:start + rows]
        pyogrio.write_dataframe(part, gpkg, layer=layer, driver="GPKG", promote_to_multi=True,
                                append=start > 0, **kwargs)
        kwargs = {}


def write_table(df: pd.DataFrame, gpkg: Path, layer: str) -> None:
    """Append one attribute table (no geometry) to a GeoPackage."""
    import pyogrio

    kwargs: dict[str, Any] = {}
    if not gpkg.exists():
        kwargs["dataset_options"] = {"VERSION": "1.3"}
    pyogrio.write_dataframe(pd.DataFrame(df).reset_index(drop=True), gpkg, layer=layer, driver="GPKG", **kwargs)


def write_json(data: Any, path: Path) -> None:
    """Write JSON (indented, UTF-8)."""
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
