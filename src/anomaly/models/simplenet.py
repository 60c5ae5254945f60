"""SimpleNet (Liu et al., CVPR 2023): a discriminator between normal features and noisy ones.

A frozen backbone (``models/backbones.py``; EfficientNet-Lite0's ImageNet weights by
default, offline) gives local patch features as PatchCore builds them: the chosen
``layers``, each averaged over a 3 x 3 neighbourhood, upsampled to the first level's
grid and concatenated. Then, as in the paper:

- a **feature adaptor**, one linear layer, maps them to a space fitted to the target
  images (it starts as the identity here, so training begins from the ImageNet
  features themselves);
- an **anomalous feature generator** adds Gaussian noise to adapted normal features;
- a **discriminator**, two layers (linear, batch norm, leaky ReLU, linear), learns to
  give normal features a score above ``margin`` and noisy ones below ``-margin`` (the
  paper's truncated L1 loss).

At test time a position's anomaly value is minus the discriminator's output; the map is
upsampled to the tile and Gaussian-smoothed, and the tile score reduces it by
``score.patch_reduce``.

One adaptation: the features are standardised per channel on the good training tiles
before the adaptor, so ``noise_std`` is in units of each channel's spread and means the
same on every backbone and level (the paper's 0.015 is in the raw units of its
WideResNet-50 features projected to 1,536 channels). Only the adaptor and the
discriminator learn, so training fits in ``fit_memory`` on cached features, as for
FastFlow. Published MVTec AD (WideResNet-50, 160 epochs, GPU): image AUROC 0.996.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config_schema import require
from ..distributed import SINGLE, Cluster
from ..scoring import gaussian_blur, reduce_maps
from .backbones import FeatureMemoryModel, check_backbone, local_patch_features
from .base import TrainOverrides
from .registry import register

log = logging.getLogger(__name__)


@dataclass
class SimpleNetConfig(TrainOverrides):
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"  # imagenet | none | /path/to/state_dict.pth
    # stage4 too (stride 16): 0.957 image AUROC on the default fabric against 0.912
    layers: list[str] = field(default_factory=lambda: ["stage2", "stage3", "stage4"])
    input_size: int | None = None  # resize tiles to this side for the backbone
    noise_std: float = 0.5  # of the anomalous features, in standard deviations per channel
    hidden: int | None = None  # discriminator width (null: the feature channels)
    margin: float = 0.5  # the truncated L1 loss's thresholds, +margin and -margin
    max_memory_gb: float = 4.0  # cached training features
    # The heads' own schedule (null: these defaults, not train.*)
    epochs: int | None = 30
    lr: float | None = 1e-3
    batch_size: int | None = 32  # tiles per step (all of their positions)
    weight_decay: float | None = 1e-5

    def validate(self, where: str, source: str) -> None:
        super().validate(where, source)
        check_backbone(self.backbone, self.layers, where, source)
        require(self.noise_std > 0, source, f"{where}.noise_std", "must be > 0")
        require(self.margin > 0, source, f"{where}.margin", "must be > 0")
        require(self.hidden is None or self.hidden >= 1, source, f"{where}.hidden", "must be >= 1")


@register("simplenet")
class SimpleNet(FeatureMemoryModel):
    config_cls = SimpleNetConfig

    def __init__(
        self,
        config: SimpleNetConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        side = config.input_size or self.input_shape[1]
        with torch.no_grad():  # the concatenated channels for this backbone and levels
            probe = self.extractor.eval()(torch.zeros(1, self.input_shape[0], side, side))
        channels = int(local_patch_features(probe, self.extractor.layers).shape[1])
        hidden = config.hidden or channels
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))
        self.adaptor = nn.Linear(channels, channels)
        with torch.no_grad():
            self.adaptor.weight.copy_(torch.eye(channels))
            self.adaptor.bias.zero_()
        self.discriminator = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def _patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Local patch features (B, C, h, w) of the frozen backbone, as PatchCore's."""
        with torch.no_grad():
            return local_patch_features(self.extractor(x), self.extractor.layers).float()

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """The patch features standardised with the training statistics."""
        feats = self._patch_features(x)
        return (feats - self.feature_mean[:, None, None]) / self.feature_std[:, None, None]

    def _normality(self, flat: torch.Tensor) -> torch.Tensor:
        """The discriminator's output for (N, C) feature vectors: high means normal."""
        return self.discriminator(self.adaptor(flat)).squeeze(1)

    def fit_memory(
        self,
        batches: Any,
        device: torch.device,
        n_tiles: int,
        seed: int,
        cluster: Cluster = SINGLE,
    ) -> dict:
        """Cache the good tiles' features, then train the adaptor and the discriminator."""
        self.prepare_fit(device)
        (tiles,) = self.cache_features(
            batches, device, n_tiles, lambda x: [self._patch_features(x)], cluster
        )
        shape = tiles.shape[1:]
        # per-channel statistics over every training position, then standardised in place
        # (no second copy of the cache: fabric's is ~0.4 GB)
        std, mean = torch.std_mean(tiles, dim=(0, 2, 3))
        std = std.clamp_min(1e-6)
        self.feature_mean = mean.to(device)
        self.feature_std = std.to(device)
        tiles.sub_(mean[:, None, None]).div_(std[:, None, None])
        margin, noise = self.config.margin, self.config.noise_std

        def batch_loss(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            """Truncated L1: adapted normal features above +margin, the same plus Gaussian
            noise (added after the adaptor, as in the paper) below -margin."""
            normal = tiles[index].permute(0, 2, 3, 1).reshape(-1, shape[0])
            adapted = self.adaptor(normal.to(device))
            noisy = adapted + noise * torch.randn(adapted.shape, generator=generator).to(device)
            real, fake = self.discriminator(torch.cat([adapted, noisy])).squeeze(1).chunk(2)
            return F.relu(margin - real).mean() + F.relu(margin + fake).mean()

        heads = [*self.adaptor.parameters(), *self.discriminator.parameters()]
        self.adaptor.train()
        self.discriminator.train()
        loss = self.train_head(heads, tiles.shape[0], batch_loss, seed)
        self.eval()
        return {
            "memory_bank": int(tiles.shape[0]),
            "patch_features": int(tiles.shape[0] * shape[1] * shape[2]),
            "head_parameters": int(sum(p.numel() for p in heads)),
            "final_loss": round(float(loss.detach()), 6),
        }

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._features(x)
        b, c, h, w = feats.shape
        normality = self._normality(feats.permute(0, 2, 3, 1).reshape(-1, c))
        grid = (-normality).reshape(b, 1, h, w)
        maps = F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False)
        maps = gaussian_blur(maps, cfg.smooth_sigma).squeeze(1)
        return reduce_maps(maps, cfg.patch_reduce, cfg.patch_top_fraction), maps
