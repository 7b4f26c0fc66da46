"""Is this byte string a JPEG we can store? Cheap enough to run on every one of 4M images."""

from __future__ import annotations

import io

from PIL import Image

MAGIC = {b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WEBP/RIFF", b"II*\x00": "TIFF",
         b"MM\x00*": "TIFF", b"%PDF": "PDF"}
# start-of-frame markers (baseline, progressive, ...); C4 (DHT), C8 (JPG) and CC (DAC) are not frames
SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
SOS, EOI = 0xDA, b"\xff\xd9"


def _marker_problem(data: bytes) -> str | None:
    """Walk the marker segments from SOI to the start of scan: each must be well-formed, a frame
    header with non-zero size must come first, and the file must end with EOI (~5 us in Python)."""
    i, n, frame = 2, len(data), False
    while True:
        if i + 4 > n:
            return "truncated JPEG (header)"
        if data[i] != 0xFF:
            return f"corrupt JPEG (no marker at byte {i})"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2 or i + 2 + length > n:
            return f"corrupt JPEG (segment {marker:02X} runs past the end)"
        if marker in SOF:
            if length < 8 or not (data[i + 5] | data[i + 6]) or not (data[i + 7] | data[i + 8]):
                return "corrupt JPEG (frame header with zero size)"
            frame = True
        elif marker == SOS:
            break
        i += 2 + length
    if not frame:
        return "corrupt JPEG (scan before frame header)"
    if EOI not in data[-64:]:
        return "truncated JPEG (no end-of-image marker)"
    return None


def jpeg_problem(data: bytes, decode: bool = True) -> str | None:
    """The reason `data` cannot be stored as a sample's `jpg`, or None when it is a sound JPEG.

    Args:
        data: the file's bytes.
        decode: also run the entropy decode (at 1/8 scale through libjpeg's DCT scaling, ~2x faster
            than a full decode), so damaged scan data is caught too; else check the marker structure
            only (about 20x cheaper; `shard-tools verify` still decodes every image afterwards).
    """
    if not data:
        return "empty file"
    if not data.startswith(b"\xff\xd8\xff"):
        for magic, kind in MAGIC.items():
            if data.startswith(magic):
                return f"not a JPEG ({kind})"
        return "not an image"
    problem = _marker_problem(data)
    if problem is not None or not decode:
        return problem
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except Exception as e:  # PIL raises many types for bad data; all mean "corrupt"
        return f"corrupt JPEG ({type(e).__name__}: {e})"
    return None
