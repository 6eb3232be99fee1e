"""On-disk caches of frozen-encoder features, shared by every method that uses an encoder.

The cache root is ``$REGIONLENS_CACHE_DIR`` if set, else ``~/.cache/regionlens``; each kind of feature has a
folder under it (``text``: sentence encodings, :mod:`backend.encoders.text`; ``image``: image features,
:mod:`backend.encoders.image` and ReFound's vision teacher). A feature file is named by a hash of the encoder
(:func:`encoder_id`), its settings and the input arrays (:func:`array_key`), and written atomically, so a
rerun on the same inputs reads it instead of running the encoder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from backend.io.outputs import replace_atomically
from backend.progress import Progress

__all__ = ["array_key", "cache_dir", "encoder_id", "hash_arrays", "store"]

_HASH_CHUNK = 8 << 20  # bytes hashed between cancellation checks


def cache_dir(kind: str) -> Path:
    """``$REGIONLENS_CACHE_DIR/<kind>`` if set, else ``~/.cache/regionlens/<kind>`` (``text`` or ``image``)."""
    root = os.environ.get("REGIONLENS_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "regionlens") / kind


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


def hash_arrays(h: Any, arrays: Sequence[np.ndarray], progress: Progress | None = None) -> None:
    """Feed the bytes of ``arrays`` into the hash ``h`` a few MB at a time, polling ``progress`` between."""
    progress = progress or Progress()
    for array in arrays:
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        for start in range(0, len(flat), _HASH_CHUNK):
            progress.poll(message="hashing chips for the feature cache")
            h.update(flat[start:start + _HASH_CHUNK].data)


def array_key(header: str, parts: Sequence[np.ndarray | bytes], progress: Progress | None = None) -> str:
    """A 40-hex-digit key of ``header`` and ``parts`` (arrays hashed by content, bytes as they are)."""
    h = hashlib.sha256()
    h.update(header.encode())
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        else:
            hash_arrays(h, [part], progress)
    return h.hexdigest()[:40]


def store(path: Path, write: Callable[[IO[bytes]], Any], progress: Progress, what: str) -> None:
    """Write a cache file atomically; an unwritable cache is logged (``<what> cache ... not writable``), not fatal."""
    try:
        replace_atomically(path, write)
    except OSError as exc:
        progress.log(f"{what} cache {path.parent} not writable ({exc}); features not cached")
