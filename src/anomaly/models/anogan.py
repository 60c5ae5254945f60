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

On whole-image data the generator also learns to redraw G(E(x)) ~ x with
weight ``generator_recon`` (the code detached, so this reaches G only): the
paper's generator learns from D alone, which a few hundred steps on a couple
of hundred digits do not get far with (one-class MNIST digit 2: 0.774 -> 0.817
with the izi_f score). 0, the paper's, stays the default on local defects.

Anomaly score (``anomaly_score``): ``izi_f``, f-AnoGAN's, is the loss the
encoder is trained on, the squared residual (x - G(z))^2 plus ``kappa`` times
the squared distance of D's features of x and G(z); ``anogan``, the 2017
paper's, is (1 - lambda) |x - G(z)| + lambda |f(x) - f(G(z))|. params.yaml
sets izi_f (the field's own default stays the 2017 score, for checkpoints
written before the field existed): its residual is on the scale of the squared-error map, and on the
default fabric it gave image AUROC 0.985 against 0.973 and pixel AUROC 0.992
against 0.745 (the stage normalises maps with the score's statistics per
group, which fits only when the score is on the map's scale); digit 2, same
trained model, 0.774 against 0.728. Either way the residual term is read off
the smoothed residual map with ``score.patch_reduce`` like every
reconstruction model (the mean for whole-image anomalies; the top 1% of the
smoothed map for local defects, which a tile mean dilutes). ``mode:
latent_search`` finds z by ``search_steps`` Adam steps on that same score,
starting from E(x) (the original AnoGAN search, slow); ``mode: encoder`` uses
z = E(x) in one pass. The anomaly map is the pixel error map of x against G(z).
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
    # izi_f: (x - G(z))^2 + kappa (f(x) - f(G(z)))^2, f-AnoGAN's (2019), the loss the
    # encoder is trained on (f: the discriminator's features); anogan: the 2017 paper's
    # (1 - lambda) |x - G(z)| + lambda |f(x) - f(G(z))|. params.yaml sets izi_f; the field's
    # own default is the 2017 score because a checkpoint or bundle written before this
    # field existed lacks it, and its thresholds were fitted on that score
    anomaly_score: Literal["izi_f", "anogan"] = "anogan"
    lambda_weight: float = 0.1
    kappa: float = 1.0
    # weight of the reconstruction G(E(x)) ~ x in the generator's own loss; 0 is the
    # paper's generator, which learns from the discriminator only (auto: by data kind)
    generator_recon: float | Literal["auto"] = "auto"
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
    # vector code, which keeps only the shape class. On digits the generator also learns
    # to redraw E(x) (``generator_recon``): 175 training digits and a few hundred steps do
    # not teach an adversarial-only generator the class (the encoder's validation loss
    # on good digits halves with it). Chosen by validation (README, AnoGAN).
    kind_defaults = {
        "local": {"latent": "spatial", "generator_recon": 0.0},
        "whole-image": {"latent": "vector", "generator_recon": 1.0},
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
        z = self.enc(x)
        x_hat = self.generate(z, frozen)
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
        terms = {"disc": d_loss, "gen": g_loss, "izi_f": izi}
        loss = d_loss + g_loss + izi
        if self.config.generator_recon > 0:
            # the code detached: this term reaches G only (the encoder has izi_f)
            redraw = F.mse_loss(self.generate(z.detach()), x)
            loss = loss + self.config.generator_recon * redraw
            terms["gen_recon"] = redraw
        return {"loss": loss, **terms}

    def _combine(
        self, residual: torch.Tensor, f_x: torch.Tensor, x_hat: torch.Tensor
    ) -> torch.Tensor:
        """The score from the residual term and the distance between the input's
        discriminator features ``f_x`` (computed once per batch: the latent search
        changes only ``x_hat``) and the reconstruction's."""
        _, f_hat = self.disc(x_hat)
        if self.config.anomaly_score == "izi_f":
            return residual + self.config.kappa * (f_x - f_hat).pow(2).mean(1)
        lam = self.config.lambda_weight
        return (1 - lam) * residual + lam * (f_x - f_hat).abs().mean(1)

    def _error(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Per-pixel residual, channel mean: absolute (AnoGAN) or squared (izi_f)."""
        diff = x - x_hat
        return (diff.pow(2) if self.config.anomaly_score == "izi_f" else diff.abs()).mean(1)

    def _anomaly(self, x: torch.Tensor, f_x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return self._combine(self._error(x, x_hat).flatten(1).mean(1), f_x, x_hat)

    def _tile_score(
        self, x: torch.Tensor, f_x: torch.Tensor, x_hat: torch.Tensor, cfg: Any
    ) -> torch.Tensor:
        """The score with its residual term read off the smoothed residual map by
        ``score.patch_reduce``: with ``mean`` (digits) it is the paper's mean residual; on
        local defects the mean over a whole tile dilutes a small defect, and ``topk_mean``
        keeps it."""
        residual = gaussian_blur(self._error(x, x_hat).unsqueeze(1), cfg.smooth_sigma)
        r = reduce_maps(residual.squeeze(1), cfg.patch_reduce, cfg.patch_top_fraction)
        return self._combine(r, f_x, x_hat)

    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            z = self.enc(x)
            _, f_x = self.disc(x)
        if self.config.mode == "latent_search":
            z = z.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.config.search_lr)
            with torch.enable_grad():
                for _ in range(self.config.search_steps):
                    opt.zero_grad()
                    self._anomaly(x, f_x, self.generate(z)).sum().backward()
                    opt.step()
            z = z.detach()
        with torch.no_grad():
            x_hat = self.generate(z)
            return self._tile_score(x, f_x, x_hat, cfg), pixel_maps(x, x_hat, cfg, self.error_scale)
