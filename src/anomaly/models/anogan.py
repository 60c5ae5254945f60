"""AnoGAN (Schlegl et al., IPMI 2017) with the f-AnoGAN encoder (Schlegl et al., MedIA 2019).

A DCGAN learns the distribution of good tiles: generator G(z) from a Gaussian
code, discriminator D with spectral normalisation on every layer (which keeps
the adversarial game stable without tuning). The code is the paper's vector
(``latent: vector``, digits) or, on textures, a spatial grid of
``latent_channels`` per position of G's first feature map (``latent: spatial``,
as spatial GANs for texture synthesis): a vector code lets G draw plausible
fabric but not *this* tile's layout, so the residual is high everywhere and
hides the defect (image AUROC 0.691 on the default fabric; 0.973 spatial).
An encoder E is trained at the same time in the f-AnoGAN "izi_f" way:
x -> E -> G -> x' with the residual ||x - x'||^2 plus ``kappa`` times the
distance of D's features of x and x'. All three train with one optimiser; each
loss reaches only its own network (detached fakes for D, D's and G's weights
detached for the others).

Anomaly score, as in the original paper:
    A(x) = (1 - lambda) * R(x) + lambda * D(x),
R the mean absolute residual |x - G(z)| and D the mean absolute difference of
discriminator features of x and G(z). The tile score reads R off the absolute
residual map with ``score.patch_reduce`` like every reconstruction model (the
paper's mean for whole-image anomalies; the top 1% of the smoothed map for
local defects, which a tile mean dilutes). ``mode: latent_search`` finds z by
``search_steps`` Adam steps on that same loss, starting from E(x) (the
original AnoGAN search, slow); ``mode: encoder`` uses z = E(x) in one pass.
The anomaly map is the pixel error map of x against G(z).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

from ..scoring import gaussian_blur, pixel_maps, reduce_maps
from .base import ReconstructionModel, TrainOverrides
from .blocks import check_divisible, conv_decoder, conv_encoder
from .registry import register


@dataclass
class AnoGANConfig(TrainOverrides):
    # auto: by the data's anomaly kind (AnoGAN.kind_defaults)
    latent: Literal["auto", "vector", "spatial"] = "auto"
    latent_dim: int = 100  # vector code: its length
    latent_channels: int = 16  # spatial code: channels per position of G's first grid
    base_channels: int = 32
    depth: int = 3
    mode: Literal["encoder", "latent_search"] = "encoder"
    lambda_weight: float = 0.1
    kappa: float = 1.0
    search_steps: int = 50
    search_lr: float = 0.05


class Discriminator(nn.Module):
    def __init__(self, channels: int, base: int, depth: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for level in range(depth):
            width = base * min(2**level, 8)
            layers += [
                spectral_norm(nn.Conv2d(c, width, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2),
            ]
            c = width
        self.features = nn.Sequential(*layers)
        grid = image_size // 2**depth
        self.head = spectral_norm(nn.Linear(c * grid * grid, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x).flatten(1)
        return self.head(f), f


@register("anogan")
class AnoGAN(ReconstructionModel):
    config_cls = AnoGANConfig
    # Local defects on textures: a spatial code (``latent_channels`` per position of the
    # generator's first grid, as in spatial GANs for texture synthesis), so G can redraw
    # the given tile's layout and only the defect is left in the residual; a vector code
    # draws plausible fabric, not this roll. Whole-image anomalies (digits): the paper's
    # vector code, which keeps only the shape class. Chosen by validation (README, AnoGAN).
    kind_defaults = {
        "local": {"latent": "spatial"},
        "whole-image": {"latent": "vector"},
    }

    def __init__(
        self,
        config: AnoGANConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        check_divisible(image_size, config.depth, "models.anogan", self.input_shape)
        self.grid = image_size // 2**config.depth
        width = config.base_channels * min(2 ** (config.depth - 1), 8)
        self.width = width
        enc, enc_width = conv_encoder(in_channels, config.base_channels, config.depth, 0)
        if config.latent == "spatial":
            self.code_shape: tuple[int, ...] = (config.latent_channels, self.grid, self.grid)
            self.gen_in = nn.Sequential(
                nn.Conv2d(config.latent_channels, width, 1), nn.LeakyReLU(0.2)
            )
            self.enc = nn.Sequential(enc, nn.Conv2d(enc_width, config.latent_channels, 1))
        else:
            self.code_shape = (config.latent_dim,)
            self.gen_in = nn.Sequential(
                nn.Linear(config.latent_dim, width * self.grid**2), nn.LeakyReLU(0.2)
            )
            self.enc = nn.Sequential(
                enc, nn.Flatten(), nn.Linear(enc_width * self.grid**2, config.latent_dim)
            )
        self.gen = conv_decoder(in_channels, config.base_channels, config.depth, width, 0)
        self.disc = Discriminator(in_channels, config.base_channels, config.depth, image_size)

    def generate(self, z: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        if params is None:
            h = self.gen_in(z).view(-1, self.width, self.grid, self.grid)
            return self.gen(h)
        h = functional_call(self.gen_in, params["gen_in"], (z,))
        return functional_call(
            self.gen, params["gen"], (h.view(-1, self.width, self.grid, self.grid),)
        )

    def _frozen(self, *names: str) -> dict:
        return {
            n: {k: v.detach() for k, v in getattr(self, n).named_parameters()}
            | {k: v for k, v in getattr(self, n).named_buffers()}
            for n in names
        }

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.enc(x))

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        frozen = self._frozen("gen_in", "gen")
        disc_frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
        disc_frozen |= dict(self.disc.named_buffers())
        x_hat = self.generate(self.enc(x), frozen)
        _, f_real = functional_call(self.disc, disc_frozen, (x,))
        _, f_hat = functional_call(self.disc, disc_frozen, (x_hat,))
        izi = F.mse_loss(x_hat, x) + self.config.kappa * F.mse_loss(f_hat, f_real.detach())
        if not self.training:
            return {"loss": izi, "izi_f": izi}
        fake = self.generate(torch.randn(len(x), *self.code_shape, device=x.device))
        real_logit, _ = self.disc(x)
        fake_logit, _ = self.disc(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            real_logit, torch.ones_like(real_logit)
        ) + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        fooled, _ = functional_call(self.disc, disc_frozen, (fake,))
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        return {"loss": d_loss + g_loss + izi, "disc": d_loss, "gen": g_loss, "izi_f": izi}

    def _anomaly(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        _, f_x = self.disc(x)
        _, f_hat = self.disc(x_hat)
        residual = (x - x_hat).abs().flatten(1).mean(1)
        feature = (f_x - f_hat).abs().mean(1)
        lam = self.config.lambda_weight
        return (1 - lam) * residual + lam * feature

    def _tile_score(self, x: torch.Tensor, x_hat: torch.Tensor, cfg: Any) -> torch.Tensor:
        """A(x) with R read off the smoothed absolute residual map by ``score.patch_reduce``:
        with ``mean`` (digits) R is the paper's mean residual; on local defects the mean
        over a whole tile dilutes a small defect, and ``topk_mean`` keeps it."""
        residual = gaussian_blur((x - x_hat).abs().mean(1, keepdim=True), cfg.smooth_sigma)
        r = reduce_maps(residual.squeeze(1), cfg.patch_reduce, cfg.patch_top_fraction)
        _, f_x = self.disc(x)
        _, f_hat = self.disc(x_hat)
        lam = self.config.lambda_weight
        return (1 - lam) * r + lam * (f_x - f_hat).abs().mean(1)

    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            z = self.enc(x)
        if self.config.mode == "latent_search":
            z = z.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.config.search_lr)
            with torch.enable_grad():
                for _ in range(self.config.search_steps):
                    opt.zero_grad()
                    self._anomaly(x, self.generate(z)).sum().backward()
                    opt.step()
            z = z.detach()
        with torch.no_grad():
            x_hat = self.generate(z)
            return self._tile_score(x, x_hat, cfg), pixel_maps(x, x_hat, cfg, self.error_scale)
