"""Fixtures for shard_tools tests: small real JPEGs and a tiny synthetic dataset."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shard_tools.synth import make_synthetic


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 128)) -> bytes:
    """A real, noisy JPEG (width, height) that differs per seed."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    img = Image.fromarray(a).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def jpeg() -> Callable[..., bytes]:
    return jpeg_bytes


def write_files(root: Path, names: list[str], seed0: int = 0) -> None:
    """Write a distinct real JPEG at each relative path under `root`."""
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg_bytes(seed0 + i))


@pytest.fixture
def files() -> Callable[..., None]:
    return write_files


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny synthetic Market-layout set (12 identities, 3 cameras, 60 unlabeled images)."""
    out = tmp_path_factory.mktemp("synth")
    make_synthetic(out, identities=12, cameras=3, unlabeled=60, seed=3)
    return out


@pytest.fixture
def tree_bytes() -> Callable[[Path], dict[str, bytes]]:
    """Every visible file of a shard folder (shards + manifest) by name: equality means identical output."""

    def read(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}

    return read
