"""Writing a run's outputs atomically: everything goes to a hidden sibling folder that is renamed into
place when complete, so a failed or cancelled run leaves nothing half-written and an existing output
folder is only ever replaced when the user asked for it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from backend.errors import OutputError

__all__ = ["OutputFolder", "check_output_dir", "write_layer", "write_table", "write_json", "GPKG_NAME"]

GPKG_NAME = "regionlens.gpkg"


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any work) if results cannot be written to ``path``.

    Raises:
        OutputError: If ``path`` is a file, holds files and ``overwrite`` is false, or its parent
            folder cannot be created or written.
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise OutputError(f"Output path {target} is a file; choose a folder for the results.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputError(
            f"Output folder {target} already holds files. Choose a new folder, or allow replacing it "
            "(CLI: --overwrite; config: overwrite = true). Nothing was changed."
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
    """

    def __init__(self, target: str | Path, overwrite: bool = False) -> None:
        self.target = check_output_dir(target, overwrite)
        self.overwrite = overwrite
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        except OSError as exc:
            raise OutputError(f"Cannot write into {self.target.parent}: {exc.strerror}.") from exc
        umask = os.umask(0)
        os.umask(umask)
        self.staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; results are ordinary folders
        self.committed = False

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def path(self, *parts: str) -> Path:
        """A path inside the staging folder (parent folders are created)."""
        p = self.staging.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def final_path(self, *parts: str) -> Path:
        """Where ``path(*parts)`` will be after :meth:`commit`."""
        return self.target.joinpath(*parts)

    def commit(self) -> Path:
        """Move the staged outputs into place; returns the final folder."""
        target = self.target
        if target.exists() and any(target.iterdir()) and not self.overwrite:
            raise OutputError(f"Output folder {target} was filled by someone else during the run; "
                              f"results were left in {self.staging}.")
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(self.staging, target)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return target


def write_layer(gdf: gpd.GeoDataFrame, gpkg: Path, layer: str) -> None:
    """Append one vector layer to a GeoPackage (created as version 1.3 on first write)."""
    import pyogrio

    frame = gdf.reset_index()
    kwargs: dict[str, Any] = {}
    if not gpkg.exists():
        kwargs["dataset_options"] = {"VERSION": "1.3"}
    pyogrio.write_dataframe(frame, gpkg, layer=layer, driver="GPKG", promote_to_multi=True, **kwargs)


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
