"""Fully connected (MLP) autoencoder.

The classic baseline, and the natural model for tabular rows: it sees a tile
as a flat vector, so it has no notion of locality and needs a small latent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from .base import ReconstructionModel, TrainOverrides
from .registry import register


@dataclass
class AEConfig(TrainOverrides):
    hidden: list[int] = field(default_factory=lambda: [512, 128])
    latent_dim: int = 32
    loss: Literal["mse", "ssim", "mse_ssim"] = "mse"
    denoise: float = 0.0  # share of training tiles corrupted (see models/corruption.py)


def _mlp(sizes: list[int], last_activation: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2, inplace=True))
    if last_activation is not None:
        layers.append(last_activation)
    return nn.Sequential(*layers)


@register("ae")
class MLPAutoencoder(ReconstructionModel):
    config_cls = AEConfig

    def __init__(
        self,
        config: AEConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        n = int(np.prod(self.input_shape))
        sizes = [n, *config.hidden, config.latent_dim]
        self.encoder = _mlp(sizes, None)
        self.decoder = _mlp(sizes[::-1], nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x)).view_as(x)
