"""Method ``pretrained`` (the satellite-embedding view as the embedding), the embedding view in HAFusion, CooKIE and
fusion, and the full job from an OpenStreetMap extract plus an embedding raster through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backend.errors import InputError
from backend.models import EMBEDDERS, CooKIEEmbedder, HAFusionEmbedder, PretrainedEmbedder, load_embedder
from backend.views._base import Views
from backend.worker import info
from tests.backend.io.test_poi_files import write_pbf
from tests.backend.models.hafusion.test_hafusion import TINY
from tests.backend.views.test_embedding import write_cog


def _views(n: int = 30, bands: int = 16, seed: int = 0) -> Views:
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"r{i}" for i in range(n)], name="region_id")
    emb = rng.normal(size=(n, bands))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    counts = rng.poisson(2.0, size=(n, 5)).astype(float)
    return Views(region_ids=ids, tables={
        "embedding": pd.DataFrame(emb, index=ids, columns=[f"aef_b{b}_mean" for b in range(1, bands + 1)]),
        "poi_counts": pd.DataFrame(counts, index=ids, columns=list("abcde"))})


def test_registered_and_described_for_the_plugin() -> None:
    assert EMBEDDERS["pretrained"] is PretrainedEmbedder
    described = PretrainedEmbedder.describe()
    assert described["views"] == ["embedding"] and described["ensemble"] is False
    assert described["param_info"]["pca"]["type"] == "bool"
    assert "pretrained" in info()["methods"]


def test_view_passed_through_or_reduced_by_pca(tmp_path) -> None:
    views = _views()
    table = views.tables["embedding"]
    direct = PretrainedEmbedder(dim=4).fit_transform(views)
    np.testing.assert_allclose(direct.to_numpy(), table.to_numpy())  # every band kept, dim ignored without pca
    reduced_model = PretrainedEmbedder(dim=4, pca=True).fit(views)
    reduced = reduced_model.transform(views)
    assert reduced.shape == (30, 4)
    x = table.to_numpy() - table.to_numpy().mean(axis=0)
    np.testing.assert_allclose(np.abs(reduced.to_numpy()), np.abs(x @ np.linalg.svd(x)[2][:4].T), atol=1e-9)
    # inductive: saved and loaded, it embeds other regions with the fitted components
    folder = reduced_model.save(tmp_path / "pretrained")
    loaded = load_embedder(str(folder))
    other = _views(seed=1)
    np.testing.assert_allclose(loaded.transform(other).to_numpy(), reduced_model.transform(other).to_numpy())
    assert loaded.inputs()["rasters"]["names"] == ["aef"]


def test_refuses_views_without_an_embedding_raster() -> None:
    views = _views()
    del views.tables["embedding"]
    with pytest.raises(InputError, match='kind = "embedding"'):
        PretrainedEmbedder().fit(views)


def test_hafusion_and_cookie_take_the_embedding_as_a_view() -> None:
    views = _views()
    hafusion = HAFusionEmbedder(dim=8, seed=0, **TINY).fit(views)
    assert "embedding" in hafusion.vocabulary and hafusion.transform(views).shape == (30, 8)
    cookie = CooKIEEmbedder(dim=8, seed=0, device="cpu", hidden=16, stage1_epochs=2, stage2_epochs=2).fit(views)
    assert cookie.meta["sources"] == {"poi": "poi_counts", "embedding": "embedding"}
    assert np.isfinite(cookie.transform(views).to_numpy()).all()


def test_full_job_from_an_osm_extract_and_an_embedding_raster(tmp_path, small_city) -> None:
    """The CLI runs baseline, pretrained and fusion on POIs from a .osm.pbf and a 64-band COG; pretrained is a
    fusion block and a leaderboard row like the others."""
    from affine import Affine

    from backend.cli import main
    from tests.backend.conftest import TOY_X0, TOY_Y0

    nodes, tags = [], ["cafe", "bank", "school", "park"]  # the small city's POIs, as OSM nodes
    for i in range(16):
        x, y = 100 * (i % 4), 100 * (i // 4)
        for j in range(3):
            nodes.append({"id": 1 + 3 * i + j, "xy": (x + 20 + 30 * j, y + 25 + 25 * j),
                          "tags": {"amenity": tags[(i + j * (i % 3)) % 4]}})
    write_pbf(tmp_path / "city.osm.pbf", nodes)
    data = np.random.default_rng(0).normal(size=(64, 40, 40)).astype("float32")
    write_cog(tmp_path / "aef.tif", data, transform=Affine.translation(TOY_X0, TOY_Y0 + 400) @ Affine.scale(10, -10))
    cfg = dict(small_city)
    cfg["pois"] = {"path": "city.osm.pbf"}
    cfg["rasters"] = [{"path": "aef.tif", "kind": "embedding", "name": "aef"}]
    cfg["methods"] = [{"name": "baseline", "dim": 4}, {"name": "pretrained", "dim": 4, "params": {"pca": True}},
                      {"name": "fusion", "dim": 4, "params": {"inner_folds": 2}}]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["run", str(tmp_path / "config.json"), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    methods = {m["method"] for m in manifest["metrics"]}
    assert {"baseline", "pretrained", "fusion"} <= methods
    blocks = json.dumps(manifest)
    assert "pretrained" in blocks and "embedding" in blocks
    saved = json.loads((tmp_path / "out" / "models" / "fusion" / "fusion.json").read_text())
    assert "pretrained" in saved["sources"] and "embedding" in saved["views"]
    assert any("48 tagged nodes" in line for line in manifest["report"])

    # Inductive: the saved models embed the regions again from the raster's path alone (read as an embedding).
    from backend.jobs import run_apply_job

    for method in ("pretrained", "fusion"):
        job = {"model": str(tmp_path / "out" / "models" / method), "regions": str(tmp_path / "regions.gpkg"),
               "id_field": "rid", "rasters": [str(tmp_path / "aef.tif")], "pois": str(tmp_path / "city.osm.pbf"),
               "output": str(tmp_path / f"apply_{method}.gpkg")}
        result = run_apply_job(job)
        assert result["n_regions"] == 16 and result["dim"] == 4
        assert not any("lack" in line for line in result["report"]), result["report"]
