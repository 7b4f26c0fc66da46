"""Stable appearance of a synthetic identity and nuisance settings of a synthetic camera.

Identity attributes are what a ReID model should learn (colours, patterns, body shape, bag, hair);
camera settings are nuisances. Camera effects are kept moderate and the background is drawn anew
for every image, because a strong per-camera look becomes the easiest cue for self-supervised
pretraining to match two crops by (see notes/tiny-ssl.md: the teacher's neighbours shared the
query's camera 87-96% of the time).
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

RGB = tuple[int, int, int]
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo", "two-tone")
BAGS = ("none", "backpack", "shoulder", "handbag")
LOWER = ("pants", "shorts", "skirt")
SKIN = ((241, 204, 176), (224, 172, 138), (198, 134, 96), (141, 85, 54), (92, 58, 38))
HAIR = ((20, 16, 14), (60, 40, 25), (110, 75, 40), (180, 140, 80), (150, 150, 150), (120, 30, 20))


def color(rng: np.random.Generator, achromatic_p: float = 0.25) -> RGB:
    """A clothing colour: a saturated hue most of the time, else black/white/grey."""
    if rng.random() < achromatic_p:
        v = float(rng.choice([0.08, 0.25, 0.5, 0.75, 0.95]))
        return (round(255 * v),) * 3
    h, s, v = rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0)
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Identity:
    """What stays the same in every image of one person."""

    shirt: RGB
    shirt2: RGB
    pattern: str
    long_sleeves: bool
    lower: str
    lower_color: RGB
    shoes: RGB
    bag: str
    bag_color: RGB
    hair: RGB
    long_hair: bool
    hat: RGB | None
    skin: RGB
    width: float  # torso width factor
    height: float  # body height factor
    leg_ratio: float


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity's attributes."""
    shirt = color(rng)
    shirt2 = color(rng, 0.35)
    return Identity(
        shirt=shirt, shirt2=shirt2, pattern=str(rng.choice(PATTERNS, p=[0.3, 0.15, 0.1, 0.15, 0.15, 0.15])),
        long_sleeves=bool(rng.random() < 0.5), lower=str(rng.choice(LOWER, p=[0.6, 0.25, 0.15])),
        lower_color=color(rng, 0.4), shoes=color(rng, 0.6), bag=str(rng.choice(BAGS, p=[0.35, 0.3, 0.2, 0.15])),
        bag_color=color(rng, 0.4), hair=HAIR[int(rng.integers(len(HAIR)))], long_hair=bool(rng.random() < 0.35),
        hat=color(rng, 0.3) if rng.random() < 0.15 else None, skin=SKIN[int(rng.integers(len(SKIN)))],
        width=float(rng.uniform(0.8, 1.25)), height=float(rng.uniform(0.88, 1.0)),
        leg_ratio=float(rng.uniform(0.45, 0.55)),
    )


@dataclasses.dataclass(frozen=True)
class Camera:
    """Nuisances of one camera: moderate colour cast, light, scale, blur, noise, occluders."""

    cast: tuple[float, float, float]  # per-channel gain
    brightness: float
    contrast: float
    scale: float  # mean person height / image height
    blur: float  # Gaussian sigma, pixels
    noise: float  # std of additive noise, grey levels
    occlusion_p: float
    ground: RGB  # the scene's typical ground colour, mixed with a random one per image
    quality: int  # JPEG quality


def sample_camera(rng: np.random.Generator) -> Camera:
    """Draw one labeled camera's settings: each camera keeps its own look, as Market's six do."""
    return Camera(
        cast=tuple(float(x) for x in 1.0 + rng.uniform(-0.1, 0.1, 3)), brightness=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.85, 1.1)), scale=float(rng.uniform(0.78, 0.93)),
        blur=float(rng.choice([0.0, 0.3, 0.6, 0.9])), noise=float(rng.uniform(1.0, 5.0)),
        occlusion_p=float(rng.uniform(0.05, 0.25)), ground=tuple(round(0.5 * v + 64) for v in color(rng, 0.6)), quality=int(rng.integers(85, 96)),
    )


def sample_scene(rng: np.random.Generator) -> Camera:
    """Draw the nuisances of one unlabeled image, as LUPerson's crops have them.

    LUPerson holds detector crops from thousands of street videos: background, light and framing
    change from image to image and the person fills the box. Drawing them per image (not per camera)
    leaves the person as what several images of one person share. Global statistics that every crop
    of an image shares and no other image of the person does (sensor noise, focus, colour cast) are
    kept nearly constant: at this scale self-distillation matched crops by them and learned nothing
    of the person (same-person retrieval at chance, README "Demo data").
    """
    return Camera(
        cast=tuple(float(x) for x in 1.0 + rng.uniform(-0.03, 0.03, 3)), brightness=float(rng.uniform(0.9, 1.1)),
        contrast=float(rng.uniform(0.9, 1.05)), scale=float(rng.uniform(0.86, 0.97)), blur=0.0, noise=2.0,
        occlusion_p=0.1, ground=tuple(round(0.5 * v + 64) for v in color(rng, 0.6)), quality=90,
    )
