"""What a run writes for a planner: prediction intervals, cluster cards, the leaderboard chart, report.html."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest

from backend.tasks.leaderboard import best_method, leaderboard, method_scores
from backend.viz.report import plot_leaderboard, write_report
from regionlens_common import (
    CLUSTER_CARD_EXAMPLES,
    CLUSTER_CARDS_JSON,
    HI,
    LEADERBOARD_PNG,
    LO,
    REPORT_HTML,
)

LABELS = ("population", "vandalism", "robbery", "drugs", "cartheft", "incidents")
PNG = b"\x89PNG\r\n\x1a\n"


def test_predictions_carry_intervals_and_metrics_their_coverage(quick_run) -> None:
    pred = gpd.read_file(quick_run.gpkg, layer="predictions")
    for label in LABELS:
        lo, hi, obs = pred[f"{label}{LO}"], pred[f"{label}{HI}"], pred[f"{label}_obs"]
        ok = obs.notna()
        assert lo[ok].notna().all() and (lo[ok] <= hi[ok]).all() and (lo[ok] >= 0).all()
        assert ((lo[ok] <= pred[f"{label}_pred"][ok]) | (hi[ok] >= pred[f"{label}_pred"][ok])).all()
        inside = ((obs >= lo) & (obs <= hi))[ok].mean()
        assert 0.8 < inside < 0.98, (label, inside)  # nominal 0.9, label units (the inverse is increasing)
    metrics = pyogrio.read_dataframe(quick_run.gpkg, layer="metrics")
    assert set(metrics["protocol"]) == {"shuffled", "spatial"}
    assert metrics["coverage"].between(0.8, 0.98).all() and (metrics["interval_width"] > 0).all()
    manifest = json.loads(Path(quick_run.run_json).read_text())
    assert manifest["config"]["prediction"]["coverage"] == 0.9
    assert all(0.8 < row["coverage"] < 0.98 for row in manifest["metrics"])


def test_cluster_cards_match_the_clusters_layer(quick_run) -> None:
    assert quick_run.cluster_cards == str(Path(quick_run.output_dir) / CLUSTER_CARDS_JSON)
    cards = json.loads(Path(quick_run.cluster_cards).read_text())
    assert set(cards) == {"baseline"}
    clusters = gpd.read_file(quick_run.gpkg, layer="clusters").set_index("region_id")
    assert sum(c["size"] for c in cards["baseline"].values()) == len(clusters) == 579
    for cid, card in cards["baseline"].items():
        members = clusters[clusters["cluster"] == int(cid)]
        assert card["size"] == len(members)
        assert card["name"] == members["cluster_name"].iloc[0]
        assert len(card["examples"]) == min(CLUSTER_CARD_EXAMPLES, len(members))
        assert set(card["examples"]) <= set(members.index)
        z = [abs(f["zscore"]) for f in card["features"]]
        assert 0 < len(z) <= 5 and z == sorted(z, reverse=True)
        assert all(not f["feature"].startswith("emb_") for f in card["features"])


def test_leaderboard_chart_and_self_contained_report(quick_run) -> None:
    folder = Path(quick_run.output_dir)
    chart = folder / "figures" / LEADERBOARD_PNG
    assert chart.read_bytes().startswith(PNG) and str(chart) in quick_run.figures
    assert quick_run.report_html == str(folder / REPORT_HTML)
    page = Path(quick_run.report_html).read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(list((folder / "figures").glob("*.png"))) >= 5
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing is fetched: one file is the whole report
    for text in ("Repaired, dropped or noted", "fall outside every region", "Leaderboard", "coverage spatial",
                 "Cluster 0", "Examples:", "Timings", "torch", "embed: baseline", *LABELS):
        assert text in page, text
    assert "<script" not in page


def test_report_escapes_what_it_quotes(quick_run, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    manifest = json.loads(Path(quick_run.run_json).read_text())
    manifest["report"] = ["<img src=x onerror=alert(1)> region dropped"]
    (folder / "run.json").write_text(json.dumps(manifest))
    page = write_report(folder).read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "No figures" in page and "No clusters" in page


def _rows() -> list[dict]:
    rows = []
    for method, r2 in (("baseline", 0.30), ("hafusion", 0.45), ("fusion", 0.44)):
        for label, shift in (("crime", 0.0), ("pop", 0.1)):
            for protocol, drop in (("shuffled", 0.0), ("spatial", 0.05)):
                rows.append({"method": method, "label": label, "model": "ridge", "protocol": protocol,
                             "r2_mean": r2 + shift - drop, "r2_std": 0.02, "coverage": 0.9})
                rows.append({"method": method, "label": label, "model": "gbm", "protocol": protocol,
                             "r2_mean": 0.9 if method == "baseline" else 0.1, "r2_std": 0.02, "coverage": None})
    return rows


def test_best_method_uses_the_written_models_cv_scores_only() -> None:
    rows = _rows()
    assert method_scores(rows, "ridge")["hafusion"] == pytest.approx(0.475)
    assert best_method(rows, ["baseline", "hafusion", "fusion"], "ridge") == "hafusion"
    assert best_method(rows, ["baseline", "hafusion", "fusion"], "gbm") == "baseline"
    assert best_method(rows, ["fusion", "hafusion"], "ridge1") is None
    board = leaderboard(rows, "ridge")
    assert [e["method"] for e in board["crime"]] == ["hafusion", "fusion", "baseline"]
    assert board["crime"][0]["lead_clear"] is False  # 0.01 ahead with a spread of 0.02
    assert board["crime"][0]["protocols"]["spatial"]["r2_mean"] == pytest.approx(0.40)


def test_leaderboard_chart_needs_scores(tmp_path: Path) -> None:
    assert plot_leaderboard(_rows(), "ridge1", tmp_path / "none.png") is None
    path = plot_leaderboard(_rows(), "ridge", tmp_path / "board.png")
    assert path is not None and path.read_bytes().startswith(PNG)


def _renamed_copy(quick_run, tmp_path: Path, cluster: str, name: str) -> Path:
    """A copy of the quick run whose baseline ``cluster`` is renamed ``name`` in clusters.json."""
    folder = tmp_path / "run"
    shutil.copytree(quick_run.output_dir, folder)
    cards_path = folder / CLUSTER_CARDS_JSON
    cards = json.loads(cards_path.read_text())
    cards["baseline"][cluster]["name"] = name
    cards_path.write_text(json.dumps(cards))
    return folder


def test_report_job_brings_the_report_up_to_date_after_a_rename(quick_run, tmp_path: Path) -> None:
    """The plugin's rename saves the name into the clusters layer and clusters.json, then runs the worker's
    ``report`` job: the cluster map's legend and the report's cards show the new name; nothing else changes."""
    from backend.errors import InputError
    from backend.jobs import run_report_job

    folder = _renamed_copy(quick_run, tmp_path, "1", "quiet <streets> & parks")
    clusters = pyogrio.read_dataframe(folder / "regionlens.gpkg", layer="clusters")
    clusters.loc[clusters["cluster"] == 1, "cluster_name"] = "quiet <streets> & parks"
    pyogrio.write_dataframe(clusters, folder / "regionlens.gpkg", layer="clusters", driver="GPKG")
    figure = folder / "figures" / "cluster_map.png"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    result = run_report_job({"run": str(folder)})
    assert result["report"] == str(folder / REPORT_HTML)
    assert result["written"] == [str(figure), str(folder / REPORT_HTML)]
    page = (folder / REPORT_HTML).read_text(encoding="utf-8")
    assert "Cluster 1: quiet &lt;streets&gt; &amp; parks" in page
    changed = sorted(p.name for p in folder.rglob("*") if p.is_file() and before.get(p) != p.read_bytes())
    assert changed == ["cluster_map.png", REPORT_HTML]  # and no temporary file is left
    assert figure.read_bytes().startswith(PNG) and figure.read_bytes() != before[figure]
    with pytest.raises(InputError, match="finished RegionLens run with a report"):
        run_report_job({"run": str(tmp_path)})


def test_report_command_line(quick_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m backend report --run DIR``: the same job from a terminal (exit 0, the files it rewrote); a
    folder that is not a finished run is exit code 2 with the reason."""
    from backend.cli import main

    folder = _renamed_copy(quick_run, tmp_path, "0", "harbour front")
    assert main(["report", "--run", str(folder)]) == 0
    assert f"Rewrote {folder / REPORT_HTML}" in capsys.readouterr().out
    assert "Cluster 0: harbour front" in (folder / REPORT_HTML).read_text(encoding="utf-8")
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "finished RegionLens run with a report" in capsys.readouterr().err
