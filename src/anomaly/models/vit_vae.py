"""Vision-Transformer VAE.

Encoder: the tile is cut into ``patch_size`` squares, each linearly embedded
(a strided convolution), plus a positional embedding per position; pre-norm
transformer blocks (LayerNorm before attention and MLP, which trains stably
without warm-up) mix them, and the tokens are mapped to the Gaussian posterior
(mu, log-variance) of a ``latent_dim`` code. Decoder: the code is projected to one
token per patch position (plus its positional embedding), passed through
transformer blocks and projected back to pixels; a sigmoid keeps them in [0, 1].
Loss and scores are the VAE's (see ``vae.py``).

Three choices make it learn more than the mean image in a short budget (one-class
MNIST digit 2, 300 steps, one run each; README "Why the ViT-VAE failed on
digits"): the decoder's tokens each get their *own* projection of the code (a code
added to every position alike left the decoder only its positional embeddings to
tell tokens apart: 0.35-0.68 -> 0.795); positions start as unit-scale 2-D
sine-cosine embeddings (MAE) instead of ViT's 0.02-scale noise, and are learned
from there (0.845); the posterior reads all tokens (``code_from: tokens``, one
linear map of the flattened token grid, which keeps *where* a stroke is) instead of
their mean (0.919).
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
    code_from: Literal["tokens", "mean"] = "tokens"
    positions: Literal["sincos", "random"] = "sincos"


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine embeddings (1, grid*grid, dim) of a square token grid, row-major:
    half the channels encode the row, half the column, each as sines and cosines of
    geometrically spaced frequencies (as in MAE), so every value is in [-1, 1]."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for axis in (rows.flatten(), cols.flatten()):
        angles = axis[:, None] * freqs[None]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(table, (0, dim - table.shape[1]))[None]


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
        self.tokens = tokens = self.grid * self.grid
        self.embed = nn.Conv2d(in_channels, config.dim, p, stride=p)
        self.enc_pos = nn.Parameter(self._positions(tokens, config))
        self.encoder = _blocks(config)
        self.enc_norm = nn.LayerNorm(config.dim)
        read = tokens * config.dim if config.code_from == "tokens" else config.dim
        self.to_stats = nn.Linear(read, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, tokens * config.dim)
        self.dec_pos = nn.Parameter(self._positions(tokens, config))
        self.decoder = _blocks(config)
        self.dec_norm = nn.LayerNorm(config.dim)
        self.to_pixels = nn.Linear(config.dim, in_channels * p * p)

    def _positions(self, tokens: int, config: ViTVAEConfig) -> torch.Tensor:
        if config.positions == "sincos":
            return sincos_positions(self.grid, config.dim)
        return torch.randn(1, tokens, config.dim) * 0.02  # ViT's initialisation

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.enc_pos
        mixed = self.enc_norm(self.encoder(tokens))
        read = mixed.flatten(1) if self.config.code_from == "tokens" else mixed.mean(dim=1)
        mu, logvar = self.to_stats(read).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        tokens = self.from_latent(z).view(-1, self.tokens, self.config.dim) + self.dec_pos
        patches = self.to_pixels(self.dec_norm(self.decoder(tokens)))  # B, N, C*p*p
        b, p, g = z.shape[0], self.config.patch_size, self.grid
        img = patches.view(b, g, g, self.in_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return torch.sigmoid(img.reshape(b, self.in_channels, g * p, g * p))
