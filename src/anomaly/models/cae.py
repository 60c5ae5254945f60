"""Convolutional autoencoder with a narrow spatial bottleneck.

The bottleneck (``latent_channels`` maps at 1/2^depth resolution) is what
makes it an anomaly detector: wide enough to redraw the weave, too narrow to
copy arbitrary local detail, so defects come back as normal fabric and stand
out in the residual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .base import ReconstructionModel, TrainOverrides
from .blocks import check_divisible, conv_decoder, conv_encoder
from .registry import register


@dataclass
class CAEConfig(TrainOverrides):
    base_channels: int = 32
    blocks: int = 0
    depth: int = 3
    latent_channels: int = 16
    loss: Literal["mse", "ssim", "mse_ssim"] = "mse"
    denoise: float = 0.8  # share of training tiles corrupted (see models/corruption.py)


@register("cae")
class ConvAutoencoder(ReconstructionModel):
    config_cls = CAEConfig

    def __init__(
        self,
        config: CAEConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        check_divisible(image_size, config.depth, "models.cae", self.input_shape)
        self.encoder, width = conv_encoder(
            in_channels, config.base_channels, config.depth, config.blocks
        )
        self.to_latent = nn.Conv2d(width, config.latent_channels, 1)
        self.from_latent = nn.Sequential(
            nn.Conv2d(config.latent_channels, width, 1), nn.LeakyReLU(0.2, inplace=True)
        )
        self.decoder = conv_decoder(
            in_channels, config.base_channels, config.depth, width, config.blocks
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(self.encode(x)))
