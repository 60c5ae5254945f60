"""Adversarial autoencoder (Makhzani et al. 2016).

A convolutional encoder maps a tile to a dense code z, a decoder
reconstructs it, and a small discriminator tells codes from samples of the
prior N(0, I); the encoder is trained to fool it, which shapes the code
distribution into the prior. All three parts train with one optimiser: the
discriminator's loss is computed on detached codes, and the encoder's
adversarial loss through a copy of the discriminator with detached weights,
so each loss only moves the parameters it is meant to move.

Score: the reconstruction map (like the other autoencoders), plus, with
``latent_weight`` > 0, the code's negative log-likelihood under the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .base import ReconstructionModel, TrainOverrides
from .blocks import DenseCodec, check_divisible
from .registry import register


@dataclass
class AAEConfig(TrainOverrides):
    base_channels: int = 32
    blocks: int = 0
    depth: int = 4
    latent_dim: int = 64
    adversarial_weight: float = 0.01
    disc_hidden: int = 256
    latent_weight: float = 0.0


@register("aae")
class AdversarialAutoencoder(ReconstructionModel):
    config_cls = AAEConfig

    def __init__(
        self,
        config: AAEConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        check_divisible(image_size, config.depth, "models.aae", self.input_shape)
        parts = DenseCodec.build(config, in_channels, image_size, code_out=config.latent_dim)
        self.encoder, self.to_code = parts.encoder, parts.to_code
        self.from_code, self.decoder = parts.from_code, parts.decoder
        self.width, self.grid = parts.width, parts.grid
        h = config.disc_hidden
        self.discriminator = nn.Sequential(
            nn.Linear(config.latent_dim, h),
            nn.LeakyReLU(0.2),
            nn.Linear(h, h),
            nn.LeakyReLU(0.2),
            nn.Linear(h, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_code(z).view(-1, self.width, self.grid, self.grid))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        recon = ((self.decode(z) - x) ** 2).mean()
        prior = torch.randn_like(z)
        real = self.discriminator(prior)
        fake = self.discriminator(z.detach())
        disc = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        fooled = functional_call(self.discriminator, frozen, (z,))
        gen = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        loss = recon + self.config.adversarial_weight * gen + disc
        if not self.training:  # validation: the reconstruction is what early stopping watches
            loss = recon
        return {"loss": loss, "recon": recon, "disc": disc, "gen": gen}

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps = super().score(x, cfg)
        if self.config.latent_weight > 0:
            z = self.encode(x)
            scores = scores + self.config.latent_weight * 0.5 * (z**2).mean(dim=1)
        return scores, maps
