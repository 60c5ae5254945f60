"""FastFlow (Yu et al., 2021): a 2-D normalizing flow on frozen pretrained features.

A frozen backbone (``models/backbones.py``; EfficientNet-Lite0's ImageNet weights by
default, offline) gives feature maps at a few ``layers``. Each level gets its own flow:
LayerNorm over the level's (C, H, W), then ``flow_steps`` affine coupling steps, each
transforming half of the channels by a scale and shift that a small convolutional
subnet computes from the other half (3 x 3 kernels in odd steps, 1 x 1 in even ones,
as the paper alternates them), the scale soft-clamped, followed by a fixed random
channel permutation. Trained by maximum likelihood under a standard normal on good
tiles only: the loss is the negative log-likelihood 0.5 |z|^2 - log|det J| per
feature value. At test time a position's anomaly value is 0.5 * mean over channels of
z^2 (the paper and anomalib map the likelihood the same way, without the Jacobian),
averaged over levels after upsampling to the tile, Gaussian-smoothed; the tile score
reduces the map by ``score.patch_reduce``.

Only the flows learn (the paper's point: no backbone fine-tuning), so training fits
in ``fit_memory``: the backbone's features of every good training tile are computed
once (their size is estimated and refused over ``max_memory_gb``), then the flows
take ``epochs`` passes over them with Adam. Published MVTec AD (ResNet-18, 8 steps):
image AUROC 0.97; the CPU defaults here are smaller (EfficientNet-Lite0, 4 steps).
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
from ..errors import ParamsError
from ..scoring import gaussian_blur, reduce_maps
from .backbones import FeatureMemoryModel, check_backbone
from .base import TrainOverrides
from .registry import register

log = logging.getLogger(__name__)


@dataclass
class FastFlowConfig(TrainOverrides):
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"  # imagenet | none | /path/to/state_dict.pth
    layers: list[str] = field(default_factory=lambda: ["stage2", "stage3"])
    input_size: int | None = None  # resize tiles to this side for the backbone
    flow_steps: int = 4  # coupling steps per level (the paper: 8 for ResNet-18)
    hidden_ratio: float = 1.0  # subnet width / input channels
    clamp: float = 2.0  # soft bound of the log-scale
    max_memory_gb: float = 4.0  # cached training features
    # The flows' own schedule (null: these defaults, not train.*: the flows are a head on
    # cached features, whose budget differs from a network trained on pixels)
    epochs: int | None = 20
    lr: float | None = 1e-3
    batch_size: int | None = 32
    weight_decay: float | None = 1e-5

    def validate(self, where: str, source: str) -> None:
        super().validate(where, source)
        check_backbone(self.backbone, self.layers, where, source)
        require(self.flow_steps >= 1, source, f"{where}.flow_steps", "must be >= 1")
        require(self.hidden_ratio > 0, source, f"{where}.hidden_ratio", "must be > 0")
        require(self.clamp > 0, source, f"{where}.clamp", "must be > 0")


class CouplingStep(nn.Module):
    """One affine coupling step and a fixed channel permutation (invertible)."""

    def __init__(self, channels: int, kernel: int, hidden_ratio: float, clamp: float, seed: int):
        super().__init__()
        self.keep = channels // 2
        hidden = max(1, int(round(channels * hidden_ratio)))
        moved = channels - self.keep
        self.subnet = nn.Sequential(
            nn.Conv2d(self.keep, hidden, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * moved, kernel, padding=kernel // 2),
        )
        nn.init.zeros_(self.subnet[-1].weight)  # starts as the identity: a stable start
        nn.init.zeros_(self.subnet[-1].bias)
        self.clamp = clamp
        order = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("order", order)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log|det J| per position (B, H, W))."""
        kept, moved = x[:, : self.keep], x[:, self.keep :]
        scale, shift = self.subnet(kept).chunk(2, dim=1)
        scale = self.clamp * torch.tanh(scale / self.clamp)
        moved = moved * torch.exp(scale) + shift
        z = torch.cat([kept, moved], dim=1).index_select(1, self.order)
        return z, scale.sum(dim=1)


class LevelFlow(nn.Module):
    """LayerNorm over a level's (C, H, W), then the coupling steps."""

    def __init__(self, shape: tuple[int, int, int], config: FastFlowConfig, seed: int) -> None:
        super().__init__()
        channels = shape[0]
        self.norm = nn.LayerNorm(list(shape), elementwise_affine=True)
        self.steps = nn.ModuleList(
            CouplingStep(
                channels, 3 if i % 2 == 0 else 1, config.hidden_ratio, config.clamp, seed + i
            )
            for i in range(config.flow_steps)
        )

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.norm(feats)
        log_det = z.new_zeros(z.shape[0], *z.shape[2:])
        for step in self.steps:
            z, step_det = step(z)
            log_det = log_det + step_det
        return z, log_det


@register("fastflow")
class FastFlow(FeatureMemoryModel):
    config_cls = FastFlowConfig

    def __init__(
        self,
        config: FastFlowConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        # The levels' shapes for this tile size, from a forward pass (weights do not
        # change shapes): each level's flow is sized and normalised for its grid.
        side = config.input_size or self.input_shape[1]
        with torch.no_grad():
            probe = self.extractor.eval()(torch.zeros(1, self.input_shape[0], side, side))
        shapes = {level: tuple(probe[level].shape[1:]) for level in self.extractor.layers}
        for level, shape in shapes.items():
            if shape[0] < 2:
                raise ParamsError(f"models.fastflow.layers: level {level} has {shape[0]} channel")
        self.levels = list(shapes)
        self.flows = nn.ModuleList(
            LevelFlow(shapes[level], config, 1000 * i) for i, level in enumerate(self.levels)
        )

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            feats = self.extractor(x)
        return [feats[level].float() for level in self.levels]

    def _nll(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood per feature value, summed over levels (the loss)."""
        total = feats[0].new_zeros(())
        for flow, level_feats in zip(self.flows, feats, strict=True):
            z, log_det = flow(level_feats)
            values = z[0].numel()
            nll = 0.5 * z.pow(2).flatten(1).sum(1) - log_det.flatten(1).sum(1)
            total = total + (nll / values).mean()
        return total

    def fit_memory(
        self,
        batches: Any,
        device: torch.device,
        n_tiles: int,
        seed: int,
        cluster: Cluster = SINGLE,
    ) -> dict:
        """Cache the frozen features of the good tiles, then fit the flows on them."""
        self.prepare_fit(device)
        levels = self.cache_features(batches, device, n_tiles, self._features, cluster)
        count = levels[0].shape[0]
        self.flows.train()
        loss = self.train_head(
            list(self.flows.parameters()),
            count,
            lambda index, _generator: self._nll([level[index].to(device) for level in levels]),
            seed,
            "nll",
        )
        self.eval()
        return {
            "memory_bank": int(count),
            "flow_parameters": int(sum(p.numel() for p in self.flows.parameters())),
            "final_nll": round(float(loss.detach()), 6),
        }

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        maps = None
        for flow, level_feats in zip(self.flows, self._features(x), strict=True):
            z, _ = flow(level_feats)
            level_map = 0.5 * z.pow(2).mean(dim=1, keepdim=True)
            level_map = F.interpolate(
                level_map, size=x.shape[-2:], mode="bilinear", align_corners=False
            )
            maps = level_map if maps is None else maps + level_map
        maps = gaussian_blur(maps / len(self.flows), cfg.smooth_sigma).squeeze(1)
        return reduce_maps(maps, cfg.patch_reduce, cfg.patch_top_fraction), maps
