"""Draw one synthetic pedestrian (128x64) with PIL: background, body, clothes, bag, camera effects."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from shard_tools.synth.attributes import RGB, Camera, Identity, color

W, H = 64, 128


def _jitter(c: RGB, rng: np.random.Generator, amount: float = 12.0) -> RGB:
    """A colour with small per-image variation (lighting on cloth), same identity cue."""
    return tuple(int(np.clip(v + rng.normal(0, amount), 0, 255)) for v in c)  # type: ignore[return-value]


def _muted(rng: np.random.Generator, base: float) -> RGB:
    """A background colour: a random colour pulled 75-90% of the way to the scene's grey `base`.

    Backgrounds of low contrast next to the person's: in an earlier version (colours only 45-75%
    grey), self-distillation matched two crops of an image by the clutter they shared and learned
    nothing about the person (same-person retrieval at chance; notes/tiny-ssl.md).
    """
    t = rng.uniform(0.75, 0.9)
    return tuple(round((1 - t) * v + t * base) for v in color(rng, 0.4))  # type: ignore[return-value]


def _background(cam: Camera, rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A per-image street scene, out of focus behind the person: wall gradient, clutter (windows, signs,
    poles, passers-by), ground.

    Many small muted shapes, blurred, so the background carries little that two crops could match
    by; the centred, sharp person carries the most.
    """
    base = float(rng.uniform(90, 170))
    top, bottom = np.array(_muted(rng, base), np.float32), np.array(_muted(rng, base), np.float32)
    t = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
    grad = np.broadcast_to(top * (1 - t) + bottom * t, (H, W, 3))
    img = Image.fromarray(np.ascontiguousarray(grad + 0.5).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(10, 26))):
        w, h = int(rng.integers(4, 24)), int(rng.integers(4, 40))
        x0, y0 = int(rng.integers(-w // 2, W)), int(rng.integers(-h // 2, H))
        box = [x0, y0, x0 + w, y0 + h]
        (d.ellipse if rng.random() < 0.3 else d.rectangle)(box, fill=_muted(rng, base))
    mix = rng.uniform(0.3, 0.7)
    ground = tuple(round(mix * g + (1 - mix) * r) for g, r in zip(cam.ground, _muted(rng, base)))
    horizon = int(rng.integers(int(H * 0.6), int(H * 0.8)))
    d.rectangle([0, horizon, W, H], fill=ground)
    for _ in range(int(rng.integers(0, 4))):  # kerb lines, tiles, shadows
        y = int(rng.integers(horizon, H))
        d.rectangle([0, y, W, y + int(rng.integers(1, 4))], fill=_muted(rng, base))
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    return img, ImageDraw.Draw(img)


def _person(d: ImageDraw.ImageDraw, ident: Identity, scale: float, rng: np.random.Generator) -> None:
    """The figure, front or back view, feet near the bottom, centred with a small offset."""
    ph = H * scale * ident.height
    cx = W / 2 + rng.normal(0, 2.0)
    feet = H - 3 - abs(rng.normal(0, 2.0))
    top = feet - ph
    u = ph / 100.0  # body unit
    back_view = rng.random() < 0.4
    tw = 11 * u * ident.width  # half torso width at the shoulders
    shoulder, hip = top + 17 * u, top + 17 * u + (1 - ident.leg_ratio) * 62 * u
    knee = hip + (feet - hip) * 0.5
    stride = rng.uniform(-6, 6) * u

    skin, shirt, shirt2 = _jitter(ident.skin, rng, 6), _jitter(ident.shirt, rng), _jitter(ident.shirt2, rng)
    lower = _jitter(ident.lower_color, rng)
    # legs (drawn first, the torso overlaps their tops)
    for side, dx in ((-1, -stride / 2), (1, stride / 2)):
        x_hip, x_foot = cx + side * 4.5 * u, cx + side * 4.5 * u + dx
        leg_w = max(2, int(7 * u))
        cover_to = {"pants": feet, "shorts": knee, "skirt": hip + (knee - hip) * 0.5}[ident.lower]
        d.line([(x_hip, hip), (x_foot, feet)], fill=skin, width=leg_w)
        if ident.lower != "skirt":
            t = (cover_to - hip) / max(feet - hip, 1)
            d.line([(x_hip, hip), (x_hip + (x_foot - x_hip) * t, cover_to)], fill=lower, width=leg_w)
        d.ellipse([x_foot - 4 * u, feet - 3 * u, x_foot + 4 * u, feet + 1], fill=_jitter(ident.shoes, rng, 6))
    if ident.lower == "skirt":
        d.polygon([(cx - tw, hip - 2 * u), (cx + tw, hip - 2 * u), (cx + tw * 1.3, knee), (cx - tw * 1.3, knee)],
                  fill=lower)
    # torso + pattern
    d.polygon([(cx - tw, shoulder), (cx + tw, shoulder), (cx + tw * 0.85, hip), (cx - tw * 0.85, hip)], fill=shirt)
    box = (cx - tw * 0.9, shoulder, cx + tw * 0.9, hip)
    if ident.pattern == "hstripes":
        for y in np.arange(shoulder + 2 * u, hip, 6 * u):
            d.rectangle([box[0], y, box[2], y + 2.5 * u], fill=shirt2)
    elif ident.pattern == "vstripes":
        for x in np.arange(box[0] + 2 * u, box[2], 6 * u):
            d.rectangle([x, shoulder, x + 2.5 * u, hip], fill=shirt2)
    elif ident.pattern == "checks":
        for i, y in enumerate(np.arange(shoulder, hip, 5 * u)):
            for j, x in enumerate(np.arange(box[0], box[2], 5 * u)):
                if (i + j) % 2:
                    d.rectangle([x, y, x + 5 * u, y + 5 * u], fill=shirt2)
    elif ident.pattern == "logo" and not back_view:
        d.rectangle([cx - 4 * u, shoulder + 6 * u, cx + 4 * u, shoulder + 14 * u], fill=shirt2)
    elif ident.pattern == "two-tone":
        d.rectangle([box[0], (shoulder + hip) / 2, box[2], hip], fill=shirt2)
    # arms: sleeve colour, then skin below the sleeve
    swing = rng.uniform(-4, 4) * u
    for side in (-1, 1):
        xs, xh = cx + side * (tw + 2 * u), cx + side * (tw + 3 * u) + side * swing * 0.3
        hand = hip + 4 * u
        aw = max(2, int(5 * u))
        d.line([(xs, shoulder + 2 * u), (xh, hand)], fill=skin, width=aw)
        sleeve_end = hand if ident.long_sleeves else shoulder + 12 * u
        t = (sleeve_end - shoulder) / max(hand - shoulder, 1)
        d.line([(xs, shoulder + 2 * u), (xs + (xh - xs) * t, sleeve_end)], fill=shirt, width=aw + 1)
    # bag
    bag = _jitter(ident.bag_color, rng)
    if ident.bag == "backpack":
        if back_view:
            d.rounded_rectangle([cx - tw * 0.8, shoulder + 2 * u, cx + tw * 0.8, hip - 4 * u], radius=3 * u, fill=bag)
        else:
            for side in (-1, 1):
                d.line([(cx + side * tw * 0.6, shoulder), (cx + side * tw * 0.6, hip - 8 * u)], fill=bag,
                       width=max(1, int(2 * u)))
    elif ident.bag == "shoulder":
        d.line([(cx - tw * 0.7, shoulder), (cx + tw, hip - 4 * u)], fill=bag, width=max(1, int(2 * u)))
        d.rectangle([cx + tw - 2 * u, hip - 8 * u, cx + tw + 8 * u, hip + 2 * u], fill=bag)
    elif ident.bag == "handbag":
        xa, xb = sorted((cx + (tw + 1 * u) * (-1 if back_view else 1), cx + (tw + 9 * u) * (-1 if back_view else 1)))
        d.rectangle([xa, hip, xb, hip + 8 * u], fill=bag)
    # head, hair, hat
    hr = 7 * u
    hy = top + 8 * u
    d.ellipse([cx - hr, hy - hr, cx + hr, hy + hr], fill=skin)
    hair = _jitter(ident.hair, rng, 5)
    if back_view:
        d.ellipse([cx - hr, hy - hr, cx + hr, hy + hr], fill=hair)
    else:
        d.chord([cx - hr, hy - hr - 1, cx + hr, hy + hr], 180, 360, fill=hair)
    if ident.long_hair:
        d.rectangle([cx - hr, hy, cx + hr, hy + 11 * u] if back_view else [cx - hr - 1, hy, cx - hr + 2 * u, hy + 11 * u],
                    fill=hair)
        if not back_view:
            d.rectangle([cx + hr - 2 * u, hy, cx + hr + 1, hy + 11 * u], fill=hair)
    if ident.hat is not None:
        d.chord([cx - hr - 1, hy - hr - 2, cx + hr + 1, hy + hr - 3], 180, 360, fill=_jitter(ident.hat, rng, 6))


def _occluder(d: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """Something in front of the person: a pole, a car/bench from below, or another passer-by's side."""
    kind = int(rng.integers(3))
    c = color(rng, 0.5)
    if kind == 0:
        x = int(rng.integers(4, W - 10))
        d.rectangle([x, 0, x + int(rng.integers(4, 10)), H], fill=c)
    elif kind == 1:
        y = int(rng.integers(int(H * 0.55), int(H * 0.8)))
        d.rounded_rectangle([-5, y, W + 5, H + 5], radius=6, fill=c)
    else:
        side = 0 if rng.random() < 0.5 else W
        d.ellipse([side - 18, 20, side + 18, H + 20], fill=c)


def render(ident: Identity, cam: Camera, rng: np.random.Generator,
           scene_rng: np.random.Generator | None = None) -> Image.Image:
    """One 128x64 RGB image of `ident` seen by `cam`; all per-image variation comes from the generators.

    Args:
        ident: the person's stable attributes.
        cam: the camera's (or the image's) nuisance settings.
        rng: this image's generator (pose, scale, noise; the scene too unless `scene_rng`).
        scene_rng: the generator of the background, occluder and flip, so that one scene can be
            rendered behind several people as the same picture (the person-vs-scene pair test).
    """
    scene_rng = rng if scene_rng is None else scene_rng
    img, d = _background(cam, scene_rng)
    _person(d, ident, float(np.clip(cam.scale + rng.normal(0, 0.03), 0.65, 0.98)), rng)
    if scene_rng.random() < cam.occlusion_p:
        _occluder(d, scene_rng)
    if scene_rng.random() < 0.5:  # the scene's draw: one scene behind two people stays the same picture
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if cam.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(cam.blur))
    x = np.asarray(img, dtype=np.float32)
    mean = x.mean()
    x = (x - mean) * cam.contrast + mean
    x = x * np.asarray(cam.cast, np.float32) * cam.brightness
    x += rng.normal(0.0, cam.noise, x.shape).astype(np.float32)
    return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))
