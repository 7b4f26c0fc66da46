"""The device side of pretraining's augmentation: a loader batch -> normalised float views.

The loader ships uint8 crops with each view's photometric parameters (`photometric.py` draws them in
the workers, `collate.py` stacks them); the trainer calls `device_views` and the work below runs
batched per resolution, on the GPU when there is one:

- colour jitter (brightness, contrast, saturation, hue in a random order per sample): by default
  exactly torchvision's ColorJitter, op by op with per-image factors (`color_jitter.py`);
- or (`data.jitter_impl=matrix`, cheaper on a CPU): jitter and grayscale are affine in RGB but for
  hue and the clamps, so they compose into one 3x4 colour matrix per sample, hue being a
  rotation in the YIQ chroma plane (instead of an HSV round trip; it moves HSV hue the same way by
  0.7x-1.5x torchvision's shift depending on the colour, and keeps luma where HSV keeps value). Contrast blends towards the
  image's mean gray, which is itself affine in the image's mean RGB, so the composition is exact
  except that torchvision clamps to [0, 1] after every op and we clamp once at the end;
- Gaussian blur is a separable grouped convolution with a per-sample kernel (sigma 0 = identity);
- flip and solarize are per-sample `torch.where`s; then ImageNet normalisation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from personvit.data.color_jitter import GRAY_WEIGHTS, color_jitter, grayscale
from personvit.data.photometric import PhotometricParams

if TYPE_CHECKING:  # the batch's type only; the trip does not go back to collate.py
    from personvit.data.collate import PretrainBatch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOLARIZE_THRESHOLD = 128 / 255  # PIL ImageOps.solarize default, as DINO uses it
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] RGB matrices rotating chroma by hue * 2pi in YIQ space."""
    t, t_inv = _RGB_TO_YIQ.to(hue.device, torch.float32), _YIQ_TO_RGB.to(hue.device, torch.float32)
    theta = -hue * (2 * math.pi)  # sign chosen so the rotation follows HSV hue (R -> G -> B)
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(hue.shape[0], 3, 3, device=hue.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return t_inv @ rot @ t


def color_matrices(
    jitter: torch.Tensor, order: torch.Tensor, grayscale: torch.Tensor, mean_rgb: torch.Tensor
) -> torch.Tensor:
    """Compose jitter (in each sample's order) and grayscale into affine maps [N, 3, 4] on [0, 1] RGB.

    Args:
        jitter: [N, 4] brightness, contrast, saturation, hue factors.
        order: [N, 4] op order (0 brightness, 1 contrast, 2 saturation, 3 hue).
        grayscale: [N] bool.
        mean_rgb: [N, 3] mean colour of each input image in [0, 1] (contrast needs the mean gray of
            the image at the moment contrast applies, which is the running affine map of this mean).
    """
    n, dev = jitter.shape[0], jitter.device
    eye = torch.eye(3, device=dev).expand(n, 3, 3)
    w = torch.tensor(GRAY_WEIGHTS, device=dev)
    to_gray = torch.ones(3, 1, device=dev) * w  # [3, 3]: every channel becomes the gray value
    b, c, s, h = jitter.unbind(1)
    lin = eye.clone()  # running linear part [N, 3, 3] and offset [N, 3]
    off = torch.zeros(n, 3, device=dev)
    sat = s[:, None, None] * eye + (1 - s)[:, None, None] * to_gray
    # Hue 0 (jitter off) must stay an exact identity: the YIQ round trip is only identity to ~1e-7,
    # enough to flip pixels sitting exactly on the solarize threshold.
    hue = torch.where((h != 0)[:, None, None], _hue_matrices(h), eye)
    for slot in range(4):
        op = order[:, slot]
        cur_mean = torch.einsum("nij,nj->ni", lin, mean_rgb) + off
        gray_mean = cur_mean @ w  # [N]
        m = torch.where((op == 0)[:, None, None], b[:, None, None] * eye, eye)
        m = torch.where((op == 1)[:, None, None], c[:, None, None] * eye, m)
        m = torch.where((op == 2)[:, None, None], sat, m)
        m = torch.where((op == 3)[:, None, None], hue, m)
        t = torch.where(
            (op == 1)[:, None], ((1 - c) * gray_mean)[:, None].expand(n, 3), torch.zeros_like(off)
        )
        lin, off = m @ lin, torch.einsum("nij,nj->ni", m, off) + t
    g = torch.where(grayscale[:, None, None], to_gray.expand(n, 3, 3), eye)
    lin, off = g @ lin, torch.einsum("nij,nj->ni", g, off)
    return torch.cat([lin, off[:, :, None]], dim=2)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (0 = untouched), reflect padding.

    Args:
        x: [N, C, H, W] float.
        sigma: [N] float.
        max_sigma: largest sigma the config allows; fixes the kernel radius at ceil(3 * max_sigma).
    """
    n, c, hgt, wid = x.shape
    radius = min(math.ceil(3 * max_sigma), (min(hgt, wid) - 1) // 2)
    if radius < 1:
        return x
    pos = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (pos[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    delta = (pos == 0).to(x.dtype).expand(n, -1)
    k = torch.where((sigma > 0)[:, None], k, delta)
    k = k.repeat_interleave(c, dim=0)  # one kernel per (image, channel) group
    y = F.pad(x.reshape(1, n * c, hgt, wid), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, hgt, wid)


def _subset(mask: torch.Tensor) -> torch.Tensor | None:
    """Indices where `mask` holds, or None when it holds nowhere (skips the op)."""
    idx = mask.nonzero().flatten()
    return idx if idx.numel() else None


def apply_photometric(
    x: torch.Tensor,
    p: PhotometricParams,
    max_sigma: float,
    normalize: bool = True,
    jitter_impl: str = "exact",
) -> torch.Tensor:
    """Flip, colour jitter, grayscale, blur, solarize, normalise: uint8 [N, 3, H, W] -> float32.

    Flip, blur and solarize run on the images that draw them only (blur is the costly op on a CPU,
    and only global 1 always gets it).

    Args:
        x: uint8 images (on the device the work should run on).
        p: parameters with leading dim N, on the same device.
        max_sigma: the config's largest blur sigma (kernel size).
        normalize: apply ImageNet mean/std (off for visual checks).
        jitter_impl: `exact` = torchvision's ColorJitter op by op (`color_jitter.color_jitter`);
            `matrix` = one composed colour matrix per image (YIQ hue, one clamp; cheaper on a CPU).
    """
    n, c, h, w = x.shape
    x = x.float().div_(255)
    if (idx := _subset(p.flip)) is not None:
        x[idx] = x[idx].flip(-1)
    if jitter_impl == "exact":
        x = color_jitter(x, p.jitter, p.jitter_order)
        if (idx := _subset(p.grayscale)) is not None:
            x[idx] = grayscale(x[idx]).expand(-1, c, -1, -1)
    elif jitter_impl == "matrix":
        mats = color_matrices(p.jitter, p.jitter_order, p.grayscale, x.mean((2, 3)))
        x = torch.baddbmm(mats[:, :, 3:], mats[:, :, :3], x.view(n, c, h * w)).view(n, c, h, w).clamp_(0, 1)
    else:
        raise ValueError(f"jitter_impl must be 'exact' or 'matrix', got {jitter_impl!r}")
    if (idx := _subset(p.blur_sigma > 0)) is not None:
        x[idx] = gaussian_blur(x[idx], p.blur_sigma[idx], max_sigma)
    if (idx := _subset(p.solarize)) is not None:
        sub = x[idx]
        x[idx] = torch.where(sub >= SOLARIZE_THRESHOLD, 1 - sub, sub)
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[None, :, None, None]
        x = x.sub_(mean).div_(std)
    return x


def device_views(batch: PretrainBatch, device: torch.device | str) -> list[torch.Tensor]:
    """Normalised float32 views of a loader batch on `device`: 2 globals, then the locals.

    Photometric work runs batched per resolution (all globals together, all locals together).

    Args:
        batch: one `PretrainBatch` (uint8 crops and their views' parameters).
        device: where the work runs.
    """
    b = batch.batch_size
    ng = len(batch.global_crops)
    params = batch.photometric.map(lambda t: t.to(device, non_blocking=True))
    out: list[torch.Tensor] = []
    for crops, lo in ((batch.global_crops, 0), (batch.local_crops, ng)):
        if not crops:
            continue
        x = torch.cat([c.to(device, non_blocking=True) for c in crops])
        p = params.map(lambda t, lo=lo, n=len(crops): t[lo : lo + n].flatten(0, 1))
        out.extend(apply_photometric(x, p, batch.max_sigma, jitter_impl=batch.jitter_impl).split(b))
    return out
