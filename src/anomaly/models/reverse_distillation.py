"""Reverse Distillation (Deng and Li, CVPR 2022): a student decoder that must redraw the
teacher's features from a one-class bottleneck.

A frozen pretrained teacher (``models/backbones.py``; EfficientNet-Lite0's ImageNet
weights by default, offline) gives feature maps at ``layers``, shallow to deep (the
default ``stage2``..``stage4`` have the strides 4, 8, 16 of the paper's WideResNet-50
``layer1``..``layer3``). As in the paper:

- **multi-scale feature fusion**: each level goes through stride-2 3 x 3 convolutions
  (batch norm, ReLU) down to the deepest level's grid, keeping that level's channels;
  the levels are concatenated;
- a **one-class embedding**: one residual block with stride 2 maps the fusion to a
  compact code of ``bottleneck`` channels (null: twice the deepest level's, as the
  paper's 2,048 for 1,024). The code is what the student sees: too small to carry an
  anomaly's detail, so what it cannot redraw shows up;
- a **student decoder**, the teacher in reverse: from the code, for each level deep to
  shallow, upsample to that level's grid and apply a residual block, then a 1 x 1
  projection to the level's channels.

The loss, on good tiles only, is 1 - cosine similarity between teacher and student
features at each position, averaged, summed over levels. At test time a position's
anomaly value is the same distance per level, upsampled to the tile and summed
(anomalib's ``add`` mode), Gaussian-smoothed; the tile score reduces the map by
``score.patch_reduce``.

Two adaptations, for any backbone and tile size: the decoder upsamples by bilinear
interpolation to each level's exact grid followed by a 3 x 3 convolution, instead of a
transposed convolution of stride 2 (levels of one stride, and odd grids, then fit);
and the embedding keeps its grid when the deepest grid is a single position. The
teacher is frozen and its features are cached once (as FastFlow's), so only the
bottleneck and the student train, in ``fit_memory``. Published MVTec AD (WideResNet-50,
200 epochs on a GPU): image AUROC 0.985.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config_schema import require
from ..distributed import SINGLE, Cluster
from ..scoring import gaussian_blur, reduce_maps
from .backbones import FeatureMemoryModel, check_backbone
from .base import TrainOverrides
from .registry import register

log = logging.getLogger(__name__)


@dataclass
class ReverseDistillationConfig(TrainOverrides):
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"  # imagenet | none | /path/to/state_dict.pth
    layers: list[str] = field(default_factory=lambda: ["stage2", "stage3", "stage4"])
    input_size: int | None = None  # resize tiles to this side for the backbone
    bottleneck: int | None = None  # code channels (null: twice the deepest level's)
    max_memory_gb: float = 4.0  # cached teacher features
    # The student's own schedule (null: these defaults, not train.*)
    epochs: int | None = 40
    lr: float | None = 5e-3
    batch_size: int | None = 32
    weight_decay: float | None = 1e-5

    def validate(self, where: str, source: str) -> None:
        super().validate(where, source)
        check_backbone(self.backbone, self.layers, where, source)
        require(len(self.layers) >= 1, source, f"{where}.layers", "needs at least one level")
        require(
            self.bottleneck is None or self.bottleneck >= 1,
            source,
            f"{where}.bottleneck",
            "must be >= 1",
        )


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """ResNet's basic block: two 3 x 3 convolutions and a shortcut (projected when the
    channels or the stride change)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """Multi-scale feature fusion and the one-class embedding (the paper's OCBE)."""

    def __init__(self, shapes: list[tuple[int, int, int]], code: int) -> None:
        super().__init__()
        deep_channels, deep_side = shapes[-1][0], shapes[-1][1]
        self.grid = (shapes[-1][1], shapes[-1][2])
        self.fuse = nn.ModuleList()
        for channels, side, _ in shapes:
            steps = max(0, round(math.log2(side / deep_side)))
            self.fuse.append(
                nn.Sequential(*(_conv_bn_relu(channels, channels, 2) for _ in range(steps)))
            )
        stride = 2 if min(self.grid) >= 2 else 1
        self.embed = ResidualBlock(sum(s[0] for s in shapes), code, stride)
        self.out_channels = deep_channels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fused = []
        for down, level in zip(self.fuse, feats, strict=True):
            level = down(level)
            if tuple(level.shape[-2:]) != self.grid:  # odd grids: ceil vs floor sizes
                level = F.interpolate(level, size=self.grid, mode="bilinear", align_corners=False)
            fused.append(level)
        return self.embed(torch.cat(fused, dim=1))


class StudentDecoder(nn.Module):
    """From the code, each level deep to shallow: upsample to its grid, a residual block,
    a 1 x 1 projection to its channels (the student's features for that level)."""

    def __init__(self, shapes: list[tuple[int, int, int]], code: int) -> None:
        super().__init__()
        self.grids = [(s[1], s[2]) for s in reversed(shapes)]
        widths = [s[0] for s in reversed(shapes)]
        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        cin = code
        for width in widths:
            self.blocks.append(
                nn.Sequential(_conv_bn_relu(cin, width), ResidualBlock(width, width))
            )
            self.heads.append(nn.Conv2d(width, width, 1))
            cin = width

    def forward(self, code: torch.Tensor) -> list[torch.Tensor]:
        """The student's features, shallow to deep (the teacher's order)."""
        out, x = [], code
        for grid, block, head in zip(self.grids, self.blocks, self.heads, strict=True):
            x = block(F.interpolate(x, size=grid, mode="bilinear", align_corners=False))
            out.append(head(x))
        return out[::-1]


@register("reverse_distillation")
class ReverseDistillation(FeatureMemoryModel):
    config_cls = ReverseDistillationConfig

    def __init__(
        self,
        config: ReverseDistillationConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        side = config.input_size or self.input_shape[1]
        with torch.no_grad():  # the levels' shapes for this tile size (weights keep shapes)
            probe = self.extractor.eval()(torch.zeros(1, self.input_shape[0], side, side))
        self.levels = list(self.extractor.layers)
        shapes = [tuple(probe[level].shape[1:]) for level in self.levels]
        code = config.bottleneck or 2 * shapes[-1][0]
        self.bottleneck = Bottleneck(shapes, code)
        self.student = StudentDecoder(shapes, code)

    def _teacher(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            feats = self.extractor(x)
        return [feats[level].float() for level in self.levels]

    def _distances(self, teacher: list[torch.Tensor]) -> list[torch.Tensor]:
        """1 - cosine similarity of teacher and student per level, (B, h, w) each."""
        student = self.student(self.bottleneck(teacher))
        return [
            1 - F.cosine_similarity(t, s, dim=1, eps=1e-6)
            for t, s in zip(teacher, student, strict=True)
        ]

    def fit_memory(
        self,
        batches: Any,
        device: torch.device,
        n_tiles: int,
        seed: int,
        cluster: Cluster = SINGLE,
    ) -> dict:
        """Cache the teacher's features of the good tiles, then train bottleneck and
        student to redraw them."""
        self.prepare_fit(device)
        levels = self.cache_features(batches, device, n_tiles, self._teacher, cluster)
        heads = [*self.bottleneck.parameters(), *self.student.parameters()]
        self.bottleneck.train()
        self.student.train()

        def batch_loss(index: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
            teacher = [level[index].to(device) for level in levels]
            return sum(d.mean() for d in self._distances(teacher))

        loss = self.train_head(heads, levels[0].shape[0], batch_loss, seed, "1 - cos")
        self.eval()
        return {
            "memory_bank": int(levels[0].shape[0]),
            "student_parameters": int(sum(p.numel() for p in heads)),
            "final_loss": round(float(loss.detach()), 6),
        }

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        maps = None
        for distance in self._distances(self._teacher(x)):
            level_map = F.interpolate(
                distance.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False
            )
            maps = level_map if maps is None else maps + level_map
        maps = gaussian_blur(maps, cfg.smooth_sigma).squeeze(1)
        return reduce_maps(maps, cfg.patch_reduce, cfg.patch_top_fraction), maps
