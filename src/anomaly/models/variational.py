"""Shared by every variational model (vae, vit_vae, vae_grf): ELBO training and scoring.

A module of its own, not part of ``vae.py``, so that each model's code is one file
and its DVC dependency (``src/anomaly/models/${model}.py``) covers it; shared code
lives in the modules listed in ``registry.SHARED_MODULES``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..scoring import pixel_maps
from .base import ReconstructionModel


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
