"""Tests of backend.tasks.targets: count/density/rate targets, log1p, inverse, dropped regions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backend.config import LabelSpec
from backend.errors import ConfigError, InputError
from backend.tasks.targets import MIN_REGIONS, make_target

N = 30


@pytest.fixture
def data() -> tuple[pd.Series, pd.Series, pd.Series]:
    rng = np.random.default_rng(7)
    idx = pd.Index([f"r{i:02d}" for i in range(N)], name="region_id")
    raw = pd.Series(rng.poisson(40, N).astype(float), index=idx, name="crime")
    areas = pd.Series(rng.uniform(0.2, 3.0, N), index=idx)
    per = pd.Series(rng.integers(500, 3000, N).astype(float), index=idx)
    return raw, areas, per


@pytest.mark.parametrize("kind", ["count", "density", "rate"])
@pytest.mark.parametrize("log1p", [False, True])
def test_inverse_round_trip(data: tuple[pd.Series, pd.Series, pd.Series], kind: str, log1p: bool) -> None:
    raw, areas, per = data
    spec = LabelSpec(name="crime", field="Crime", target=kind, per_field="Population", log1p=log1p)
    t = make_target(raw, spec, areas, per)
    assert t.n_dropped == 0
    assert t.y.index.name == "region_id"
    assert list(t.y.index) == list(raw.index)
    pd.testing.assert_series_equal(t.inverse(t.y), raw.astype(float), check_names=False, rtol=1e-12)
    # an array in the order of y works too
    np.testing.assert_allclose(t.inverse(t.y.to_numpy()).to_numpy(), raw.to_numpy(), rtol=1e-12)


def test_model_space_values(data: tuple[pd.Series, pd.Series, pd.Series]) -> None:
    raw, areas, per = data
    dens = make_target(raw, LabelSpec(name="c", field="Crime", target="density", log1p=True), areas, None)
    np.testing.assert_allclose(dens.y.to_numpy(), np.log1p(raw / areas).to_numpy())
    assert dens.description == "log1p(Crime per km\u00b2)"  # the same units the metrics dialog shows
    assert dens.units == "log1p(per km\u00b2)"
    rate = make_target(raw, LabelSpec(name="c", field="Crime", target="rate", per_field="Pop"), areas, per)
    np.testing.assert_allclose(rate.y.to_numpy(), (raw / per).to_numpy())
    assert rate.description == "Crime per Pop"
    assert rate.units == "per Pop"
    count = make_target(raw, LabelSpec(name="c", points="crimes.gpkg"), areas, None)
    assert count.description == "c" and count.units == "count"
    np.testing.assert_allclose(count.y.to_numpy(), raw.to_numpy())


def test_inverse_aligns_on_index(data: tuple[pd.Series, pd.Series, pd.Series]) -> None:
    raw, areas, _ = data
    t = make_target(raw, LabelSpec(name="c", field="Crime", target="density"), areas, None)
    shuffled = t.y.iloc[::-1]
    back = t.inverse(shuffled)
    np.testing.assert_allclose(back.to_numpy(), raw.iloc[::-1].to_numpy())
    unknown = t.inverse(pd.Series([1.0], index=pd.Index(["nope"], name="region_id")))
    assert unknown.isna().all()
    with pytest.raises(ValueError, match="predictions"):
        t.inverse(np.zeros(3))


def test_dropped_regions_are_counted(data: tuple[pd.Series, pd.Series, pd.Series]) -> None:
    raw, areas, per = data
    raw = raw.copy()
    areas = areas.copy()
    per = per.copy()
    raw.iloc[[0, 1]] = np.nan
    areas.iloc[2] = 0.0
    areas.iloc[3] = np.nan
    per.iloc[4] = 0.0
    per = per.drop(per.index[5])  # missing denominator row

    dens = make_target(raw, LabelSpec(name="c", field="Crime", target="density"), areas, None)
    assert dens.n_dropped == 4
    assert set(dens.y.index).isdisjoint(raw.index[:4])
    assert dens.y.notna().all()

    rate = make_target(raw, LabelSpec(name="c", field="Crime", target="rate", per_field="P"), areas, per)
    assert rate.n_dropped == 4  # two NaN values, a zero and a missing denominator

    # a count does not use the area, so only the missing values go
    count = make_target(raw, LabelSpec(name="c", field="Crime"), areas, None)
    assert count.n_dropped == 2


def test_too_few_regions_names_the_label() -> None:
    idx = pd.Index(range(MIN_REGIONS + 2), name="region_id")
    raw = pd.Series(np.arange(MIN_REGIONS + 2, dtype=float), index=idx)
    raw.iloc[:3] = np.nan
    areas = pd.Series(1.0, index=idx)
    with pytest.raises(InputError, match="burglary"):
        make_target(raw, LabelSpec(name="burglary", field="B"), areas, None)
    raw.iloc[:3] = 1.0
    assert len(make_target(raw, LabelSpec(name="burglary", field="B"), areas, None).y) == MIN_REGIONS + 2


def test_bad_inputs(data: tuple[pd.Series, pd.Series, pd.Series]) -> None:
    raw, areas, _ = data
    with pytest.raises(ConfigError, match="per_field"):
        make_target(raw, LabelSpec(name="c", field="C", target="rate", per_field="Pop"), areas, None)
    with pytest.raises(ConfigError):
        make_target(raw, LabelSpec(name="c", field="C", target="share"), areas, None)
    text = pd.Series(["a"] * N, index=raw.index)
    with pytest.raises(InputError, match="not numbers"):
        make_target(text, LabelSpec(name="c", field="C"), areas, None)
    negative = raw - 1000.0
    with pytest.raises(InputError, match="log1p"):
        make_target(negative, LabelSpec(name="c", field="C", log1p=True), areas, None)
