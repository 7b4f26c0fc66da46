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


@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("make,reason", [
    (lambda j: b"", "empty file"),
    (lambda j: b"hello, not an image\n", "not an image"),
    (lambda j: png_bytes(), "not a JPEG (PNG)"),
    (lambda j: j[: len(j) // 2], "truncated JPEG"),
    (lambda j: j[:40] + j[-2:], "corrupt JPEG (segment"),
    (lambda j: j[:20] + b"\x00" * 100 + j[-2:], "corrupt JPEG (no marker"),
])
def test_bad_inputs_get_a_reason(jpeg, make, reason, decode):
    assert jpeg_problem(make(jpeg(1)), decode=decode).startswith(reason)


def test_bogus_huffman_table_is_caught_only_by_the_decode(jpeg):
    damaged = bytearray(jpeg(2))
    dht = damaged.index(b"\xff\xc4")
    damaged[dht + 5: dht + 21] = b"\xff" * 16  # code counts that cannot form a Huffman table
    damaged = bytes(damaged)
    assert jpeg_problem(damaged, decode=False) is None
    assert jpeg_problem(damaged, decode=True).startswith("corrupt JPEG")
