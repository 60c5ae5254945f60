"""VAE with a Gaussian-random-field prior on a spatial latent map.

The code is a ``channels`` x g x g map (g = tile side / 2^depth). Each channel
has the prior of a stationary Gaussian random field on the g x g grid, taken
periodic (a torus) so that its covariance matrix K is block-circulant:

    K[i, j] = k(d(i, j)),   k(d) = exp(-d / range)  (exponential, Matern-1/2)
    or k(d) = (1 + sqrt(3) d / range) exp(-sqrt(3) d / range)   (Matern-3/2)

with d the wrap-around distance between grid cells and ``range`` learnable
(softplus of a parameter) or fixed. A circulant matrix is diagonalised by the
2-D DFT: its eigenvalues are lambda = FFT2(k evaluated on the grid), so with
the posterior q = N(mu, diag(sigma^2)) the KL term costs O(n log n), not O(n^3):

    KL = 1/2 [ mean(1/lambda) * sum(sigma^2) + sum_k |FFT2(mu)_k|^2 / (n lambda_k)
               - n + sum log lambda - sum log sigma^2 ]

(the diagonal of K^-1 is the constant mean(1/lambda), and mu^T K^-1 mu follows
from Parseval). The KL couples neighbouring latents: the prior asks for codes
that vary smoothly over space, at the scale of ``range``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import ReconstructionModel, TrainOverrides
from .blocks import check_divisible, conv_decoder, conv_encoder
from .registry import register
from .variational import VariationalMixin


@dataclass
class VAEGRFConfig(TrainOverrides):
    base_channels: int = 32
    blocks: int = 0
    # auto: by the data's anomaly kind (VAEGRF.kind_defaults)
    depth: int | Literal["auto"] = "auto"
    channels: int | Literal["auto"] = "auto"
    kernel: Literal["exponential", "matern32"] = "exponential"
    range: float = 2.0
    learn_range: bool = True
    beta: float = 1.0
    likelihood_sigma: float = 0.1
    score: Literal["recon", "elbo"] = "recon"


def torus_distances(g: int) -> torch.Tensor:
    idx = torch.arange(g, dtype=torch.float64)
    wrap = torch.minimum(idx, g - idx)
    return torch.sqrt(wrap[:, None] ** 2 + wrap[None, :] ** 2)


def grf_eigenvalues(g: int, range_: torch.Tensor, kernel: str) -> torch.Tensor:
    """Eigenvalues (g, g) of the circulant covariance of the field on a g x g torus."""
    d = torus_distances(g).to(range_.device) / range_.double()
    root3 = 3**0.5
    k = torch.exp(-d) if kernel == "exponential" else (1 + root3 * d) * torch.exp(-root3 * d)
    return torch.fft.fft2(k).real.clamp_min(1e-6)


def grf_kl(mu: torch.Tensor, logvar: torch.Tensor, eig: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || GRF) per sample, summed over channels; mu is B,C,g,g."""
    mu, logvar = mu.double(), logvar.double()
    n = mu.shape[-1] * mu.shape[-2]
    trace = (1 / eig).mean() * logvar.exp().flatten(2).sum(-1)
    spectrum = torch.fft.fft2(mu).abs() ** 2
    quad = (spectrum / (n * eig)).flatten(2).sum(-1)
    logdet = torch.log(eig).sum() - logvar.flatten(2).sum(-1)
    return (0.5 * (trace + quad - n + logdet)).sum(-1)


@register("vae_grf")
class VAEGRF(VariationalMixin, ReconstructionModel):
    config_cls = VAEGRFConfig
    # Local defects: an 8 x 8 x 8 field that redraws the texture (the earlier defaults).
    # Whole-image anomalies (digits): a 4 x 4 x 2 field, too small to redraw a digit of
    # another class stroke by stroke (one-class MNIST digit 0: 0.601 -> 0.915), the
    # same reason as the CAE's whole-image shape.
    kind_defaults = {
        "local": {"depth": 3, "channels": 8},
        "whole-image": {"depth": 4, "channels": 2},
    }

    def __init__(
        self,
        config: VAEGRFConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        check_divisible(image_size, config.depth, "models.vae_grf", self.input_shape)
        self.encoder, width = conv_encoder(
            in_channels, config.base_channels, config.depth, config.blocks
        )
        self.grid = image_size // 2**config.depth
        self.to_stats = nn.Conv2d(width, 2 * config.channels, 1)
        self.from_latent = nn.Sequential(nn.Conv2d(config.channels, width, 1), nn.LeakyReLU(0.2))
        self.decoder = conv_decoder(
            in_channels, config.base_channels, config.depth, width, config.blocks
        )
        raw = torch.tensor(float(config.range)).expm1().log()  # softplus^-1
        self.raw_range = nn.Parameter(raw, requires_grad=config.learn_range)

    @property
    def range(self) -> torch.Tensor:
        return F.softplus(self.raw_range) + 1e-3

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z))

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        eig = grf_eigenvalues(self.grid, self.range, self.config.kernel)
        return grf_kl(mu, logvar, eig).to(mu.dtype)
