"""Build dist/regionlens-<version>.zip, installable from QGIS's Plugins > Install from ZIP.

The zip holds one folder, ``regionlens/`` (the plugin's import name), with the tracked files QGIS and
the backend need: metadata, entry point, the module both sides import (regionlens_common.py),
plugin/, backend/, resources/ (sample city included), requirements/backend.txt (what the setup dialog
installs), docs/, README and LICENSE. Tests, benchmarks, CI, the developers' requirement files and venvs
stay out. Standard library only: ``make package`` runs it with the system ``python3``, no virtual
environment needed.
"""

from __future__ import annotations

import argparse
import configparser
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE_DIRS = ("plugin/", "backend/", "resources/", "docs/")
INCLUDE_FILES = (
    "metadata.txt", "__init__.py", "regionlens_common.py", "README.md", "LICENSE", "requirements/backend.txt",
)


def tracked_files() -> list[str]:
    """Files tracked by git (so build output and venvs never leak in)."""
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if f in INCLUDE_FILES or f.startswith(INCLUDE_DIRS)]


def build(out: Path) -> Path:
    """Write ``regionlens-<version>.zip`` into folder ``out``; returns its path."""
    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt")
    version = meta["general"]["version"]
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"regionlens-{version}.zip"
    files = tracked_files()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            zf.write(ROOT / rel, f"regionlens/{rel}")
    return target


def main() -> int:
    """Write the zip and print its path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="dist")
    args = parser.parse_args()
    target = build(Path(args.out))
    with zipfile.ZipFile(target) as zf:
        count = len(zf.namelist())
    print(f"{target} ({count} files, {target.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
