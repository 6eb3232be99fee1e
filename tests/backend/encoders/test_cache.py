"""Encoder feature caches: folders, content keys, atomic cache files; the image-feature cache end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.encoders import image as image_encoders
from backend.encoders.cache import array_key, cache_dir, store
from backend.progress import Progress


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REGIONLENS_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir("text") == tmp_path / "c" / "text" and cache_dir("image") == tmp_path / "c" / "image"
    monkeypatch.delenv("REGIONLENS_CACHE_DIR")
    assert cache_dir("image") == Path.home() / ".cache" / "regionlens" / "image"


def test_array_key_depends_on_header_contents_and_order() -> None:
    a, b = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    key = array_key("enc|224", [a, b])
    assert len(key) == 40 and key == array_key("enc|224", [a.copy(), b.copy()])
    assert key != array_key("enc|225", [a, b])
    assert key != array_key("enc|224", [b, a])
    assert key != array_key("enc|224", [a, b"|masks", b])
    changed = b.copy()
    changed[1, 2] = 2.0
    assert key != array_key("enc|224", [a, changed])


def test_store_writes_atomically_and_only_logs_an_unwritable_cache(tmp_path: Path) -> None:
    progress = Progress()
    path = tmp_path / "image" / "features.npy"
    store(path, lambda fh: np.save(fh, np.arange(3.0)), progress, "test: image feature")
    np.testing.assert_array_equal(np.load(path), np.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["features.npy"]
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    store(blocked / "features.npy", lambda fh: np.save(fh, np.arange(3.0)), progress, "test: image feature")
    assert any(m.startswith("test: image feature cache") and "not writable" in m for m in progress.log_messages)


class FakeCNN(torch.nn.Module):
    """A fixed random convolution to 4 channels on a 5 x 5 grid; counts its calls."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        FakeCNN.calls += 1
        return torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.conv2d(x, self.weight, padding=1), 5)


def test_image_features_are_computed_once_then_read_from_the_cache(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    chips = np.random.default_rng(0).random((6, 3, 16, 16)).astype(np.float32)
    masks = np.ones((6, 16, 16), dtype=bool)
    masks[0, :8] = False
    FakeCNN.calls = 0
    first, cached = image_encoders.image_features(chips, masks, image_size=32, cache_dir=tmp_path,
                                                  loader=lambda name, device: FakeCNN())
    assert not cached and first.shape == (6, 4) and FakeCNN.calls == 1
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]
    again, cached = image_encoders.image_features(chips, masks, image_size=32, cache_dir=tmp_path,
                                                   loader=lambda name, device: FakeCNN())
    assert cached and FakeCNN.calls == 1
    np.testing.assert_array_equal(again, first)
    other, cached = image_encoders.image_features(chips, None, image_size=32, cache_dir=tmp_path,
                                                  loader=lambda name, device: FakeCNN())
    assert not cached and len(list(tmp_path.iterdir())) == 2  # other masks: another cache file
    assert not np.allclose(other[0], first[0])
