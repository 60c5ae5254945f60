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
    # auto: by the data's anomaly kind (ConvAutoencoder.kind_defaults)
    depth: int | Literal["auto"] = "auto"
    latent_channels: int | Literal["auto"] = "auto"
    loss: Literal["mse", "ssim", "mse_ssim"] = "mse"
    denoise: float | Literal["auto"] = "auto"  # share of training tiles corrupted


@register("cae")
class ConvAutoencoder(ReconstructionModel):
    config_cls = CAEConfig
    # Local defects (fabric, MVTec): a wide 8 x 8 spatial code that redraws the texture,
    # trained to remove simulated defects. Whole-image anomalies (digits): a 4 x 4 x 2
    # code on 64-px tiles that keeps only the shape class, lighter denoising. Chosen on
    # one-class MNIST digit 0 (README, One-class MNIST); the local values are the
    # earlier defaults.
    kind_defaults = {
        "local": {"depth": 3, "latent_channels": 16, "denoise": 0.8},
        "whole-image": {"depth": 4, "latent_channels": 2, "denoise": 0.5},
    }

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
