"""Adding a method is one module plus one registry line: the registry, its extra-module hook and ``info``.

The toy method (tests/backend/models/toy_method.py) joins the registry through ``REGIONLENS_EXTRA_METHODS``
exactly as a new method module would through ``EMBEDDERS``; the worker then describes it, runs it and
describes a saved toy model, with no other change anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import backend.models as models
from backend.errors import ConfigError
from backend.models import EMBEDDERS, EXTRA_METHODS_ENV, BaselineEmbedder, describe_saved_model, load_embedder, register
from backend.views import Views

ROOT = Path(__file__).resolve().parents[3]
TOY_MODULE = "tests.backend.models.toy_method"


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    """The toy method registered through the environment variable; removed from the registry afterwards."""
    monkeypatch.setenv(EXTRA_METHODS_ENV, f" {TOY_MODULE} ,")
    sys.modules.pop(TOY_MODULE, None)  # imported afresh: its import registers it
    models._import_extra_methods()
    try:
        yield EMBEDDERS["toy"]
    finally:
        EMBEDDERS.pop("toy", None)
        sys.modules.pop(TOY_MODULE, None)


def views(n: int = 6) -> Views:
    ids = pd.Index([f"r{i}" for i in range(n)], name="region_id")
    counts = pd.DataFrame(np.arange(3 * n).reshape(n, 3) % 4, index=ids, columns=["bank", "cafe", "school"])
    return Views(region_ids=ids, tables={"poi_counts": counts})


def test_extra_module_registers_its_method(toy) -> None:
    assert toy.name == "toy" and list(EMBEDDERS)[-1] == "toy"
    described = toy.describe()
    assert described["param_info"]["norm"]["choices"] == ["l1", "l2"]
    assert described["param_info"]["scale"]["min"] == 0.5 and described["param_info"]["scale"]["type"] == "float"
    emb = models.get_embedder("toy", dim=5, norm="l2").fit_transform(views())
    assert emb.shape == (6, 5) and np.isfinite(emb.to_numpy()).all()


def test_saved_toy_model_is_described_and_loaded(toy, tmp_path: Path) -> None:
    model = toy(dim=4).fit(views())
    model.save(tmp_path / "toy")
    described = describe_saved_model(str(tmp_path / "toy"))
    assert described["name"] == "toy" and described["title"] == toy.title and described["dim"] == 4
    assert list(described["inputs"]) == ["regions", "pois"] and described["inputs"]["pois"]["required"]
    again = load_embedder(str(tmp_path / "toy")).transform(views())
    assert np.allclose(again.to_numpy(), model.transform(views()).to_numpy())


def test_a_module_that_cannot_be_imported_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_METHODS_ENV, "tests.backend.models.no_such_method")
    with pytest.raises(ConfigError, match="no_such_method.*cannot be imported"):
        models._import_extra_methods()


def test_register_refuses_a_second_class_under_a_taken_name() -> None:
    assert register(BaselineEmbedder) is BaselineEmbedder  # the same class again: nothing changes

    class Impostor(BaselineEmbedder):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        register(Impostor)
    with pytest.raises(ConfigError, match="not a region embedder"):
        register(dict)  # type: ignore[arg-type]
    assert EMBEDDERS["baseline"] is BaselineEmbedder


def test_worker_info_offers_the_toy_method() -> None:
    """The worker process started with the variable describes the toy method beside the others."""
    env = dict(os.environ, **{EXTRA_METHODS_ENV: TOY_MODULE})
    code = "import json; from backend.worker import info; print(json.dumps(info()['methods']))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    methods = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(methods)[:-1] == [m for m in EMBEDDERS if m != "toy"] and list(methods)[-1] == "toy"
    assert methods["toy"]["params"] == {"scale": 2.0, "norm": "l1", "repeats": 3, "centre": False}
