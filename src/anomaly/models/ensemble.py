"""An ensemble: several registered models trained in the one train stage, combined.

Why: the models miss different kinds of defect (PatchCore the thin scratches and
stains on grass and gravel, the ``cae`` the smears; results page, "Ensembles on
the real photographs"), so standardised scores of two of them, combined, beat
either alone on average. ``anomaly select`` can then choose among single models
and ensembles by the label-free figure.

How: each member is built from its class defaults plus ``overrides.<member>`` (the
ensemble's own params block, so DVC's ``models.${model}`` params dependency covers
every member setting) and trained by the same ``train_model`` a single run uses.
After training, the ensemble keeps a deterministic sample of good validation tiles
(``reference_tiles``). On the first ``score`` with a given score configuration it
scores them with every member and standardises each member's tile scores and map
pixels by their mean and standard deviation there, so the members' very different
scales (a Mahalanobis distance, a squared error) become comparable; the combined
map and tile score are the mean or the maximum of the standardised members
(``combine``). Keeping tiles rather than statistics is what lets any ``score.*``
setting (``score.map``, ``smooth_sigma``, ``patch_reduce``) be standardised exactly,
in the score stage, in a bundle, in ``predict`` and in the ONNX graph (export calls
``prepare_scoring`` first, so the statistics are constants there).

A member's code is loaded by name, so DVC's ``models/${model}.py`` dependency does
not cover it: the train stage records each member module's sha256 in the
checkpoint and the score stage refuses a checkpoint whose members' code changed
since (``stale_member_code``), naming the retrain command.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..config_schema import build, require
from ..errors import TrainingError
from .base import AnomalyModel, TrainOverrides
from .registry import get_model_class, register, resolve_auto

# Score settings that change a member's scores or maps: the standardisation key.
_SCORE_FIELDS = ("map", "ssim_window", "smooth_sigma", "patch_reduce", "patch_top_fraction")


@dataclass
class EnsembleConfig(TrainOverrides):
    members: list[str] = field(default_factory=lambda: ["patchcore", "cae"])
    # member -> settings of that member's params block (its class defaults otherwise)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    combine: Literal["mean", "max"] = "mean"
    reference_tiles: int = 256  # good validation tiles kept to standardise the members
    # the data's anomaly kind, passed to the members' own `auto` fields (set by the
    # train stage from dataset.json; checkpoints hold the concrete value)
    data_kind: Literal["auto", "local", "whole-image"] = "auto"

    def validate(self, where: str, source: str) -> None:
        super().validate(where, source)
        require(len(self.members) >= 2, source, f"{where}.members", "must name at least 2 models")
        require(
            len(set(self.members)) == len(self.members),
            source,
            f"{where}.members",
            "must not name a model twice",
        )
        require(self.reference_tiles >= 8, source, f"{where}.reference_tiles", "must be >= 8")
        for name in self.members:
            require(name != "ensemble", source, f"{where}.members", "cannot hold an ensemble")
            cls = get_model_class(name, source)
            build(cls.config_cls, self.overrides.get(name), f"{where}.overrides.{name}", source)
        for name in self.overrides:
            require(
                name in self.members,
                source,
                f"{where}.overrides.{name}",
                f"names no member (members: {', '.join(self.members)})",
            )


def member_config(config: EnsembleConfig, name: str) -> Any:
    """Member ``name``'s typed config: its class defaults plus the ensemble's overrides,
    ``auto`` fields resolved for the data's anomaly kind."""
    cls = get_model_class(name)
    built = build(cls.config_cls, config.overrides.get(name), f"models.ensemble.overrides.{name}")
    kind = "local" if config.data_kind == "auto" else config.data_kind
    return resolve_auto(cls, built, kind)[0]


def module_sha256(name: str) -> str:
    """sha256 of model ``name``'s module file: what the checkpoint records per member."""
    path = Path(__file__).with_name(f"{name}.py")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@register("ensemble")
class Ensemble(AnomalyModel):
    config_cls = EnsembleConfig
    trainable: ClassVar[bool] = False
    kind_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {"data_kind": "local"},
        "whole-image": {"data_kind": "whole-image"},
    }

    def __init__(
        self,
        config: EnsembleConfig,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        self.member_names = list(config.members)
        self.members = nn.ModuleList(
            get_model_class(name)(
                member_config(config, name), in_channels, image_size, self.input_shape
            )
            for name in self.member_names
        )
        kind = config.data_kind
        notes = [
            f"{n}: {m.weak_on[kind]}"
            for n, m in zip(self.member_names, self.members, strict=True)
            if kind in m.weak_on
        ]
        if notes:
            self.weak_on = {kind: "; ".join(notes)}
        # Good validation tiles, (N, C, H, W): uint8 when the tiles are k / 255 exactly
        # (images), float32 otherwise (table rows); filled by `calibrate`.
        self.register_buffer("reference", torch.zeros((0, *self.input_shape), dtype=torch.uint8))
        self._stats: dict[tuple, torch.Tensor] = {}

    def code_fingerprint(self) -> dict[str, str]:
        return {name: module_sha256(name) for name in self.member_names}

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise TypeError("ensemble: its members are trained one by one (training.train_model)")

    @torch.no_grad()
    def calibrate(self, batches: Any) -> None:
        """Keep ``reference_tiles`` good validation tiles, evenly spaced (no RNG)."""
        tiles = torch.cat([x.detach().cpu().float() for x in batches])
        if len(tiles) == 0:
            raise TrainingError("ensemble: no good validation tiles to standardise members on")
        keep = np.unique(np.linspace(0, len(tiles) - 1, self.config.reference_tiles).round())
        chosen = tiles[torch.as_tensor(keep, dtype=torch.long)]
        as_bytes = (chosen * 255).round()
        if torch.equal(as_bytes / 255, chosen):
            self.reference = as_bytes.to(torch.uint8)
        else:
            self.reference = chosen
        self._stats.clear()

    def _reference_tiles(self, device: torch.device) -> torch.Tensor:
        ref = self.reference.to(device)
        return ref.float() / 255 if ref.dtype == torch.uint8 else ref.float()

    @torch.no_grad()
    def prepare_scoring(self, cfg: Any, device: torch.device | None = None) -> torch.Tensor:
        """Each member's (score mean, score std, map mean, map std) on the reference tiles
        under ``cfg``, (members, 4), computed once per score setting."""
        key = tuple(getattr(cfg, f, None) for f in _SCORE_FIELDS)
        if key in self._stats:
            return self._stats[key]
        if len(self.reference) == 0:
            raise TrainingError("ensemble: no reference tiles; run the train stage first")
        device = device or self.reference.device
        tiles = self._reference_tiles(device)
        rows = []
        for member in self.members:
            scores, maps = [], []
            for batch in tiles.split(64):
                s, m = member.score(batch, cfg)
                scores.append(s.double().cpu())
                maps.append(None if m is None else m.double().cpu())
            s = torch.cat(scores)
            row = [s.mean(), s.std(unbiased=False)]
            if maps[0] is None:
                row += [torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)]
            else:
                m = torch.cat(maps)
                row += [m.mean(), m.std(unbiased=False)]
            rows.append(torch.stack(row))
        stats = torch.stack(rows)
        # A member that scores every good tile alike would divide by ~0: floor its spread
        # at a millionth of its level (plus an absolute floor), so it still counts.
        for spread, level in ((1, 0), (3, 2)):
            floor = stats[:, level].abs() * 1e-6 + 1e-12
            stats[:, spread] = torch.maximum(stats[:, spread], floor)
        self._stats[key] = stats.float()
        return self._stats[key]

    def _combine(self, parts: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(parts)
        return stacked.mean(0) if self.config.combine == "mean" else stacked.amax(0)

    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        stats = self.prepare_scoring(cfg, x.device).to(x.device)
        scores, maps = [], []
        for i, member in enumerate(self.members):
            s, m = member.score(x, cfg)
            scores.append((s.float() - stats[i, 0]) / stats[i, 1])
            maps.append(None if m is None else (m.float() - stats[i, 2]) / stats[i, 3])
        combined_maps = None if any(m is None for m in maps) else self._combine(maps)
        return self._combine(scores), combined_maps

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        """Members with buffers sized at fit time (memory banks) load their own part."""
        stored = state_dict.get("reference")
        if stored is not None:
            self.reference = torch.empty_like(stored, device=self.reference.device)
        for i, member in enumerate(self.members):
            prefix = f"members.{i}."
            part = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            member.load_state_dict(part, strict=strict, assign=assign)
        rest = {k: v for k, v in state_dict.items() if not k.startswith("members.")}
        self._stats.clear()
        missing, unexpected = [], []
        if strict:
            mine = {"reference"}
            missing = sorted(mine - set(rest))
            unexpected = sorted(set(rest) - mine)
            if missing or unexpected:
                raise RuntimeError(f"ensemble: missing {missing}, unexpected {unexpected}")
        if "reference" in rest:
            self.reference.copy_(rest["reference"])
        return nn.modules.module._IncompatibleKeys(missing, unexpected)
