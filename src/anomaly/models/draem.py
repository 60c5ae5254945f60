"""DRAEM (Zavrtanik et al., ICCV 2021): learn to find simulated anomalies.

Training sees only good tiles, but each batch is corrupted on the fly: a
binary mask is cut from thresholded Perlin noise and filled with texture from
an anomaly source (a folder of images when ``anomaly_source`` is set,
otherwise other training tiles of the same batch, rolled, flipped and
rotated); as in the paper, every source tile first goes through
``source_augmentations`` (3) intensity transforms drawn from the paper's list
(gamma, brightness, sharpening, solarisation, posterisation, inversion,
autocontrast, equalisation, saturation for colour), so the pasted region
differs from the fabric in brightness and contrast too, not only in weave
orientation: the defects the segmenter must then find are the intensity
changes real defects make. It is blended with a random opacity. A
reconstructive subnetwork (an autoencoder) learns to restore the clean tile
(L2 + SSIM loss) and a discriminative subnetwork (a small U-Net on the input
and its reconstruction) learns to segment the pasted region (focal loss). The
anomaly map is the segmentation probability, smoothed by an average filter;
the tile score is its maximum (``image_score: smoothed_max``). On whole-image
anomalies (a wrong digit) two things differ (``auto`` fields, ``kind_defaults``):
the reconstructive subnetwork gets a narrow code, so it cannot redraw a wrong
digit (with the wide code, one-class MNIST digits 1 and 2 scored 0.663 and
0.614); and the tile score is that subnetwork's reconstruction error
(``image_score: recon``), because the segmenter, which learns to find pasted
patches and to ignore the normal class's own reconstruction error, overlooks
many wrong digits (digit 3: 0.659 by the segmentation map's mean, 0.940 by the
reconstruction error of the same model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..scoring import error_components, gaussian_blur, pixel_maps, reduce_maps
from .base import AnomalyModel, TrainOverrides
from .blocks import check_divisible, conv_decoder, conv_encoder
from .registry import register


@dataclass
class DRAEMConfig(TrainOverrides):
    base_channels: int = 32
    # auto: by the data's anomaly kind (DRAEM.kind_defaults)
    depth: int | Literal["auto"] = "auto"
    latent_channels: int | Literal["auto"] = "auto"
    seg_channels: int = 32
    anomaly_probability: float = 0.5
    perlin_scale: list[int] = field(default_factory=lambda: [1, 3])  # log2 of noise cells
    anomaly_source: str | None = None
    source_augmentations: int = 3  # random intensity transforms per pasted texture (paper: 3)
    focal_gamma: float = 2.0
    smooth_size: int = 9
    # tile score: from the segmentation map (smoothed_max, mean) or the reconstructive
    # subnet's error map (recon); auto: by the data's anomaly kind (kind_defaults)
    image_score: Literal["auto", "smoothed_max", "mean", "recon"] = "auto"


def perlin(shape: tuple[int, int], cells: int, generator: torch.Generator) -> torch.Tensor:
    """2-D Perlin noise of ``shape`` with ``cells`` x ``cells`` gradient cells, roughly in [-1, 1]."""
    h, w = shape
    angles = 2 * math.pi * torch.rand(cells + 1, cells + 1, generator=generator)
    grads = torch.stack([angles.cos(), angles.sin()], dim=-1)
    ys = torch.linspace(0, cells, h + 1)[:-1]
    xs = torch.linspace(0, cells, w + 1)[:-1]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    y0, x0 = gy.floor().long().clamp(max=cells - 1), gx.floor().long().clamp(max=cells - 1)
    fy, fx = gy - y0, gx - x0

    def dot(iy: torch.Tensor, ix: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        g = grads[iy, ix]
        return g[..., 0] * dx + g[..., 1] * dy

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    n00 = dot(y0, x0, fy, fx)
    n10 = dot(y0, x0 + 1, fy, fx - 1)
    n01 = dot(y0 + 1, x0, fy - 1, fx)
    n11 = dot(y0 + 1, x0 + 1, fy - 1, fx - 1)
    u, v = fade(fx), fade(fy)
    return math.sqrt(2) * torch.lerp(torch.lerp(n00, n10, u), torch.lerp(n01, n11, u), v)


def _unet_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegmentationNet(nn.Module):
    """Two-level U-Net from (input, reconstruction) to 2-class logits."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.enc1 = _unet_block(cin, width)
        self.enc2 = _unet_block(width, 2 * width)
        self.mid = _unet_block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _unet_block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = _unet_block(2 * width, width)
        self.out = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


@register("draem")
class DRAEM(AnomalyModel):
    config_cls = DRAEMConfig
    weak_on = {
        "whole-image": "it learns from simulated local defects; whole-image changes (a "
        "wrong digit, a wrong object) are not what it is designed to find (its numbers "
        "still count: on digits it scores by its reconstruction error; one-class MNIST "
        "ten-digit mean 0.914, README); padim (0.984), ae, vae or aae suit whole-image "
        "anomalies better and train far faster"
    }
    # Local defects: the paper's wide code (8 x 8 x 64 on 64-px tiles) redraws the texture
    # and the segmenter finds the pasted spot; the maximum of the average-filtered map
    # scores it. Whole-image anomalies: with that code the reconstruction redraws any
    # digit and nothing differs (one-class MNIST through `make sweep`: digit 1 0.663,
    # digit 2 0.614, segmentation map's mean). A 4 x 4 x 2 code (as cae's) can only
    # redraw the normal class; but the segmenter, trained to ignore the normal class's
    # own reconstruction error and to find pasted patches, still overlooks many wrong
    # digits (digit 3: 0.659), while the reconstruction error itself ranks them
    # (README, "Why DRAEM was weak on digits": digits 0-5 compared on the same models).
    kind_defaults = {
        "local": {"depth": 3, "latent_channels": 64, "image_score": "smoothed_max"},
        "whole-image": {"depth": 4, "latent_channels": 2, "image_score": "recon"},
    }

    def __init__(
        self,
        config: DRAEMConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        check_divisible(image_size, max(config.depth, 2), "models.draem", self.input_shape)
        self.encoder, width = conv_encoder(in_channels, config.base_channels, config.depth, 1)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(width, config.latent_channels, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(config.latent_channels, width, 1),
            nn.LeakyReLU(0.2),
        )
        self.decoder = conv_decoder(in_channels, config.base_channels, config.depth, width, 1)
        self.segment = SegmentationNet(2 * in_channels, config.seg_channels)
        self._source: torch.Tensor | None = None
        # Two full-resolution networks make DRAEM the slowest model to train; oneDNN's
        # convolutions run a quarter faster in channels-last layout on one CPU thread
        # (64-px digit batch of 64: 5.1 s -> 3.6 s per step; 2.7 s -> 2.3 s on two),
        # and tensor cores prefer it too. Same maths, other memory order.
        self.to(memory_format=torch.channels_last)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.bottleneck(self.encoder(_nhwc(x))))

    def _segment(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Two-class logits from the input and its reconstruction."""
        return self.segment(_nhwc(torch.cat([x, recon], 1)))

    def _source_images(self, x: torch.Tensor) -> torch.Tensor:
        """Texture to paste: the configured folder, else the batch itself shuffled."""
        if self.config.anomaly_source:
            if self._source is None:
                self._source = load_texture_folder(
                    self.config.anomaly_source, self.in_channels, self.image_size
                )
            idx = torch.randint(len(self._source), (len(x),))
            return self._source[idx].to(x)
        texture = x.roll(1, dims=0)
        if torch.rand(()) < 0.5:
            texture = texture.flip(-1)
        return texture.rot90(int(torch.randint(4, ())), dims=(-2, -1))

    def simulate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrupted copies of ``x`` and their masks (B, 1, H, W)."""
        b, _, h, w = x.shape
        gen = torch.Generator().manual_seed(int(torch.randint(2**31, ())))
        lo, hi = self.config.perlin_scale
        masks = []
        for _ in range(b):
            cells = 2 ** int(torch.randint(lo, hi + 1, (1,), generator=gen))
            noise = perlin((h, w), cells, gen)
            keep = float(torch.rand((), generator=gen)) < self.config.anomaly_probability
            masks.append((noise > 0.5).float() * keep)
        mask = torch.stack(masks)[:, None].to(x)
        opacity = torch.empty(b, 1, 1, 1).uniform_(0.2, 1.0).to(x)
        texture = augment_texture(self._source_images(x), self.config.source_augmentations)
        corrupted = x * (1 - mask) + (1 - opacity) * x * mask + opacity * texture * mask
        return corrupted.clamp(0, 1), mask

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            corrupted, mask = self.simulate(x)
        else:  # validation on clean tiles: reconstruction plus "find nothing"
            corrupted, mask = x, torch.zeros_like(x[:, :1])
        recon = self.reconstruct(corrupted)
        mse, ssim_err = error_components(x, recon, window=7)
        rec_loss = mse.mean() + 2 * ssim_err.mean()
        logits = self._segment(corrupted, recon)
        prob = logits.softmax(1)
        target = mask[:, 0].long()
        pt = prob.gather(1, target[:, None])[:, 0].clamp(1e-6, 1)
        focal = (-((1 - pt) ** self.config.focal_gamma) * pt.log()).mean()
        return {"loss": rec_loss + focal, "recon": rec_loss, "focal": focal}

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.reconstruct(x)
        if self.config.image_score == "recon":
            maps = pixel_maps(x, recon, cfg)
            return reduce_maps(maps, cfg.patch_reduce, cfg.patch_top_fraction), maps
        prob = self._segment(x, recon).softmax(1)[:, 1:2]
        maps = gaussian_blur(prob, cfg.smooth_sigma).squeeze(1)
        if self.config.image_score == "mean":
            return prob.flatten(1).mean(dim=1), maps
        k = self.config.smooth_size
        smooth = F.avg_pool2d(prob, k, stride=1, padding=k // 2) if k > 1 else prob
        return smooth.flatten(1).max(dim=1).values, maps


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _per_sample(b: int, lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    return torch.empty(b, 1, 1, 1).uniform_(lo, hi).to(x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per sample and channel: each value becomes its rank."""
    flat = x.flatten(2)
    ranks = flat.argsort(-1).argsort(-1).to(x.dtype)
    return (ranks / max(flat.shape[-1] - 1, 1)).view_as(x)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def _sharpen(x: torch.Tensor) -> torch.Tensor:
    amount = _per_sample(len(x), 0.5, 2.0, x)
    return x + amount * (x - gaussian_blur(x, 1.0))


def _posterize(x: torch.Tensor) -> torch.Tensor:
    """Keep 1 to 7 bits per value."""
    levels = 2 ** torch.randint(1, 8, (len(x), 1, 1, 1)).to(x)
    return (x * levels).floor().clamp_max(levels - 1) / (levels - 1)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    grey = x.mean(1, keepdim=True)
    return grey + _per_sample(len(x), 0.0, 2.0, x) * (x - grey)


TEXTURE_AUGMENTATIONS: tuple = (
    lambda x: x.clamp_min(0) ** _per_sample(len(x), 0.5, 2.0, x),  # gamma contrast
    lambda x: x * _per_sample(len(x), 0.8, 1.2, x) + _per_sample(len(x), -30 / 255, 30 / 255, x),
    _sharpen,
    _saturation,
    lambda x: torch.where(x > _per_sample(len(x), 32 / 255, 128 / 255, x), 1 - x, x),  # solarise
    _posterize,
    lambda x: 1 - x,  # invert
    _autocontrast,
    _equalize,
)


def augment_texture(texture: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` distinct random transforms of ``TEXTURE_AUGMENTATIONS`` per sample
    (DRAEM's ``SomeOf(3)`` over imgaug ops), values kept in [0, 1].

    Each transform runs on the whole batch and is kept only for the samples that drew
    it, so the cost is a few elementwise passes, not a Python loop over samples."""
    if count <= 0:
        return texture
    b = len(texture)
    n_ops = len(TEXTURE_AUGMENTATIONS)
    chosen = torch.zeros(b, n_ops, dtype=torch.bool)
    picks = torch.rand(b, n_ops).argsort(1)[:, : min(count, n_ops)]
    chosen.scatter_(1, picks, True)
    out = texture
    for k, op in enumerate(TEXTURE_AUGMENTATIONS):
        if chosen[:, k].any():
            keep = chosen[:, k].to(texture.device).view(b, 1, 1, 1)
            out = torch.where(keep, op(out).clamp(0, 1), out)
    return out


def load_texture_folder(folder: str, channels: int, size: int) -> torch.Tensor:
    """Images of an anomaly-source folder (e.g. DTD textures) as (N, C, size, size) in [0, 1]."""
    from PIL import Image

    from ..image_reader import read_image

    paths = sorted(
        p
        for p in Path(folder).expanduser().rglob("*")
        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
    )
    if not paths:
        raise DataError(f"models.draem.anomaly_source: no images in {folder}")
    images = []
    for path in paths[:2000]:
        arr = read_image(path, "L" if channels == 1 else "RGB")
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
        images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(images)).float() / 255
