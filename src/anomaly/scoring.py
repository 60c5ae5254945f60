"""From reconstructions to pixel maps, tile scores and image scores.

Pixel maps: squared error, SSIM error (1 - SSIM) / 2, or their sum after
scaling each by its mean on good validation pixels, then Gaussian smoothing
(isolated noisy pixels are not defects). Tile score: max, mean or mean of the
top fraction of its map. Image score: max, mean or top-k mean of its tiles.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

# What ``auto`` means when the dataset family says nothing: local defects on textures and
# objects (a smoothed map, the mean of its brightest 1%), the setting the pipeline was
# validated on for fabrics (README, "Results").
AUTO_FALLBACK: dict[str, Any] = {"patch_reduce": "topk_mean", "smooth_sigma": 4.0}
AUTO_KEYS = tuple(AUTO_FALLBACK)

log = logging.getLogger(__name__)


def resolve_score(cfg: Any, family_defaults: dict[str, Any] | None) -> tuple[Any, dict[str, str]]:
    """``score.*`` with every ``auto`` replaced by the dataset family's value (or the
    fallback); returns (resolved config, {key: where its value came from}).

    Why per family: what makes an image anomalous differs. A fabric defect is a small
    local change, best found by smoothing the map and averaging its brightest pixels; a
    wrong digit is a whole-image change, where the mean error of the unsmoothed map ranks
    best (README, "One-class MNIST": cae 0.685 with the fabric setting).
    """
    changes, origin = {}, {}
    for key in AUTO_KEYS:
        if getattr(cfg, key) != "auto":
            origin[key] = "params"
            continue
        if family_defaults and key in family_defaults:
            changes[key], origin[key] = family_defaults[key], "dataset family"
        else:
            changes[key], origin[key] = AUTO_FALLBACK[key], "fallback"
    return replace(cfg, **changes), origin


def gaussian_kernel1d(
    sigma: float, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding, in the input's dtype.

    Mixed-precision training (``train.amp``) would run its convolutions in bfloat16;
    the blur opts out so that the local statistics built from it (SSIM's variances,
    differences of nearly equal numbers) keep their precision."""
    if isinstance(sigma, str):
        raise ValueError(f"score.smooth_sigma {sigma!r} reached scoring unresolved (a bug)")
    if sigma <= 0:
        return images
    with torch.autocast(images.device.type, enabled=False):
        return _blur(images, sigma)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = gaussian_kernel1d(sigma, images.device, images.dtype)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    pad_mode = "reflect" if min(images.shape[-2:]) > radius else "replicate"
    out = F.pad(images, (radius, radius, 0, 0), mode=pad_mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode=pad_mode)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Per-pixel SSIM (B, C, H, W) with a Gaussian window, for images in [0, 1].

    Always float32, also inside ``torch.autocast``: var = E[x^2] - E[x]^2 cancels
    catastrophically in bfloat16 (8 significant bits), which made SSIM losses noise
    under ``train.amp`` on CUDA (DRAEM on digits fell from 0.925 to 0.321 image AUROC).
    The blurs are the only ops autocast would cast; ``gaussian_blur`` opts out itself,
    and the elementwise arithmetic below stays in the float32 of its inputs."""
    x, y = x.float(), y.float()
    sigma = window / 6
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = gaussian_blur(x, sigma), gaussian_blur(y, sigma)
    var_x = gaussian_blur(x * x, sigma) - mu_x**2
    var_y = gaussian_blur(y * y, sigma) - mu_y**2
    cov = gaussian_blur(x * y, sigma) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def error_components(
    x: torch.Tensor, recon: torch.Tensor, window: int = 7, need_ssim: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Squared error and SSIM error, each (B, H, W), averaged over channels."""
    x, recon = x.float(), recon.float()
    mse = ((x - recon) ** 2).mean(dim=1)
    ssim_err = None
    if need_ssim:
        ssim_err = ((1 - ssim_map(x, recon, window)) / 2).mean(dim=1)
    return mse, ssim_err


def pixel_maps(
    x: torch.Tensor, recon: torch.Tensor, cfg: Any, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """The anomaly map (B, H, W) chosen by ``score.map``, smoothed by ``score.smooth_sigma``."""
    mse, ssim_err = error_components(x, recon, cfg.ssim_window, need_ssim=cfg.map != "mse")
    if cfg.map == "mse":
        maps = mse
    elif cfg.map == "ssim":
        maps = ssim_err
    else:
        s = scale if scale is not None else torch.ones(2, device=x.device)
        maps = mse / s[0] + ssim_err / s[1]
    return gaussian_blur(maps.unsqueeze(1), cfg.smooth_sigma).squeeze(1)


def reduce_maps(maps: torch.Tensor, how: str, top_fraction: float = 0.01) -> torch.Tensor:
    """One score per map: max, mean, or mean of the top fraction of pixels."""
    flat = maps.flatten(1)
    if how not in ("max", "mean", "topk_mean"):
        raise ValueError(f"score.patch_reduce {how!r} reached scoring unresolved (a bug)")
    if how == "max":
        return flat.max(dim=1).values
    if how == "mean":
        return flat.mean(dim=1)
    k = max(1, int(round(flat.shape[1] * top_fraction)))
    return flat.topk(k, dim=1).values.mean(dim=1)


def aggregate_images(patches: pd.DataFrame, how: str, k: int = 3) -> pd.DataFrame:
    """Image scores from tile scores (``patches`` has image_id and score columns)."""

    def reduce(values: pd.Series) -> float:
        arr = np.sort(values.to_numpy())[::-1]
        if how == "max":
            return float(arr[0])
        if how == "mean":
            return float(arr.mean())
        return float(arr[: min(k, len(arr))].mean())

    scores = patches.groupby("image_id", sort=True)["score"].agg(reduce)
    return scores.rename("score").reset_index()


class MapStitcher:
    """One image's full-resolution map, built tile by tile: a sum and a count per pixel,
    divided at the end (overlaps averaged). Tiles can be added as they are scored, so a
    huge image's tile maps never have to be held all at once: memory is the map itself
    (float32 sum, uint16 count), whatever the number of tiles."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.total = np.zeros((height, width), dtype=np.float32)
        self.count = np.zeros((height, width), dtype=np.uint16)

    def add(self, tile_map: np.ndarray, x: int, y: int, w: int, h: int) -> None:
        """One tile's map for the box ``x, y, w, h`` (image pixels); a map computed at
        another resolution is resized to the box bilinearly."""
        h, w = min(int(h), self.height - y), min(int(w), self.width - x)
        m = torch.as_tensor(np.asarray(tile_map, dtype=np.float32))
        if m.shape != (h, w):
            m = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[
                0, 0
            ]
        self.total[y : y + h, x : x + w] += m.numpy()
        self.count[y : y + h, x : x + w] += 1

    def result(self, rows: int = 512) -> np.ndarray:
        """The averaged map (float32, the sum's buffer reused), pixels no tile covered set
        to the lowest covered value; in row blocks, so no full-size temporaries."""
        lowest = np.inf
        for top in range(0, self.height, rows):
            total, count = self.total[top : top + rows], self.count[top : top + rows]
            covered = count > 0
            np.divide(total, count.astype(np.float32), out=total, where=covered)
            if covered.any():
                lowest = min(lowest, float(total[covered].min()))
        fill = 0.0 if lowest == np.inf else lowest
        for top in range(0, self.height, rows):
            block = self.total[top : top + rows]
            block[self.count[top : top + rows] == 0] = fill
        self.count = np.zeros((0, 0), dtype=np.uint16)
        return self.total


def stitch(tile_maps: np.ndarray, tiles: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """Full-resolution map of one image from its tiles' maps, averaging overlaps.

    ``tiles`` gives each tile's box ``x``, ``y``, ``w``, ``h`` in image pixels;
    maps computed at another resolution are resized to the box bilinearly.
    """
    stitcher = MapStitcher(height, width)
    boxes = tiles[["x", "y", "w", "h"]].to_numpy(dtype=np.int64)
    for tile_map, (x, y, w, h) in zip(tile_maps, boxes, strict=True):
        stitcher.add(tile_map, int(x), int(y), int(w), int(h))
    return stitcher.result()


def fit_group_normalizer(tiles: pd.DataFrame) -> dict:
    """Mean and spread of good validation tile scores, per group and overall.

    Why: fabrics (or MVTec categories) differ in how well they reconstruct, so
    a raw score of 4 can be normal for a coarse irregular weave and alarming
    for a fine plain one. Standardising per group with good validation data
    puts every group on one scale before thresholds are chosen.
    """
    good = tiles[tiles["label"] == 0]
    if good.empty:
        return {"overall": [0.0, 1.0], "groups": {}}

    def stats(values: pd.Series) -> list[float]:
        spread = float(values.std(ddof=0)) if len(values) > 1 else 0.0
        return [float(values.mean()), spread if spread > 1e-12 else 1.0]

    groups = {str(g): stats(v["score"]) for g, v in good.groupby("group", sort=True)}
    return {"overall": stats(good["score"]), "groups": groups}


def group_affine(groups: pd.Series, normalizer: dict) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) per row: ``(score - shift) / scale`` is the normalised score."""
    known = normalizer["groups"]
    fallback = normalizer["overall"]
    pairs = [known.get(str(g), fallback) for g in groups]
    arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def fit_normalisation(
    method: str, val_tiles: pd.DataFrame, all_groups: list[str] | None = None
) -> dict:
    """What the score stage stores in normalization.json: ``{"method": "none"}`` or the
    per-group statistics of good validation tile scores (column ``score``).

    Groups of the dataset with no good validation tile (``all_groups`` minus the fitted
    ones) are listed as ``fallback_groups``: they are normalised with the overall
    statistics, a warning says so, and predict applies the same rule to them.
    """
    if method != "group":
        return {"method": method}
    norm = {"method": method, **fit_group_normalizer(val_tiles)}
    missing = sorted({str(g) for g in all_groups or []} - set(norm["groups"]))
    if missing:
        log.warning(
            "groups %s have no good validation tiles: their scores are normalised with the "
            "statistics of all groups (add good images of them for a group of their own)",
            ", ".join(missing),
        )
    norm["fallback_groups"] = missing
    return norm


def normalise(scores: np.ndarray, groups: pd.Series, norm: dict) -> tuple[np.ndarray, ...]:
    """(normalised scores, shift, scale) per row under a stored normalisation. The one
    place both the score stage and predict turn raw scores into thresholded ones."""
    if norm.get("method") != "group":
        shift, scale = np.zeros(len(scores)), np.ones(len(scores))
    else:
        shift, scale = group_affine(groups, norm)
    return (np.asarray(scores, dtype=np.float64) - shift) / scale, shift, scale


FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_float16(values: np.ndarray) -> np.ndarray:
    """``values`` as float16 with anything beyond its finite range (65,504) clipped to it.

    Why: maps are stored as float16, and a model whose map values exceed that range (FastFlow
    on random features: 0.5 z^2 in the millions) made them inf, and the pixel metrics then
    computed inf - inf = NaN. Clipped values tie at the top instead; values inside the range
    are cast exactly as a plain ``astype`` would (outputs stay byte-identical)."""
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def score_tiles(
    model: Any,
    store: Any,
    ids: np.ndarray,
    score_cfg: Any,
    device: Any,
    keep_maps: bool,
    keep_codes: bool | None = None,
    desc: str = "score",
    map_sink: Any = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Tile scores (N,) and, when asked, tile maps (N, S, S) and latent codes (N, D),
    both as float16 (the maps feed the pixel metrics, the codes the latent-space plot).

    ``map_sink(maps)``, when given, receives each batch's float16 maps in tile order
    instead of keeping them: the test set's maps are stitched and written as they come,
    so memory does not grow with the test set."""
    keep_codes = keep_maps if keep_codes is None else keep_codes
    scores, maps, codes = [], [], []
    peak = 0.0  # the largest map value, to say once when float16 had to clip
    from tqdm import tqdm

    batches = store.batches(ids, score_cfg.batch_size)
    total = -(-len(ids) // score_cfg.batch_size)
    with torch.no_grad():
        for x in tqdm(batches, total=total, desc=desc, unit="batch", disable=None):
            x = x.to(device)
            s, m = model.score(x, score_cfg)
            scores.append(s.float().cpu().numpy())
            if keep_maps and m is not None:
                raw_maps = m.float().cpu().numpy()
                if raw_maps.size:
                    peak = max(peak, float(np.nanmax(np.abs(raw_maps))))
                batch_maps = to_float16(raw_maps)
                if map_sink is not None:
                    map_sink(batch_maps)
                else:
                    maps.append(batch_maps)
            code = model.latent_codes(x) if keep_codes else None
            if code is not None:
                codes.append(to_float16(code.float().cpu().numpy()))  # a huge code: not inf
    if peak > FLOAT16_MAX:
        log.warning(
            "%s: anomaly maps reach %.3g, beyond float16's range: stored as %d (they tie at "
            "the top of the pixel metrics; image scores are unaffected)",
            desc,
            peak,
            FLOAT16_MAX,
        )
    score_arr = np.concatenate(scores) if scores else np.zeros(0)
    map_arr = np.concatenate(maps) if maps else None
    code_arr = np.concatenate(codes) if codes else None
    return score_arr, map_arr, code_arr
