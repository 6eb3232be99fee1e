"""ReFound POI tokens: Z-order, grid cells, token sequences with the packaged tokenizer, vocabularies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backend.errors import ConfigError
from backend.models.refound.tokens import (
    CLS,
    PAD,
    SEP,
    UNK,
    CategoryVocabulary,
    PieceVocabulary,
    grid_cells,
    load_tokenizer,
    morton_codes,
    poi_label,
    square_bounds,
    tokenize_samples,
    tokenizer_ids,
    zorder,
)

SQUARE = (0.0, 0.0, 160.0, 160.0)  # 16 x 16 cells of 10 m


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


class CountingTokenizer:
    """Wraps a tokenizer and records the texts it is asked to tokenise."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: list[str] = []

    def __call__(self, texts, **kwargs):
        self.seen.extend(texts)
        return self.inner(texts, **kwargs)


# ------------------------------------------------------------------------------------------------- space
def test_morton_quadrants_come_nw_ne_sw_se():
    # Input order SE, SW, NE, NW; y is measured from the north edge, so the Z runs NW -> NE -> SW -> SE.
    x = [75.0, 25.0, 75.0, 25.0]
    y = [25.0, 25.0, 75.0, 75.0]
    bounds = (0.0, 0.0, 100.0, 100.0)
    assert morton_codes(x, y, bounds, bits=1).tolist() == [3, 2, 1, 0]
    assert zorder(x, y, bounds).tolist() == [3, 2, 1, 0]


def test_morton_codes_interleave_bits():
    # bits=2 over a 4 m square: qx = floor(x), qy = floor(4 - y); x bit i -> code bit 2i, y bit i -> 2i+1.
    x = [0.5, 1.5, 0.5, 2.5, 3.5]
    y = [3.5, 3.5, 2.5, 2.5, 0.5]
    codes = morton_codes(x, y, (0.0, 0.0, 4.0, 4.0), bits=2)
    assert codes.dtype == np.uint64
    # (qx, qy) = (0,0) -> 0; (1,0) -> 1; (0,1) -> 2; (2,1) = (0b10, 0b01) -> 4 + 2 = 6; (3,3) -> 15.
    assert codes.tolist() == [0, 1, 2, 6, 15]
    full = morton_codes([160.0, 0.0], [0.0, 160.0], SQUARE)  # SE corner (clipped), NW corner
    assert full.tolist() == [2**32 - 1, 0]


def test_zorder_ties_keep_input_order_and_bounds_are_squared():
    # Non-square bounds (0, 0, 200, 100) become the square (0, -50, 200, 150).
    assert square_bounds((0, 0, 200, 100)) == (0.0, -50.0, 200.0, 150.0)
    x = [150.0, 10.0, 150.0, 10.0]
    y = [140.0, 140.0, 140.0, -40.0]
    assert zorder(x, y, (0, 0, 200, 100)).tolist() == [1, 0, 2, 3]
    # The cell of (10, -40) in the squared bounds is the south-west one, not clipped from (0, 0, 200, 100).
    assert grid_cells([10.0], [-40.0], (0, 0, 200, 100), grid=4).tolist() == [12]


def test_grid_cells_north_row_zero():
    x = [5.0, 155.0, 5.0, 155.0, 25.0, -10.0, 160.0]
    y = [155.0, 155.0, 5.0, 5.0, 125.0, 200.0, 80.0]
    cells = grid_cells(x, y, SQUARE, grid=16)
    assert cells.dtype == np.int64
    # NW, NE, SW, SE corners; (25, 125) is row 3 col 2; outside points clip to the border cells.
    assert cells.tolist() == [0, 15, 240, 255, 50, 0, 8 * 16 + 15]
    # Per-point bounds give the same cells.
    assert grid_cells(x, y, np.tile(SQUARE, (len(x), 1))).tolist() == cells.tolist()


# ------------------------------------------------------------------------------------------------- tokens
def _three_pois() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [155.0, 5.0, 155.0],  # SE, NW, NE
            "y": [5.0, 155.0, 155.0],
            "sample_id": ["a", "a", "a"],
            "category": ["cafe", "fast_food", "park"],
            "name": ["Blue Bottle", None, "Park"],
        }
    )


def test_poi_label():
    assert poi_label("fast_food", None) == "fast food"
    assert poi_label("fast_food", "  ") == "fast food"
    assert poi_label("cafe", "Blue Bottle") == "Blue Bottle"


def test_tokenize_hand_made_region(tokenizer):
    pois = _three_pois()
    assert tokenizer.tokenize("fast food park blue bottle") == ["fast", "food", "park", "blue", "bottle"]
    fast, food, park, blue, bottle = tokenizer.convert_tokens_to_ids(["fast", "food", "park", "blue", "bottle"])
    cache: dict = {}
    labels = [poi_label(c, n) for c, n in zip(pois["category"], pois["name"], strict=True)]
    pieces = PieceVocabulary.build(tokenizer_ids(labels, tokenizer, cache))
    assert pieces.values == sorted([fast, food, park, blue, bottle])
    assert len(pieces) == 10
    cid = {t: 5 + i for i, t in enumerate(pieces.values)}
    cats = CategoryVocabulary.build(pois["category"])
    assert cats.encode(["cafe", "fast_food", "park", "bar"]).tolist() == [2, 3, 4, 1]

    batch = tokenize_samples(pois, ["a"], np.array([SQUARE]), tokenizer, pieces, cats, max_tokens=12,
                             piece_cache=cache)
    # Z-order: fast food (NW), Park (NE), Blue Bottle (SE).
    assert batch.ids[0].tolist() == [CLS, cid[fast], cid[food], SEP, cid[park], SEP, cid[blue], cid[bottle], SEP,
                                     PAD, PAD, PAD]
    assert batch.name_pos[0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 0, 0, 0, 0]
    assert batch.poi_pos[0].tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3, 0, 0, 0]
    assert batch.grid[0].tolist() == [0, 1, 1, 0, 16, 0, 256, 256, 0, 0, 0, 0]
    assert batch.category[0].tolist() == [0, 3, 3, 0, 4, 0, 2, 2, 0, 0, 0, 0]
    assert batch.valid[0].tolist() == [True] * 9 + [False] * 3
    assert batch.n_pois.tolist() == [3]
    for arr in (batch.ids, batch.name_pos, batch.poi_pos, batch.grid, batch.category):
        assert arr.dtype == np.int64 and arr.shape == (1, 12)
    assert batch.valid.dtype == bool

    # POI positions are clipped to max_pois.
    clipped = tokenize_samples(pois, ["a"], np.array([SQUARE]), tokenizer, pieces, cats, max_tokens=12, max_pois=2)
    assert clipped.poi_pos[0].tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0]


def test_whole_poi_truncation_and_empty_samples(tokenizer):
    pois = _three_pois()
    pieces = PieceVocabulary.build(tokenizer_ids(
        [poi_label(c, n) for c, n in zip(pois["category"], pois["name"], strict=True)], tokenizer, {}))
    cats = CategoryVocabulary.build(pois["category"])
    bounds = np.array([SQUARE, SQUARE])

    def run(max_tokens):
        return tokenize_samples(pois, ["a", "empty"], bounds, tokenizer, pieces, cats, max_tokens=max_tokens)

    six = run(6)  # [CLS] fast food [SEP] park [SEP] fills 6 exactly
    assert six.n_pois.tolist() == [2, 0]
    assert six.ids[0, -1] == SEP and six.valid[0].all()
    five = run(5)  # park [SEP] no longer fits: stop after the first POI, no partial POI
    assert five.n_pois[0] == 1
    assert five.ids[0, 3] == SEP and five.ids[0, 4] == PAD and five.valid[0].tolist() == [True] * 4 + [False]
    three = run(3)  # even the first POI (3 tokens + [CLS]) does not fit
    assert three.n_pois[0] == 0 and three.ids[0].tolist() == [CLS, PAD, PAD]
    for batch in (six, five, three):  # a sample without POIs is [CLS] only
        assert batch.ids[1, 0] == CLS and (batch.ids[1, 1:] == PAD).all()
        assert batch.valid[1].sum() == 1 and batch.grid[1].sum() == 0 and batch.poi_pos[1].sum() == 0
    one = run(1)
    assert one.ids.tolist() == [[CLS], [CLS]]


def test_long_names_are_cut_and_unknown_pieces_are_unk(tokenizer):
    pois = pd.DataFrame({"x": [5.0, 155.0], "y": [155.0, 5.0], "sample_id": ["a", "a"],
                         "category": ["park", "cafe"], "name": [" ".join(["park"] * 20), "Blue Bottle"]})
    park, blue = tokenizer.convert_tokens_to_ids(["park", "blue"])
    pieces = PieceVocabulary([park, blue])  # "bottle" is unknown
    cats = CategoryVocabulary(["park"])  # "cafe" is unknown
    batch = tokenize_samples(pois, ["a"], np.array([SQUARE]), tokenizer, pieces, cats, max_tokens=24)
    ids = batch.ids[0].tolist()
    assert ids[:18] == [CLS] + [5] * 16 + [SEP]
    assert batch.name_pos[0, 1:17].tolist() == list(range(1, 17))
    assert ids[18:21] == [6, UNK, SEP]
    assert batch.category[0, 18:20].tolist() == [1, 1] and batch.category[0, 1] == 2
    assert pieces.encode([park, 12345, blue]) == [5, UNK, 6]


def test_each_text_tokenised_once(tokenizer):
    counting = CountingTokenizer(tokenizer)
    pois = pd.concat([_three_pois(), _three_pois().assign(sample_id="b")], ignore_index=True)
    cache: dict = {}
    pieces = PieceVocabulary.build(tokenizer_ids(["fast food", "Park", "Blue Bottle", "Park"], counting, cache))
    assert sorted(counting.seen) == ["Blue Bottle", "Park", "fast food"]
    cats = CategoryVocabulary.build(pois["category"])
    bounds = np.array([SQUARE, SQUARE])
    batch = tokenize_samples(pois, ["b", "a"], bounds, counting, pieces, cats, max_tokens=10, piece_cache=cache)
    assert len(counting.seen) == 3  # everything came from the cache
    assert batch.ids[0].tolist() == batch.ids[1].tolist() and batch.n_pois.tolist() == [3, 3]
    # POIs of samples not asked for are ignored; region_id works as the sample column.
    other = tokenize_samples(pois.rename(columns={"sample_id": "region_id"}), ["b"], bounds[:1], counting, pieces,
                             cats, max_tokens=10, piece_cache=cache)
    assert other.ids[0].tolist() == batch.ids[0].tolist()


def test_vocabularies_round_trip():
    pieces = PieceVocabulary.build([[7, 3, 7], [100, 3], [42]], min_count=2)
    assert pieces.values == [3, 7]
    back = PieceVocabulary.from_dict(json.loads(json.dumps(pieces.to_dict())))
    assert back == pieces and back.encode([7, 3, 42]) == [6, 5, UNK]
    cats = CategoryVocabulary.build(["park", "cafe", None, "park", float("nan")])
    assert cats.values == ["cafe", "park"] and len(cats) == 4
    cback = CategoryVocabulary.from_dict(json.loads(json.dumps(cats.to_dict())))
    assert cback == cats and cback.encode(["park", "zoo", None]).tolist() == [3, 1, 1]
    assert pieces.to_dict() == {"tokenizer_ids": [3, 7]} and cats.to_dict() == {"categories": ["cafe", "park"]}
    assert back != cback and PieceVocabulary(["3", 7]) == pieces  # ids are stored as integers
    with pytest.raises(ValueError, match="PieceVocabulary: tokenizer ids must be distinct"):
        PieceVocabulary([3, 3])
    with pytest.raises(ValueError, match="CategoryVocabulary: categories must be distinct"):
        CategoryVocabulary(["park", "park"])


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(ConfigError, match="Unknown tokenizer"):
        load_tokenizer("no-such-model")
    with pytest.raises(ConfigError, match="Unknown tokenizer"):
        load_tokenizer("efficientnet-lite0")
    with pytest.raises(ConfigError, match="No tokenizer"):
        load_tokenizer(str(tmp_path))
    # a hub name is read from the local Hugging Face cache only, never downloaded
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        load_tokenizer("regionlens-tests/no-such-model")


def test_load_tokenizer_from_a_hub_name_in_the_local_cache(tmp_path, monkeypatch):
    """A model in the Hugging Face cache layout (models--owner--name/snapshots/<rev>) loads offline by name."""
    from backend.encoders.registry import text_model_path

    cache = tmp_path / "hf"
    snap = cache / "models--someone--minilm" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in text_model_path().iterdir():
        if f.is_file() and ("token" in f.name or f.name in ("vocab.txt", "config.json")):
            (snap / f.name).write_bytes(f.read_bytes())
    (cache / "models--someone--minilm" / "refs").mkdir()
    (cache / "models--someone--minilm" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    tok = load_tokenizer("someone/minilm")
    assert tok.tokenize("blue bottle coffee") == load_tokenizer().tokenize("blue bottle coffee")


def test_tokenize_rejects_bad_arguments(tokenizer):
    pieces, cats = PieceVocabulary([]), CategoryVocabulary([])
    with pytest.raises(ValueError, match="max_tokens"):
        tokenize_samples(_three_pois(), ["a"], np.array([SQUARE]), tokenizer, pieces, cats, max_tokens=0)
    with pytest.raises(ValueError, match="bounds"):
        tokenize_samples(_three_pois(), ["a"], np.array([SQUARE, SQUARE]), tokenizer, pieces, cats, max_tokens=4)
    with pytest.raises(ValueError, match="column"):
        tokenize_samples(_three_pois().drop(columns="name"), ["a"], np.array([SQUARE]), tokenizer, pieces, cats,
                         max_tokens=4)
