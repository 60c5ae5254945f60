"""Variational autoencoder with a convolutional encoder and decoder.

Loss (negative ELBO per pixel): sum of squared errors / (2 sigma^2) plus
beta * KL(q(z|x) || N(0, I)), divided by the pixel count so that the scale
does not depend on the tile size. ``score: elbo`` scores a tile by that same
quantity with the posterior mean; ``score: recon`` uses the pixel map like the
other autoencoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .base import ReconstructionModel, TrainOverrides
from .blocks import DenseCodec, check_divisible
from .registry import register
from .variational import VariationalMixin


@dataclass
class VAEConfig(TrainOverrides):
    base_channels: int = 32
    blocks: int = 0
    depth: int = 4
    latent_dim: int = 128
    beta: float = 1.0
    likelihood_sigma: float = 0.1
    score: Literal["recon", "elbo"] = "recon"


@register("vae")
class VariationalAutoencoder(VariationalMixin, ReconstructionModel):
    config_cls = VAEConfig

    def __init__(
        self,
        config: VAEConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        check_divisible(image_size, config.depth, "models.vae", self.input_shape)
        parts = DenseCodec.build(config, in_channels, image_size, code_out=2 * config.latent_dim)
        self.encoder, self.to_stats = parts.encoder, parts.to_code
        self.from_latent, self.decoder = parts.from_code, parts.decoder
        self.width, self.grid = parts.width, parts.grid

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z).view(-1, self.width, self.grid, self.grid))
