"""Vision-Transformer VAE.

Encoder: the tile is cut into ``patch_size`` squares, each linearly embedded
(a strided convolution), plus a learned positional embedding per position;
pre-norm transformer blocks (LayerNorm before attention and MLP, which trains
stably without warm-up) mix them, and the mean token is mapped to the Gaussian
posterior (mu, log-variance) of a ``latent_dim`` code. Decoder: the code is
expanded to one token per patch position (plus its own positional embedding),
passed through transformer blocks and projected back to pixels; a sigmoid keeps
them in [0, 1]. Loss and scores are the VAE's (see ``vae.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import ParamsError
from .base import ReconstructionModel, TrainOverrides
from .registry import register
from .variational import VariationalMixin


@dataclass
class ViTVAEConfig(TrainOverrides):
    patch_size: int = 8
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    latent_dim: int = 128
    beta: float = 1.0
    likelihood_sigma: float = 0.1
    score: Literal["recon", "elbo"] = "recon"


def _blocks(cfg: ViTVAEConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        cfg.dim,
        cfg.heads,
        int(cfg.dim * cfg.mlp_ratio),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)


@register("vit_vae")
class ViTVAE(VariationalMixin, ReconstructionModel):
    config_cls = ViTVAEConfig
    weak_on = {
        "whole-image": "one-class MNIST ten-digit mean image AUROC 0.770 (README): in the "
        "default budget (300 steps) the transformer learns little more than the mean "
        "digit (reconstruction error 40x the conv VAE's); padim, aae, ae or vae suit "
        "whole-image anomalies"
    }

    def __init__(
        self,
        config: ViTVAEConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        p = config.patch_size
        if self.input_shape[1] != self.input_shape[2] or image_size % p:
            raise ParamsError(
                f"params.yaml: models.vit_vae.patch_size={p} must divide the "
                f"square tile side {image_size}"
            )
        if config.dim % config.heads:
            raise ParamsError("params.yaml: models.vit_vae.dim must be divisible by heads")
        self.grid = image_size // p
        tokens = self.grid * self.grid
        self.embed = nn.Conv2d(in_channels, config.dim, p, stride=p)
        self.enc_pos = nn.Parameter(torch.randn(1, tokens, config.dim) * 0.02)
        self.encoder = _blocks(config)
        self.enc_norm = nn.LayerNorm(config.dim)
        self.to_stats = nn.Linear(config.dim, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, config.dim)
        self.dec_pos = nn.Parameter(torch.randn(1, tokens, config.dim) * 0.02)
        self.decoder = _blocks(config)
        self.dec_norm = nn.LayerNorm(config.dim)
        self.to_pixels = nn.Linear(config.dim, in_channels * p * p)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.enc_pos
        pooled = self.enc_norm(self.encoder(tokens)).mean(dim=1)
        mu, logvar = self.to_stats(pooled).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        tokens = self.from_latent(z)[:, None, :] + self.dec_pos
        patches = self.to_pixels(self.dec_norm(self.decoder(tokens)))  # B, N, C*p*p
        b, p, g = z.shape[0], self.config.patch_size, self.grid
        img = patches.view(b, g, g, self.in_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return torch.sigmoid(img.reshape(b, self.in_channels, g * p, g * p))
