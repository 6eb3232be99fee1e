"""ReFound's POI tokens: Z-order, grid cells, word pieces and the compact vocabularies they index.

ReFound (Xiao, Zhou, Liu, Huang, Lu, Zhang and Xiong, "ReFound: Crafting a Foundation Model for Urban Region
Understanding upon Language and Visual Foundations", KDD 2024) reads a region's POIs as one token sequence:
``[CLS]``, then the word pieces of each POI's name followed by ``[SEP]``, the POIs sorted along a Z-order
(Morton) curve so that POIs close in space are close in the sequence. Every token carries five ids:

=============  ==================================================================================
``ids``        compact word-piece id (:class:`PieceVocabulary`): PAD=0, CLS=1, SEP=2, MASK=3, UNK=4
``name_pos``   position of the piece within its name, 1..``max_name_pos``; 0 for specials/padding
``poi_pos``    1-based rank of the POI in Z-order (clipped to ``max_pois``) for its pieces and its
               ``[SEP]``; 0 for ``[CLS]``/padding
``grid``       1 + the POI's cell in a ``grid`` x ``grid`` grid over the sample's bounding square
               (row 0 north, column 0 west); 0 for specials/padding
``category``   compact category id (:class:`CategoryVocabulary`): 0 none, 1 unknown, names from 2
=============  ==================================================================================

Word pieces come from the packaged all-MiniLM-L6-v2 tokenizer (a BERT uncased WordPiece vocabulary of
30,522 pieces); only the pieces that occur in the city get a compact id, which keeps the embedding and the
masked-token head small. A POI without a name is written as its category label (underscores as spaces).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from backend.encoders.text import DEFAULT_TEXT_ENCODER
from backend.errors import ConfigError

__all__ = [
    "CLS",
    "MASK",
    "MAX_NAME_POS",
    "N_SPECIAL",
    "PAD",
    "SEP",
    "UNK",
    "CategoryVocabulary",
    "PieceVocabulary",
    "TokenBatch",
    "grid_cells",
    "load_tokenizer",
    "morton_codes",
    "poi_label",
    "square_bounds",
    "tokenize_samples",
    "tokenizer_ids",
    "zorder",
]

PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
#: Number of special piece ids; real word pieces start here.
N_SPECIAL = 5
#: Longest name, in word pieces (longer names are cut).
MAX_NAME_POS = 16

_NO_CATEGORY, _UNKNOWN_CATEGORY = 0, 1
_N_CATEGORY_SPECIAL = 2


# --------------------------------------------------------------------------------------------------- vocabularies
class _Vocabulary:
    """Distinct values with compact ids: the ids below :attr:`reserved` are specials and value ``values[i]`` has id
    ``reserved + i``. Saved as ``{key: values}`` (:meth:`to_dict`)."""

    #: Number of special ids before the first value.
    reserved: ClassVar[int]
    #: Name of the values in :meth:`to_dict`.
    key: ClassVar[str]
    #: How a stored value is normalised (``int`` or ``str``).
    cast: ClassVar[Callable[[Any], Any]]

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = [self.cast(v) for v in values]
        self._lookup = {v: self.reserved + i for i, v in enumerate(self.values)}
        if len(self._lookup) != len(self.values):
            raise ValueError(f"{type(self).__name__}: {self.key.replace('_', ' ')} must be distinct.")

    def __len__(self) -> int:
        return self.reserved + len(self.values)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.values == self.values  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.values!r})"

    def to_dict(self) -> dict:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {self.key: list(self.values)}

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        """Inverse of :meth:`to_dict`."""
        return cls(d[cls.key])


class PieceVocabulary(_Vocabulary):
    """Compact ids for the tokenizer's word pieces seen in a city.

    Compact ids 0..4 are the specials (PAD, CLS, SEP, MASK, UNK); compact id ``5 + i`` is the tokenizer
    id ``values[i]``.
    """

    reserved, key, cast = N_SPECIAL, "tokenizer_ids", int

    @classmethod
    def build(cls, tokenized: Iterable[Sequence[int]], min_count: int = 1) -> PieceVocabulary:
        """The sorted tokenizer ids that occur at least ``min_count`` times in ``tokenized``.

        Args:
            tokenized: Tokenizer ids of each text (see :func:`tokenizer_ids`).
            min_count: Fewer occurrences than this and a piece is left out (encoded as UNK).
        """
        counts: Counter[int] = Counter()
        for ids in tokenized:
            counts.update(int(t) for t in ids)
        return cls(sorted(t for t, c in counts.items() if c >= min_count))

    def encode(self, tokenizer_ids: Sequence[int]) -> list[int]:
        """Compact ids of tokenizer ids; pieces not in the vocabulary become UNK."""
        return [self._lookup.get(int(t), UNK) for t in tokenizer_ids]


class CategoryVocabulary(_Vocabulary):
    """Compact ids for POI categories: 0 none (specials, padding), 1 unknown, the sorted names from 2."""

    reserved, key, cast = _N_CATEGORY_SPECIAL, "categories", str

    @classmethod
    def build(cls, categories: Iterable[Any]) -> CategoryVocabulary:
        """The sorted distinct category names (missing values left out)."""
        return cls(sorted({str(c) for c in categories if _present(c)}))

    def encode(self, categories: Iterable[Any]) -> np.ndarray:
        """int64 ids of category names; names not in the vocabulary (or missing) become 1 (unknown)."""
        return np.array(
            [self._lookup.get(str(c), _UNKNOWN_CATEGORY) if _present(c) else _UNKNOWN_CATEGORY for c in categories],
            dtype=np.int64,
        )


def _present(value: Any) -> bool:
    """False for None, NaN and blank strings."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and not value.strip())


# ------------------------------------------------------------------------------------------------------ tokenizer
def load_tokenizer(name: str = DEFAULT_TEXT_ENCODER) -> Any:
    """The word-piece tokenizer of a registered text encoder or of a local model folder, offline.

    Args:
        name: ``"all-MiniLM-L6-v2"`` (the packaged model), the path of a local Hugging Face model folder, or
            a hub name (``owner/model``) already in the local Hugging Face cache.

    Returns:
        A ``transformers`` tokenizer.

    Raises:
        ConfigError: If ``name`` is neither the packaged model nor a folder, or no tokenizer can be read from it
            (nothing is ever downloaded).
    """
    from transformers import AutoTokenizer

    from backend.encoders.registry import ENCODERS, text_model_path

    if name in ENCODERS and ENCODERS[name].kind == "text":
        path = text_model_path()
    elif Path(name).is_dir():
        path = Path(name)
    elif name in ENCODERS or "/" not in name:
        raise ConfigError(
            f"Unknown tokenizer '{name}': use '{DEFAULT_TEXT_ENCODER}', the path of a local model folder or a Hugging "
            "Face model name already in the local cache (RegionLens downloads nothing at run time)."
        )
    else:  # a hub name: only from the local Hugging Face cache
        try:
            # local_files_only: nothing is downloaded, so there is no remote revision to pin
            return AutoTokenizer.from_pretrained(name, local_files_only=True)  # nosec B615
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"Tokenizer '{name}' is not in the local Hugging Face cache ({exc}); RegionLens downloads nothing "
                "at run time: download it once yourself or give a local folder."
            ) from exc
    folder = str(path)
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)  # nosec B615 # a local folder, offline
    except (OSError, ValueError) as exc:
        raise ConfigError(f"No tokenizer could be read from '{path}': {exc}") from exc


def poi_label(category: str, name: str | None) -> str:
    """The text a POI is tokenised from: its name if it has one, else its category with '_' as spaces."""
    if _present(name):
        return str(name).strip()
    return str(category).replace("_", " ").strip() if _present(category) else ""


def tokenizer_ids(texts: Iterable[str], tokenizer: Any, cache: dict) -> list[list[int]]:
    """Tokenizer ids (no special tokens) of each text, each distinct text tokenised once.

    Args:
        texts: The texts.
        tokenizer: A ``transformers`` tokenizer (see :func:`load_tokenizer`).
        cache: ``text -> tokenizer ids``; filled with the texts not yet in it (pass the same dict across calls).

    Returns:
        One list of tokenizer ids per text, in order.
    """
    texts = list(texts)
    missing = sorted({t for t in texts if t not in cache})
    if missing:
        encoded = tokenizer(missing, add_special_tokens=False)["input_ids"]
        for text, ids in zip(missing, encoded, strict=True):
            cache[text] = [int(i) for i in ids]
    return [cache[t] for t in texts]


# --------------------------------------------------------------------------------------------------------- space
def square_bounds(bounds: Sequence[float]) -> tuple[float, float, float, float]:
    """Bounds ``(minx, miny, maxx, maxy)`` widened to a square around their centre (as the image chips)."""
    from backend.views.imagery import _square_bounds

    x0, y0, x1, y1 = (float(b) for b in bounds)
    return _square_bounds((x0, y0, x1, y1))


def _unit_coords(x: Any, y: Any, bounds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates as fractions of the bounding square: u east from the west edge, v south from the north edge.

    ``bounds`` is one ``(minx, miny, maxx, maxy)`` or one row per point (N x 4). Non-finite values become 0.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    b = np.asarray(bounds, dtype=np.float64)
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    half = np.maximum(x1 - x0, y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side = np.where(2.0 * half > 0, 2.0 * half, 1.0)  # a degenerate square puts every point in cell 0
    u = (x - (cx - half)) / side
    v = ((cy + half) - y) / side
    return np.nan_to_num(u, nan=0.0, posinf=1.0, neginf=0.0), np.nan_to_num(v, nan=0.0, posinf=1.0, neginf=0.0)


def _quantise(u: np.ndarray, n: int) -> np.ndarray:
    return np.clip(np.floor(u * n), 0, n - 1).astype(np.int64)


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Put bit i of each (32-bit) value at bit 2i."""
    v = v.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    for shift, mask in (
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    ):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def morton_codes(x: Any, y: Any, bounds: Any, bits: int = 16) -> np.ndarray:
    """Morton (Z-order) codes of points within the bounding square of ``bounds``.

    Coordinates are quantised to ``2**bits`` steps over the bounding square, x from the west edge and y from
    the NORTH edge (as image rows); bit i of x goes to bit 2i of the code and bit i of y to bit 2i+1. So the
    four quadrants come in the order north-west, north-east, south-west, south-east.

    Args:
        x: Easting of each point.
        y: Northing of each point.
        bounds: ``(minx, miny, maxx, maxy)`` of the sample (widened to a square here), or one row per point.
        bits: Bits per axis (1..32).

    Returns:
        uint64 codes, one per point.

    Raises:
        ValueError: If ``bits`` is out of range.
    """
    if not 1 <= bits <= 32:
        raise ValueError(f"morton_codes: bits must be in 1..32, got {bits}.")
    u, v = _unit_coords(x, y, bounds)
    n = 1 << bits
    return _spread_bits(_quantise(u, n)) | (_spread_bits(_quantise(v, n)) << np.uint64(1))


def zorder(x: Any, y: Any, bounds: Any) -> np.ndarray:
    """Indices that sort points along the Z-order curve (ties keep the original order)."""
    return np.argsort(morton_codes(x, y, bounds), kind="stable")


def grid_cells(x: Any, y: Any, bounds: Any, grid: int = 16) -> np.ndarray:
    """Cell ids ``row * grid + col`` of points in a ``grid`` x ``grid`` grid over the bounding square.

    Row 0 is the north edge (as image row 0), column 0 the west edge; points outside are clipped to the
    border cells.

    Args:
        x: Easting of each point.
        y: Northing of each point.
        bounds: ``(minx, miny, maxx, maxy)`` of the sample (widened to a square here), or one row per point.
        grid: Cells per side.

    Returns:
        int64 cell ids in ``0 .. grid * grid - 1``.
    """
    u, v = _unit_coords(x, y, bounds)
    return _quantise(v, grid) * grid + _quantise(u, grid)


# ------------------------------------------------------------------------------------------------------- samples
@dataclass
class TokenBatch:
    """The POI tokens of S samples, padded to L = ``max_tokens`` (all S x L int64 unless said)."""

    ids: np.ndarray  # compact piece ids (PAD, CLS, SEP, MASK, UNK, pieces from 5)
    name_pos: np.ndarray  # position within the name, 1..max_name_pos; 0 for specials/padding
    poi_pos: np.ndarray  # Z-order rank of the POI (1-based, clipped to max_pois) for its pieces and [SEP]
    grid: np.ndarray  # cell id + 1 of the POI for its pieces; 0 for specials/padding
    category: np.ndarray  # compact category id for its pieces; 0 for specials/padding
    valid: np.ndarray  # bool, False for padding
    n_pois: np.ndarray  # (S,) POIs kept per sample

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def tokenize_samples(
    pois: pd.DataFrame,
    sample_ids: Sequence[str],
    bounds: np.ndarray,
    tokenizer: Any,
    pieces: PieceVocabulary,
    categories: CategoryVocabulary,
    max_tokens: int,
    grid: int = 16,
    max_pois: int = 511,
    piece_cache: dict | None = None,
    max_name_pos: int = MAX_NAME_POS,
) -> TokenBatch:
    """ReFound's POI token sequences of samples.

    Each sequence is ``[CLS]`` followed, for each POI of the sample in Z-order over its bounding square, by
    the word pieces of :func:`poi_label` (at most ``max_name_pos``) and ``[SEP]``. POIs are kept whole: the
    first POI that would overflow ``max_tokens`` ends the sequence. Padding is PAD.

    Args:
        pois: One row per POI with columns ``x``, ``y``, ``sample_id`` (or ``region_id``), ``category`` and
            ``name`` (str or None).
        sample_ids: The samples, in output order; POIs of other samples are ignored.
        bounds: S x 4 ``(minx, miny, maxx, maxy)`` of each sample (widened to its bounding square here).
        tokenizer: A ``transformers`` tokenizer (see :func:`load_tokenizer`).
        pieces: Compact piece vocabulary.
        categories: Compact category vocabulary.
        max_tokens: Sequence length L (>= 1).
        grid: POI grid cells per side.
        max_pois: Largest POI-position id.
        piece_cache: ``text -> tokenizer ids`` shared across calls (see :func:`tokenizer_ids`).
        max_name_pos: Longest name in pieces.

    Returns:
        The :class:`TokenBatch`.

    Raises:
        ValueError: If ``max_tokens``, ``grid``, ``max_pois`` or ``max_name_pos`` is below 1, a column is
            missing, or ``bounds`` is not S x 4.
    """
    for arg, value in (("max_tokens", max_tokens), ("grid", grid), ("max_pois", max_pois),
                       ("max_name_pos", max_name_pos)):
        if value < 1:
            raise ValueError(f"tokenize_samples: {arg} must be at least 1, got {value}.")
    sample_col = "sample_id" if "sample_id" in pois.columns else "region_id"
    missing = [c for c in ("x", "y", sample_col, "category", "name") if c not in pois.columns]
    if missing:
        raise ValueError(f"tokenize_samples: the POI frame lacks the column(s) {missing}.")
    sample_ids = [str(s) for s in sample_ids]
    n = len(sample_ids)
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4) if n else np.zeros((0, 4))
    if bounds.shape != (n, 4):
        raise ValueError(f"tokenize_samples: bounds must be {n} x 4, got {bounds.shape}.")

    shape = (n, max_tokens)
    ids = np.zeros(shape, dtype=np.int64)
    name_pos = np.zeros(shape, dtype=np.int64)
    poi_pos = np.zeros(shape, dtype=np.int64)
    cells = np.zeros(shape, dtype=np.int64)
    cats = np.zeros(shape, dtype=np.int64)
    valid = np.zeros(shape, dtype=bool)
    n_pois = np.zeros(n, dtype=np.int64)
    ids[:, 0] = CLS
    valid[:, 0] = True

    row_of = {s: i for i, s in enumerate(sample_ids)}
    sample_row = np.array([row_of.get(str(s), -1) for s in pois[sample_col]], dtype=np.int64)
    keep = np.flatnonzero(sample_row >= 0)
    if n == 0 or keep.size == 0:
        return TokenBatch(ids, name_pos, poi_pos, cells, cats, valid, n_pois)

    rows = sample_row[keep]
    x = pois["x"].to_numpy(dtype=np.float64)[keep]
    y = pois["y"].to_numpy(dtype=np.float64)[keep]
    labels = [poi_label(c, m) for c, m in zip(pois["category"].to_numpy()[keep], pois["name"].to_numpy()[keep],
                                                strict=True)]
    cache = piece_cache if piece_cache is not None else {}
    distinct = sorted(set(labels))
    encoded = dict(zip(distinct, (pieces.encode(t[:max_name_pos]) for t in tokenizer_ids(distinct, tokenizer, cache)),
                       strict=True))
    poi_cells = grid_cells(x, y, bounds[rows], grid) + 1
    poi_cats = categories.encode(pois["category"].to_numpy()[keep])
    order = np.lexsort((np.arange(rows.size), morton_codes(x, y, bounds[rows]), rows))  # by sample, code, input

    starts = np.searchsorted(rows[order], np.arange(n + 1))
    for s in range(n):
        pos, k = 1, 0
        for j in order[starts[s]:starts[s + 1]]:
            piece_ids = encoded[labels[j]]
            end = pos + len(piece_ids) + 1
            if end > max_tokens:
                break
            k += 1
            ids[s, pos:end - 1] = piece_ids
            ids[s, end - 1] = SEP
            name_pos[s, pos:end - 1] = np.arange(1, len(piece_ids) + 1)
            poi_pos[s, pos:end] = min(k, max_pois)
            cells[s, pos:end - 1] = poi_cells[j]
            cats[s, pos:end - 1] = poi_cats[j]
            valid[s, pos:end] = True
            pos = end
        n_pois[s] = k
    return TokenBatch(ids, name_pos, poi_pos, cells, cats, valid, n_pois)
