"""bench/gpu_check.py (``make gpu-check``) without CUDA: the cpu fallback runs every method on 40 sample-city
regions and HAFusion's speed rows at 180 regions, says "cpu fallback" everywhere, and writes one JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.io.city import CityData
from backend.models import EMBEDDERS
from backend.models.calliper import text as text_mod
from backend.models.refound import model as refound_model
from bench import gpu_check
from tests.backend.models.tiny_city import TINY_REFOUND, HashEncoder


def test_cpu_fallback_writes_json_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sf_city: CityData,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gpu_check, "load_city", lambda: sf_city)  # the sample city, read once per test session
    monkeypatch.setattr(text_mod, "_load_encoder", lambda name, device: HashEncoder())
    monkeypatch.setitem(refound_model.PRESETS, "small", TINY_REFOUND)
    monkeypatch.setenv("REGIONLENS_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--cpu-fallback", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "cpu fallback"
    assert [r["method"] for r in report["methods"]] == [m for m in EMBEDDERS if m != "fusion"] + ["fusion"]
    for row in report["methods"]:
        assert row["ok"] and row["mode"] == "cpu fallback" and row["device"] == "cpu", row
        assert row["regions"] == gpu_check.FALLBACK_REGIONS
    assert {(r["config"], r["n"]) for r in report["hafusion_speed"]} == {("reference", 180), ("scalable", 180)}
    assert all(r["mode"] == "cpu fallback" and r["sec_per_epoch"] > 0 for r in report["hafusion_speed"])
    assert report["refound_speed"] == []
    assert report["ddp"]["skipped"].startswith("cpu fallback")
    printed = capsys.readouterr().out
    assert "GPU check (cpu fallback)" in printed and "2-GPU run: skipped" in printed
