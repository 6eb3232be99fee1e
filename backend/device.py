"""Choice of the torch device: CUDA when present, else MPS, else CPU, unless the user overrides it."""

from __future__ import annotations

from backend.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(requested: str = "auto") -> str:
    """Return the device a run will use.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns:
        The device string that will actually be used.

    Raises:
        ConfigError: If a device was asked for explicitly but is not available.
    """
    import torch

    req = (requested or "auto").lower()
    if req == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if req.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device '{requested}' was requested but torch sees no CUDA GPU "
                f"(torch {torch.__version__}). Choose device 'auto' or 'cpu', or install a CUDA build of torch."
            )
        return req
    if req == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("Device 'mps' was requested but is not available; choose 'auto' or 'cpu'.")
        return req
    if req == "cpu":
        return "cpu"
    raise ConfigError(f"Unknown device '{requested}'; use auto, cpu, cuda or mps.")
