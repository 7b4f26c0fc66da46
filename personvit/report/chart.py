"""Line charts drawn with PIL (the project has no matplotlib dependency): axes, ticks, series, legend.

Pure function of the data: the same series give the same pixels, so reports are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from personvit.viz.draw import BG, PALETTE, font, legend

__all__ = ["Series", "line_chart", "nice_ticks"]

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, xs, ys)
AXIS, GRID = (60, 60, 60), (225, 225, 225)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks: non-finite range [{lo}, {hi}]")
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi:  # the last tick at or past the largest value: no point off the axes
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str,
               size: tuple[int, int] = (720, 420)) -> Image.Image:
    """One chart of several series (markers where a series has few points).

    Args:
        series: (label, xs, ys) per line; empty series are skipped (a chart needs one point at least).
        title, xlabel, ylabel: text.
        size: (W, H) of the image, legend included.
    Returns:
        RGB image of exactly `size`.
    """
    series = [(name, list(xs), list(ys)) for name, xs, ys in series if len(xs)]
    if not series:
        raise ValueError(f"line_chart {title!r}: no data points")
    w, h = size
    key = legend([(PALETTE[i % len(PALETTE)], name) for i, (name, _, _) in enumerate(series)])
    left, right, top, bottom = 70, 20, 34, 44 + key.height
    xs_all = [x for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys]
    xt, yt = nice_ticks(min(xs_all), max(xs_all)), nice_ticks(min(ys_all), max(ys_all))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    img = Image.new("RGB", (w, h), BG)
    d = ImageDraw.Draw(img)
    f, fs = font(14), font(12)

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    for y in yt:
        _, yy = px(x0, y)
        d.line([(left, yy), (w - right, yy)], fill=GRID)
        d.text((left - 6, yy), _fmt(y), fill=AXIS, font=fs, anchor="rm")
    for x in xt:
        xx, _ = px(x, y0)
        d.line([(xx, h - bottom), (xx, h - bottom + 4)], fill=AXIS)
        d.text((xx, h - bottom + 6), _fmt(x), fill=AXIS, font=fs, anchor="ma")
    d.rectangle([left, top, w - right, h - bottom], outline=AXIS)
    d.text((w / 2, 8), title, fill=(0, 0, 0), font=f, anchor="ma")
    d.text((w / 2, h - bottom + 22), xlabel, fill=AXIS, font=fs, anchor="ma")
    d.text((6, top - 18), ylabel, fill=AXIS, font=fs)
    for i, (_, xs, ys) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = [px(x, y) for x, y in zip(xs, ys)]
        if len(points) > 1:
            d.line(points, fill=colour, width=2)
        if len(points) <= 40:
            for cx, cy in points:
                d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
    img.paste(key, (left, h - key.height - 4))
    return img
