"""Colour jitter with torchvision's exact semantics, batched with one set of factors per image.

torchvision's `ColorJitter` (what DINO/iBOT use) applies brightness, contrast, saturation and hue
one after the other in a random order, clamping to [0, 1] after each, with hue shifted in HSV
space. Its functional ops take one scalar factor per call, so a batch whose images each drew their
own factors would need one call per image (hundreds of small kernel launches per step). Here each op
runs once per order slot on the images that drew it, with per-image factors.

Brightness, contrast and saturation are torchvision's `_blend` formulas; hue is an RGB -> HSV ->
RGB round trip equal to `torchvision.transforms.v2.functional.adjust_hue` (tested against it). The
cheaper alternative, one composed colour matrix per image (`device_augment.color_matrices`), rotates
hue in YIQ space instead and clamps once; `data.jitter_impl` chooses.
"""

from __future__ import annotations

import torch

__all__ = ["color_jitter", "grayscale", "hsv_to_rgb", "rgb_to_hsv"]

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] luma with torchvision's weights."""
    w = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
    return torch.einsum("nchw,c->nhw", x, w).unsqueeze(1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    gray = maxc == minc
    chroma = maxc - minc
    s = chroma / torch.where(gray, torch.ones_like(maxc), maxc)
    div = torch.where(gray, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    # Ties resolve as torchvision's: red wins over green, green over blue.
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(gray, torch.zeros_like(h), h)
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`: [N, 3, H, W] HSV in [0, 1] -> RGB."""
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    sector = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # Per sector (0..5) which of v, q, p, t each channel takes.
    table = (
        torch.stack((v, q, p, p, t, v), 1),
        torch.stack((t, v, v, q, p, p), 1),
        torch.stack((p, p, t, v, v, q), 1),
    )
    idx = sector.unsqueeze(1)
    return torch.cat([c.gather(1, idx) for c in table], dim=1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1.0 - f) * mean).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1.0 - f) * grayscale(x)).clamp_(0.0, 1.0)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + f[:, 0], 1.0)
    return hsv_to_rgb(hsv)


_OPS = (_brightness, _contrast, _saturation, _hue)
_IDENTITY = (1.0, 1.0, 1.0, 0.0)


def color_jitter(x: torch.Tensor, jitter: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision `ColorJitter` on every image with its own factors and op order.

    Args:
        x: [N, 3, H, W] float in [0, 1] (not modified).
        jitter: [N, 4] brightness, contrast, saturation, hue factors; (1, 1, 1, 0) = untouched.
        order: [N, 4] op order per image (0 brightness, 1 contrast, 2 saturation, 3 hue).
    Returns:
        The jittered images, [N, 3, H, W] in [0, 1].
    """
    x = x.clone()
    for slot in range(4):
        for op, fn in enumerate(_OPS):
            # Identity factors are skipped, as torchvision's ColorJitter skips a None factor.
            sel = ((order[:, slot] == op) & (jitter[:, op] != _IDENTITY[op])).nonzero().flatten()
            if sel.numel():
                x[sel] = fn(x[sel], jitter[sel, op].to(x.dtype)[:, None, None, None])
    return x
