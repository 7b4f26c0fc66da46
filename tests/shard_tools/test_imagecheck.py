"""The per-image check that decides what is skipped while packing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shard_tools.imagecheck import jpeg_problem


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


def test_sound_jpeg_passes(jpeg):
    assert jpeg_problem(jpeg(0)) is None
    assert jpeg_problem(jpeg(0), decode=False) is None


@pytest.mark.parametrize("make,reason", [
    (lambda j: b"", "empty file"),
    (lambda j: b"hello, not an image\n", "not an image"),
    (lambda j: png_bytes(), "not a JPEG (PNG)"),
    (lambda j: j[: len(j) // 2], "truncated JPEG"),
    # markers intact, scan data cut out of the middle: only the decode catches it
    (lambda j: j[:300] + j[-2:], "corrupt JPEG"),
])
def test_bad_inputs_get_a_reason(jpeg, make, reason):
    assert jpeg_problem(make(jpeg(1))).startswith(reason)
