"""Drawing helpers shared by the visualisations: panels with titles, heat overlays, grids, legends.

PIL only (no matplotlib dependency). Person crops are small (~128x64), so panels are scaled to a
fixed display height and labelled with a scalable font, which keeps the text legible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BG", "GREEN", "RED", "BLUE", "font", "colormap", "heat_overlay", "titled", "hstack", "vstack",
    "bordered", "colorbar", "elide", "legend", "output_path", "PALETTE",
]

BG = (255, 255, 255)
GREEN, RED, BLUE = (0, 170, 0), (220, 0, 0), (30, 90, 220)
# Distinct colours for pairs / clusters (tab10-like).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]

# "inferno"-like control points: black -> purple -> orange -> yellow.
_CMAP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def font(size: int = 14) -> ImageFont.ImageFont:
    """PIL's bundled scalable font (falls back to the bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB ([..., 3]) with an inferno-like colour ramp."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_CMAP) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_CMAP) - 2)
    frac = (v - lo)[..., None]
    return (_CMAP[lo] * (1 - frac) + _CMAP[lo + 1] * frac).round().astype(np.uint8)


def heat_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """Blend a [h, w] map (scaled from its own min to its max) over an RGB image, upsampled bilinearly.

    Min-max scaling shows where a head looks even when its map is nearly flat (untrained models);
    the absolute level is not shown.

    Args:
        image: the RGB panel.
        heat: non-negative map on the patch grid.
        alpha: weight of the heat colours.
    """
    heat = np.asarray(heat, dtype=np.float64)
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    small = Image.fromarray((heat * 255).round().astype(np.uint8), mode="L")
    big = np.asarray(small.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    colours = Image.fromarray(colormap(big), mode="RGB")
    return Image.blend(image.convert("RGB"), colours, alpha)


def elide(text: str, width: float, f: ImageFont.ImageFont) -> str:
    """`text` shortened from the left ("...tail") to fit `width` pixels; keys differ at their end."""
    if f.getlength(text) <= width:
        return text
    for cut in range(1, len(text)):
        short = "..." + text[cut:]
        if f.getlength(short) <= width:
            return short
    return text[-1:]


def titled(panel: Image.Image, lines: Sequence[str], size: int = 13, colour=(0, 0, 0),
           fit: bool = False) -> Image.Image:
    """The panel with one or more centred caption lines above it.

    Args:
        panel: the image.
        lines: caption lines.
        size: font size.
        colour: text colour.
        fit: elide lines to the panel's width instead of widening the figure.
    """
    f = font(size)
    if fit:
        lines = [elide(t, panel.width - 4, f) for t in lines]
    line_h = size + 4
    width = max([panel.width] + [int(f.getlength(t)) + 6 for t in lines])
    out = Image.new("RGB", (width, panel.height + line_h * len(lines) + 4), BG)
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(lines):
        draw.text(((width - f.getlength(text)) / 2, 2 + i * line_h), text, fill=colour, font=f)
    out.paste(panel, ((width - panel.width) // 2, line_h * len(lines) + 4))
    return out


def bordered(panel: Image.Image, colour, width: int = 5) -> Image.Image:
    """The panel inside a solid frame of `width` pixels."""
    out = Image.new("RGB", (panel.width + 2 * width, panel.height + 2 * width), colour)
    out.paste(panel, (width, width))
    return out


def hstack(panels: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    """Panels side by side, top-aligned, on a white background."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), BG)
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def vstack(panels: Sequence[Image.Image], gap: int = 6) -> Image.Image:
    """Panels stacked vertically, left-aligned, on a white background."""
    height = sum(p.height for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (max(p.width for p in panels), height), BG)
    y = 0
    for p in panels:
        out.paste(p, (0, y))
        y += p.height + gap
    return out


def colorbar(width: int, label_low: str, label_high: str, height: int = 12) -> Image.Image:
    """A horizontal colour ramp with its end labels, matching `colormap`."""
    ramp = colormap(np.tile(np.linspace(0, 1, width), (height, 1)))
    f = font(12)
    out = Image.new("RGB", (width, height + 18), BG)
    out.paste(Image.fromarray(ramp, mode="RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((0, height + 2), label_low, fill=(0, 0, 0), font=f)
    draw.text((width - f.getlength(label_high), height + 2), label_high, fill=(0, 0, 0), font=f)
    return out


def legend(entries: Sequence[tuple[tuple[int, int, int], str]], size: int = 13) -> Image.Image:
    """A one-line legend: coloured squares followed by their labels."""
    f = font(size)
    items = []
    for colour, text in entries:
        w = size + 6 + int(f.getlength(text)) + 16
        item = Image.new("RGB", (w, size + 6), BG)
        draw = ImageDraw.Draw(item)
        draw.rectangle([0, 2, size, size + 2], fill=colour)
        draw.text((size + 6, 1), text, fill=(0, 0, 0), font=f)
        items.append(item)
    return hstack(items, gap=0)


def output_path(out_dir: str | Path, kind: str, step_tag: str, key: str) -> Path:
    """`<out_dir>/<kind>_<step>_<key>.png`, with path separators in the key made safe."""
    safe = "".join(c if c.isalnum() or c in "-_+" else "_" for c in key)
    return Path(out_dir) / f"{kind}_{step_tag}_{safe}.png"
