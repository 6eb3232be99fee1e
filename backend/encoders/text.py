"""Frozen sentence encodings of texts, each distinct text encoded once, kept in an on-disk cache.

Texts repeat heavily (a city has hundreds of thousands of POIs but a few hundred categories), so each
distinct text is encoded once, and every encoding is kept in a small SQLite file keyed by
``(encoder id, text)``: a rerun, or a second city with the same categories, encodes nothing and does not
even load the encoder. CaLLiPer, CooKIE's POI-text modality and ReFound's text teacher share the cache.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.encoders.cache import encoder_id
from backend.errors import ConfigError, InputError
from backend.progress import Progress

__all__ = ["DEFAULT_TEXT_ENCODER", "TextCache", "TextEncoding", "encode_texts", "load_text_encoder"]

#: Sentence encoder used when none is given (registry name, see backend/encoders/registry.py).
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
#: Distinct texts handed to the encoder per call (progress and cancellation between calls): the first call
#: gets ENCODE_CHUNK_MIN, later ones as many as the measured speed encodes in about ENCODE_CHUNK_SECONDS
#: (long descriptions on a slow CPU: a few; short labels on a GPU: up to ENCODE_CHUNK_MAX).
ENCODE_CHUNK_MIN = 8
ENCODE_CHUNK_MAX = 256
ENCODE_CHUNK_SECONDS = 0.3
_CACHE_WRITE_EVERY = 4096  # encoded texts per write to the cache
_SQL_CHUNK = 500  # texts per SELECT ... IN (json_each(?))


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


def load_text_encoder(name: str, device: str) -> Any:
    """The sentence encoder of the registry (or a local folder); tests count or replace it here."""
    from backend.encoders.registry import get_encoder

    return get_encoder(name, device=device)


def encode_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_TEXT_ENCODER,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    progress: Progress | None = None,
    loader: Callable[[str, str], Any] | None = None,
    index: np.ndarray | None = None,
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
        index: With ``texts`` the distinct texts, the position in ``texts`` of every item (millions of POIs:
            no per-item string list); the result's ``index`` is then this one.

    Returns:
        The :class:`TextEncoding`.

    Raises:
        InputError: If ``texts`` is empty.
        ConfigError: If the encoder is unknown.
        Cancelled: If cancelled.
    """
    t0 = time.perf_counter()
    progress = progress or Progress()
    if len(texts) == 0 or (index is not None and len(index) == 0):
        raise InputError("calliper: no POI texts to encode; the POI layer is empty.")
    if index is None:
        codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object), sort=False)
        unique = [str(t) for t in uniques]
    else:
        unique, codes = [str(t) for t in texts], np.asarray(index, dtype=np.int64)
        if len(set(unique)) != len(unique) or codes.min() < 0 or codes.max() >= len(unique):
            raise ValueError("encode_texts: with index, texts must be distinct and index must point into them.")
    cache = TextCache(cache_dir)
    model_key = encoder_id(encoder)
    found = cache.get_many(model_key, unique)
    missing = [t for t in unique if t not in found]
    if cache.error:
        progress.log(f"calliper: {cache.error}")
    new: dict[str, np.ndarray] = {}
    if missing:
        load = loader or load_text_encoder
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
