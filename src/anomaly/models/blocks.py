"""Convolutional building blocks shared by the CNN autoencoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


def _refine(width: int, blocks: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
        ]
    return layers


def conv_encoder(
    in_channels: int, base: int, depth: int, blocks: int = 1
) -> tuple[nn.Sequential, int]:
    """``depth`` stride-2 stages doubling the width (capped at 8x base), each followed by
    ``blocks`` 3x3 convolutions; returns (net, output width)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for level in range(depth):
        width = base * min(2**level, 8)
        layers += [
            nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            *_refine(width, blocks),
        ]
        channels = width
    return nn.Sequential(*layers), channels


def conv_decoder(
    out_channels: int, base: int, depth: int, in_width: int, blocks: int = 1
) -> nn.Sequential:
    """Mirror of :func:`conv_encoder`, ending in a sigmoid (pixels live in [0, 1])."""
    layers: list[nn.Module] = []
    channels = in_width
    for level in reversed(range(depth)):
        width = base * min(2 ** max(level - 1, 0), 8)
        layers += [
            nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            *_refine(width, blocks),
        ]
        channels = width
    layers += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


def check_divisible(
    image_size: int, depth: int, where: str, input_shape: tuple[int, ...] | None = None
) -> None:
    from ..errors import ParamsError

    if input_shape is not None and input_shape[1] != input_shape[2]:
        raise ParamsError(
            f"params.yaml: {where} needs square image tiles, got input of shape "
            f"{tuple(input_shape)}; for tabular data use model: ae"
        )
    if image_size % (2**depth):
        raise ParamsError(
            f"params.yaml: {where}.depth={depth} needs a patch size divisible by {2**depth}, "
            f"got {image_size} (set patch.resize or patch.side)"
        )


@dataclass
class DenseCodec:
    """The parts of a "conv encoder -> dense code -> conv decoder" autoencoder (VAE, AAE).

    Built in one fixed order (encoder, to_code, from_code, decoder) so that models sharing
    it initialise identically for a seed; ``to_code`` maps the flat feature map to
    ``code_out`` numbers (2 x latent for a Gaussian posterior), ``from_code`` maps a
    ``latent``-sized code back to the feature map of ``width`` x ``grid`` x ``grid``.
    """

    encoder: nn.Sequential
    to_code: nn.Linear
    from_code: nn.Sequential
    decoder: nn.Sequential
    width: int
    grid: int

    @classmethod
    def build(cls, config: Any, channels: int, image_size: int, code_out: int) -> DenseCodec:
        """From a model config with ``base_channels``, ``depth``, ``blocks``, ``latent_dim``."""
        base, depth, blocks = config.base_channels, config.depth, config.blocks
        encoder, width = conv_encoder(channels, base, depth, blocks)
        grid = image_size // 2**depth
        flat = width * grid * grid
        return cls(
            encoder=encoder,
            to_code=nn.Linear(flat, code_out),
            from_code=nn.Sequential(nn.Linear(config.latent_dim, flat), nn.LeakyReLU(0.2)),
            decoder=conv_decoder(channels, base, depth, width, blocks),
            width=width,
            grid=grid,
        )
