"""bench/gpu_check.py (``make gpu-check``) without CUDA: the cpu fallback runs every method on 40 sample-city
regions and HAFusion's speed rows at 180 regions, says "cpu fallback" everywhere, and writes one JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.io.city import CityData
from backend.models import EMBEDDERS
from bench import gpu_check
from tests.backend.models.tiny_city import fast_training  # noqa: F401  (a fixture)


@pytest.mark.usefixtures("fast_training")
def test_cpu_fallback_writes_json_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sf_city: CityData,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gpu_check, "load_city", lambda: sf_city)  # the sample city, read once per test session
    out = tmp_path / "check.json"
    assert gpu_check.main(["--cpu-fallback", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "cpu fallback"
    # every method that trains or combines (``pretrained`` only reads a satellite-embedding raster, which the
    # sample city has none of, and runs nothing on the GPU)
    assert [r["method"] for r in report["methods"]] == [m for m in EMBEDDERS if m not in ("fusion", "pretrained")] + [
        "fusion"]
    for row in report["methods"]:
        assert row["ok"] and row["mode"] == "cpu fallback" and row["device"] == "cpu", row
        assert row["regions"] == gpu_check.FALLBACK_REGIONS
    assert {(r["config"], r["n"]) for r in report["hafusion_speed"]} == {("reference", 180), ("scalable", 180)}
    assert all(r["mode"] == "cpu fallback" and r["sec_per_epoch"] > 0 for r in report["hafusion_speed"])
    assert report["refound_speed"] == []
    assert report["ddp"]["skipped"].startswith("cpu fallback")
    printed = capsys.readouterr().out
    assert "GPU check (cpu fallback)" in printed and "2-GPU run: skipped" in printed
