"""``python -m backend.encoders check``: load every registered encoder once and print its output size."""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    """Load each encoder on the CPU and run one tiny input through it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if argv[:1] != ["check"]:
        print("usage: python -m backend.encoders check", file=sys.stderr)
        return 2
    import torch

    from backend.encoders import ENCODERS, get_encoder

    for name, spec in ENCODERS.items():
        t0 = time.perf_counter()
        model = get_encoder(name, device="cpu")
        with torch.no_grad():
            if spec.kind == "text":
                dim = model.encode(["a cafe"]).shape[-1]
            else:
                dim = model.extract_features(torch.zeros(1, 3, 224, 224)).shape[1]
        ok = dim == spec.output_dim
        print(f"{'ok' if ok else 'FAIL'}  {name:20s} {spec.kind:5s} {dim:5d}-d  ({spec.source}, "
              f"{time.perf_counter() - t0:.1f} s)")
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
