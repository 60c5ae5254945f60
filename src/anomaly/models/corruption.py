"""Synthetic corruption for denoising training of reconstruction models.

Why: an autoencoder trained only to copy good tiles also learns to copy
smooth local changes (stains, creases), because good fabric has some too. If
instead it learns to map a corrupted good tile back to the clean tile, it
learns to *remove* local deviations, so real defects leave a larger residual.
The corruptions are generic, not the synthetic dataset's defect painters:
soft-edged ellipses of random size and elongation (from dots to long thin
lines), which either shift the local brightness or flatten the texture.
"""

from __future__ import annotations

import math

import torch

from ..scoring import gaussian_blur


def corrupt(
    x: torch.Tensor, probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A copy of ``x`` (B, C, H, W in [0, 1]) where each sample is corrupted with ``probability``."""
    if probability <= 0:
        return x
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(dev, dt)

    chosen = (rand(b) < probability).to(dt).view(b, 1, 1)
    cy, cx = rand(b) * h, rand(b) * w
    size = min(h, w)
    major = size * (0.03 + 0.5 * rand(b) ** 2)
    minor = major / (1 + 12 * rand(b) ** 2)  # from round blobs to thin lines
    minor = minor.clamp_min(1.0)
    angle = rand(b) * math.pi
    yy = torch.arange(h, device=dev, dtype=dt).view(1, h, 1)
    xx = torch.arange(w, device=dev, dtype=dt).view(1, 1, w)
    dy, dx = yy - cy.view(b, 1, 1), xx - cx.view(b, 1, 1)
    cos, sin = angle.cos().view(b, 1, 1), angle.sin().view(b, 1, 1)
    u = (cos * dx + sin * dy) / major.view(b, 1, 1)
    v = (-sin * dx + cos * dy) / minor.view(b, 1, 1)
    alpha = (1.5 - 1.5 * torch.sqrt(u**2 + v**2)).clamp(0, 1) * chosen
    offset = (0.08 + 0.4 * rand(b)) * torch.where(rand(b) < 0.5, -1.0, 1.0).to(dt)
    flatten = (rand(b) < 0.5).to(dt).view(b, 1, 1, 1)
    smooth = gaussian_blur(x, 2.0)
    target = flatten * smooth + (1 - flatten) * x + offset.view(b, 1, 1, 1)
    alpha = alpha.unsqueeze(1)
    return (x * (1 - alpha) + target * alpha).clamp(0, 1)
