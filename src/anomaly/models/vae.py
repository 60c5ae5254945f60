"""Variational autoencoder with a convolutional encoder and decoder.

Loss (negative ELBO per pixel): sum of squared errors / (2 sigma^2) plus
beta * KL(q(z|x) || N(0, I)), divided by the pixel count so that the scale
does not depend on the tile size. ``score: elbo`` scores a tile by that same
quantity with the posterior mean; ``score: recon`` uses the pixel map like the
other autoencoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..scoring import pixel_maps
from .base import ReconstructionModel, TrainOverrides
from .blocks import DenseCodec, check_divisible
from .registry import register


@dataclass
class VAEConfig(TrainOverrides):
    base_channels: int = 32
    blocks: int = 0
    depth: int = 4
    latent_dim: int = 128
    beta: float = 1.0
    likelihood_sigma: float = 0.1
    score: Literal["recon", "elbo"] = "recon"


class VariationalMixin:
    """Negative ELBO training and ELBO/recon scoring for models with encode -> (mu, logvar),
    decode(z) and a ``kl(mu, logvar)`` (standard normal prior unless overridden)."""

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return -0.5 * (1 + logvar - mu**2 - logvar.exp()).flatten(1).sum(1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def _neg_elbo(
        self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = x[0].numel()
        sq = ((x.float() - recon.float()) ** 2).flatten(1).sum(1)
        rec = sq / (2 * self.config.likelihood_sigma**2) / pixels
        kl = self.kl(mu.float(), logvar.float()) / pixels
        return rec + self.config.beta * kl, rec, kl

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        total, rec, kl = self._neg_elbo(x, self.decode(z), mu, logvar)
        return {"loss": total.mean(), "recon": rec.mean(), "kl": kl.mean()}

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.score == "recon":
            return ReconstructionModel.score(self, x, cfg)
        mu, logvar = self.encode(x)
        recon = self.decode(mu)
        total, _, _ = self._neg_elbo(x, recon, mu, logvar)
        return total, pixel_maps(x, recon, cfg, self.error_scale)


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
