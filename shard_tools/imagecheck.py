"""Is this byte string a JPEG we can store? Cheap enough to run on every one of 4M images."""

from __future__ import annotations

import io

from PIL import Image

MAGIC = {b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WEBP/RIFF", b"II*\x00": "TIFF",
         b"MM\x00*": "TIFF", b"%PDF": "PDF"}


def jpeg_problem(data: bytes, decode: bool = True) -> str | None:
    """The reason `data` cannot be stored as a sample's `jpg`, or None when it is a sound JPEG.

    Args:
        data: the file's bytes.
        decode: also run the entropy decode (at 1/8 scale through libjpeg's DCT scaling, ~2x faster
            than a full decode) so corrupt or truncated scans are caught; else check only the
            markers and the header.
    """
    if not data:
        return "empty file"
    if not data.startswith(b"\xff\xd8\xff"):
        for magic, kind in MAGIC.items():
            if data.startswith(magic):
                return f"not a JPEG ({kind})"
        return "not an image"
    if b"\xff\xd9" not in data[-64:]:
        return "truncated JPEG (no end-of-image marker)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                return f"not a JPEG ({im.format})"
            if decode:
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                im.load()
    except Exception as e:  # PIL raises many types for bad data; all mean "corrupt"
        return f"corrupt JPEG ({type(e).__name__}: {e})"
    return None
