"""POI descriptions for CaLLiPer and their frozen sentence encodings, cached on disk.

CaLLiPer (Wang, Cheng, Feng, Chen and Zhang, "CaLLiPer: Contrastive Language-Location Pre-training for
urban region representations", arXiv 2411.06229) pairs every POI's location with a short templated
description of the POI, e.g. "A place of cafe" or, with names, "Blue Bottle, a place of cafe". The
descriptions go through a frozen sentence encoder (default: the packaged all-MiniLM-L6-v2, 384-d).

Texts repeat heavily (a city has hundreds of thousands of POIs but a few hundred categories), so each
distinct text is encoded once, and every encoding is kept in a small SQLite file keyed by
``(encoder id, text)``: a rerun, or a second city with the same categories, encodes nothing and does not
even load the encoder.
"""

from __future__ import annotations

import json
import os
import sqlite3
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import ConfigError, InputError
from backend.progress import Progress

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_NAME_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "NAMES_CHOICES",
    "TEMPLATE_FIELDS",
    "TextCache",
    "TextEncoding",
    "build_texts",
    "category_label",
    "check_template",
    "default_cache_dir",
    "encode_texts",
    "encoder_id",
    "use_names",
]

#: Sentence encoder used when none is given (registry name, see backend/encoders/registry.py).
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
#: Description of a POI without a name (``{category}``, ``{article}`` and ``{name}`` can be used).
DEFAULT_TEMPLATE = "A place of {category}"
#: Description of a named POI when names are used.
DEFAULT_NAME_TEMPLATE = "{name}, a place of {category}"
#: Values of the ``names`` parameter: ``auto`` uses names when the POI layer has any.
NAMES_CHOICES = ("auto", "yes", "no")
#: Placeholders a template may use.
TEMPLATE_FIELDS = ("category", "name", "article")
#: Distinct texts handed to the encoder per call (progress and cancellation between calls): the first call
#: gets ENCODE_CHUNK_MIN, later ones as many as the measured speed encodes in about ENCODE_CHUNK_SECONDS
#: (long descriptions on a slow CPU: a few; short labels on a GPU: up to ENCODE_CHUNK_MAX).
ENCODE_CHUNK_MIN = 8
ENCODE_CHUNK_MAX = 256
ENCODE_CHUNK_SECONDS = 0.3
_CACHE_WRITE_EVERY = 4096  # encoded texts per write to the cache
_SQL_CHUNK = 500  # texts per SELECT ... IN (json_each(?))


def category_label(category: Any) -> str:
    """``"place_of_worship"`` -> ``"place of worship"`` (underscores to spaces, trimmed)."""
    return " ".join(str(category).replace("_", " ").split())


def check_template(template: str, what: str = "template") -> None:
    """Check that ``template`` only uses :data:`TEMPLATE_FIELDS` and holds ``{category}`` or ``{name}``.

    Raises:
        ConfigError: On an unknown placeholder, a malformed template, or one without any placeholder.
    """
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"calliper: the {what} '{template}' is malformed ({exc}).") from exc
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            f"calliper: the {what} '{template}' uses unknown placeholders {unknown}; "
            f"allowed: {{category}}, {{name}}, {{article}}."
        )
    if not {"category", "name"} & set(names):
        raise ConfigError(f"calliper: the {what} '{template}' must contain {{category}} (or {{name}}).")


def use_names(names: str, values: Iterable[Any] | None) -> bool:
    """Whether descriptions include POI names.

    Args:
        names: ``"auto"`` (when any POI has a name), ``"yes"`` or ``"no"``.
        values: The POI names (None or empty strings where a POI has none), or None without a name field.
    """
    if names == "no" or values is None:
        return False
    has_any = any(isinstance(v, str) and v.strip() for v in values)
    return has_any if names in ("auto", "yes") else False


def build_texts(
    categories: Sequence[Any],
    names: Sequence[Any] | None = None,
    template: str = DEFAULT_TEMPLATE,
    name_template: str = DEFAULT_NAME_TEMPLATE,
) -> list[str]:
    """One description per POI.

    Args:
        categories: POI categories (underscores become spaces).
        names: POI names (None or blank for a POI without a name), or None to leave names out.
        template: Description of a POI without a name.
        name_template: Description of a named POI (used only when ``names`` is given).

    Returns:
        The descriptions, in input order.

    Raises:
        ConfigError: If a template is invalid.
    """
    check_template(template)
    if names is not None:
        check_template(name_template, "name template")
    # each distinct (category, name) is described once (millions of POIs share a few thousand texts)
    cat_codes, cats = pd.factorize(pd.Series(list(categories), dtype=object), use_na_sentinel=False)
    if names is None:
        name_codes, uniq_names = np.zeros(len(cat_codes), dtype=np.int64), np.array([""], dtype=object)
    else:
        if len(names) != len(cat_codes):
            raise ValueError(f"{len(names)} names for {len(cat_codes)} categories.")
        raw = pd.Series(list(names), dtype=object)
        clean = raw.where(raw.map(lambda v: isinstance(v, str)).astype(bool)).str.strip()
        name_codes, uniq_names = pd.factorize(clean.fillna("").to_numpy(dtype=object))
    width = max(len(uniq_names), 1)
    codes, pairs = pd.factorize(cat_codes.astype(np.int64) * width + name_codes)
    described = []
    for pair in pairs:
        label = category_label(cats[pair // width])
        article = "an" if label[:1].lower() in {"a", "e", "i", "o", "u"} else "a"
        name = str(uniq_names[pair % width])
        chosen = name_template if name else template
        described.append(chosen.format(category=label, name=name, article=article).strip())
    return [described[c] for c in codes]


def default_cache_dir() -> Path:
    """``$REGIONLENS_CACHE_DIR/text`` if set, else ``~/.cache/regionlens/text``."""
    root = os.environ.get("REGIONLENS_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "regionlens") / "text"


def encoder_id(name: str) -> str:
    """The cache key of an encoder: the registry name with its package version, or a folder's absolute path."""
    from backend.encoders.registry import ENCODERS

    if name in ENCODERS:
        import importlib.metadata as md

        try:
            version = md.version(ENCODERS[name].source)
        except md.PackageNotFoundError:
            version = "unknown"
        return f"{name}@{ENCODERS[name].source}=={version}"
    return str(Path(name).expanduser().resolve())


class TextCache:
    """Encodings of texts by ``(encoder id, text)`` in ``<folder>/text_embeddings.sqlite``.

    Args:
        folder: The cache folder (created); ``None`` keeps nothing.

    A folder that cannot be created or written turns the cache off (``self.error`` says why) rather than
    failing the run.
    """

    FILE = "text_embeddings.sqlite"

    def __init__(self, folder: str | Path | None) -> None:
        self.path: Path | None = None
        self.error = ""
        if folder is None:
            return
        path = Path(folder).expanduser() / self.FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect(path) as con:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, text TEXT NOT NULL, dim INTEGER NOT NULL,"
                    " vec BLOB NOT NULL, PRIMARY KEY (model, text))"
                )
            self.path = path
        except (OSError, sqlite3.Error) as exc:
            self.error = f"text cache {path} unusable ({exc}); texts are encoded without a cache"

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(str(path), timeout=30)

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached encodings of ``texts`` (those found) as float32 vectors."""
        if self.path is None or not texts:
            return {}
        found: dict[str, np.ndarray] = {}
        try:
            with self._connect(self.path) as con:
                for start in range(0, len(texts), _SQL_CHUNK):
                    chunk = json.dumps(list(texts[start : start + _SQL_CHUNK]))
                    rows = con.execute(
                        "SELECT text, dim, vec FROM vectors"
                        " WHERE model = ? AND text IN (SELECT value FROM json_each(?))",
                        (model, chunk),
                    )
                    for text, dim, blob in rows:
                        vec = np.frombuffer(blob, dtype=np.float32)
                        if vec.size == dim:
                            found[text] = vec
        except sqlite3.Error as exc:
            self.error = f"text cache {self.path} unreadable ({exc})"
            return {}
        return found

    def put_many(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store the encodings (rows of ``vectors``) of ``texts``."""
        if self.path is None or not len(texts):
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = ((model, t, int(vecs.shape[1]), vecs[i].tobytes()) for i, t in enumerate(texts))
        try:
            with self._connect(self.path) as con:
                con.executemany("INSERT OR REPLACE INTO vectors (model, text, dim, vec) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            self.error = f"text cache {self.path} not writable ({exc})"


@dataclass
class TextEncoding:
    """The encodings of a list of texts, each distinct text once.

    Attributes:
        texts: The distinct texts, in order of first appearance.
        vectors: U x D float32 encodings of ``texts`` (L2-normalised by the encoder).
        index: For every input text, its row in ``vectors`` (int64).
        n_encoded: Distinct texts the encoder ran on in this call (the others came from the cache).
        seconds: Wall time of the call.
    """

    texts: list[str]
    vectors: np.ndarray
    index: np.ndarray
    n_encoded: int
    seconds: float

    @property
    def n_cached(self) -> int:
        """Distinct texts found in the cache."""
        return len(self.texts) - self.n_encoded


def _load_encoder(name: str, device: str) -> Any:
    """The sentence encoder (indirection so tests can count or replace it)."""
    from backend.encoders.registry import get_encoder

    return get_encoder(name, device=device)


def encode_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_ENCODER,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    progress: Progress | None = None,
    loader: Callable[[str, str], Any] | None = None,
) -> TextEncoding:
    """Encode texts with a frozen sentence encoder, each distinct text once, through the on-disk cache.

    Args:
        texts: One text per POI (duplicates expected).
        encoder: Registry name (``all-MiniLM-L6-v2``) or a local sentence-transformers folder.
        cache_dir: Cache folder; None disables the cache.
        device: Torch device of the encoder.
        batch_size: Texts per forward pass of the encoder.
        progress: Progress (cancellation checked while the encoder loads and between chunks of about
            :data:`ENCODE_CHUNK_SECONDS` of encoding; progress reported at least every second).
        loader: ``loader(name, device) -> model`` with sentence-transformers' ``encode``; default: the
            encoder registry. The encoder is loaded only if some text is missing from the cache.

    Returns:
        The :class:`TextEncoding`.

    Raises:
        InputError: If ``texts`` is empty.
        ConfigError: If the encoder is unknown.
        Cancelled: If cancelled.
    """
    t0 = time.perf_counter()
    progress = progress or Progress()
    if len(texts) == 0:
        raise InputError("calliper: no POI texts to encode; the POI layer is empty.")
    codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object), sort=False)
    unique = [str(t) for t in uniques]
    cache = TextCache(cache_dir)
    model_key = encoder_id(encoder)
    found = cache.get_many(model_key, unique)
    missing = [t for t in unique if t not in found]
    if cache.error:
        progress.log(f"calliper: {cache.error}")
    new: dict[str, np.ndarray] = {}
    if missing:
        load = loader or _load_encoder
        model = progress.wait(lambda: load(encoder, device), f"loading {encoder}")
        pending: list[str] = []
        start, size = 0, ENCODE_CHUNK_MIN
        while start < len(missing):
            progress.poll(start / len(missing), f"encoding texts {start:,}/{len(missing):,}")
            chunk = missing[start : start + size]
            t_chunk = time.perf_counter()
            vecs = np.asarray(
                model.encode(chunk, batch_size=min(batch_size, len(chunk)), convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False),
                dtype=np.float32,
            )
            rate = len(chunk) / max(time.perf_counter() - t_chunk, 1e-6)  # texts per second
            size = int(min(ENCODE_CHUNK_MAX, max(ENCODE_CHUNK_MIN, rate * ENCODE_CHUNK_SECONDS)))
            start += len(chunk)
            new.update(zip(chunk, vecs, strict=True))
            pending.extend(chunk)
            if len(pending) >= _CACHE_WRITE_EVERY:  # texts encoded so far survive a cancel
                cache.put_many(model_key, pending, np.stack([new[t] for t in pending]))
                pending = []
        if pending:
            cache.put_many(model_key, pending, np.stack([new[t] for t in pending]))
        if cache.error:
            progress.log(f"calliper: {cache.error}")
    dims = {v.shape[0] for v in (*found.values(), *new.values())}
    if len(dims) != 1:  # e.g. a cached entry of another width under the same key: re-encode everything
        raise ConfigError(f"calliper: the text encodings of '{encoder}' have differing widths {sorted(dims)}; "
                          f"delete the cache file {cache.path} and run again.")
    vectors = np.stack([found[t] if t in found else new[t] for t in unique]).astype(np.float32, copy=False)
    progress.update(1.0, f"{len(unique):,} distinct texts ({len(missing):,} encoded)")
    return TextEncoding(texts=unique, vectors=vectors, index=np.asarray(codes, dtype=np.int64),
                        n_encoded=len(missing), seconds=time.perf_counter() - t0)
