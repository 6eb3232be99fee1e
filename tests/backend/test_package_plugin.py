"""The plugin zip (scripts/package_plugin.py): what QGIS needs, nothing for developers only."""

from __future__ import annotations

import configparser
import importlib.util
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _package_module():
    spec = importlib.util.spec_from_file_location("package_plugin", ROOT / "scripts" / "package_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zip_holds_the_plugin_and_the_backend_requirements_only(tmp_path: Path) -> None:
    target = _package_module().build(tmp_path)
    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt")
    assert target.name == f"regionlens-{meta['general']['version']}.zip"
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
    for needed in ("metadata.txt", "__init__.py", "plugin/main.py", "backend/worker.py", "requirements/backend.txt"):
        assert f"regionlens/{needed}" in names
    requirements = [n for n in names if n.startswith("regionlens/requirements/")]
    assert requirements == ["regionlens/requirements/backend.txt"]
    assert not [n for n in names if n.startswith(("regionlens/tests/", "regionlens/bench/", "regionlens/.venv/"))]


def test_metadata_names_a_real_contact_address() -> None:
    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt")
    email = meta["general"]["email"]
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", email)
    assert not email.endswith(("example.org", "example.com", "example.net"))


def test_make_package_needs_no_virtual_environment() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = re.search(r"^package:(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert rule is not None
    assert ".installed" not in rule.group(1)
    assert "python3 scripts/package_plugin.py" in rule.group(2)
