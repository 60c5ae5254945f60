"""The interface every model implements, and the shared reconstruction-model logic.

Why one interface: the score, threshold and evaluate stages never ask which
model they hold. A model learns from good data only (``fit``), and maps a
batch to per-sample scores and per-pixel anomaly maps (``score``), higher
meaning more anomalous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..config_schema import require
from ..scoring import error_components, pixel_maps, reduce_maps
from .corruption import corrupt


@dataclass
class TrainOverrides:
    """Per-model overrides of the global ``train`` block (null = use ``train.*``)."""

    # Integers may be 0 only where the name says "extra" (see config_schema's sign rule).
    ZERO_OK: ClassVar[tuple[str, ...]] = ("blocks",)
    # Scales that divide or multiply a step: 0 would give NaN or a model that never moves.
    POSITIVE: ClassVar[tuple[str, ...]] = (
        "likelihood_sigma",
        "range",
        "mlp_ratio",
        "search_lr",
        "max_memory_gb",
    )

    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None

    def validate(self, where: str, source: str) -> None:
        require(self.epochs is None or self.epochs >= 1, source, f"{where}.epochs", "must be >= 1")
        require(self.lr is None or self.lr > 0, source, f"{where}.lr", "must be > 0")
        require(
            self.batch_size is None or self.batch_size >= 1,
            source,
            f"{where}.batch_size",
            "must be >= 1",
        )
        denoise = getattr(self, "denoise", 0.0)
        require(
            denoise == "auto" or 0 <= denoise <= 1, source, f"{where}.denoise", "must be in [0, 1]"
        )


class AnomalyModel(nn.Module):
    """Base class: subclasses set ``config_cls`` and implement the hooks below."""

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type] = TrainOverrides
    trainable: ClassVar[bool] = True
    # Weaknesses by anomaly kind (dataset.json's anomaly_kind: "local" or "whole-image"),
    # {kind: why, with the measured figure, and what to use instead}: the train stage
    # repeats them as a warning, so a user who picks a model for data it does poorly on
    # learns it from the log, not from the results. A model built for one kind (DRAEM:
    # simulated local defects) says so for the other kind here too.
    weak_on: ClassVar[dict[str, str]] = {}
    # Config fields whose `auto` value depends on the data's anomaly kind ("local"
    # defects, "whole-image" changes; see Family.anomaly_kind): {kind: {field: value}};
    # "local" is also the fallback. Resolved by registry.build_model, so checkpoints
    # and bundles hold the concrete values that ran.
    kind_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(
        self,
        config: Any,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        self.image_size = image_size
        self.input_shape = tuple(input_shape or (in_channels, image_size, image_size))

    # Registered models this one is made of and trains one after the other (an
    # ensemble's members); empty for a model that trains as itself.
    member_names: tuple[str, ...] | list[str] = ()

    def code_fingerprint(self) -> dict[str, str]:
        """sha256 of the source modules this model loads by name, outside the train
        stage's code deps (an ensemble's members): the checkpoint records it."""
        return {}

    def stale_member_code(self, recorded: dict[str, str] | None) -> list[str]:
        """Names in :meth:`code_fingerprint` whose module changed since ``recorded``
        (the checkpoint's), so the score stage refuses a model DVC cannot see is stale."""
        now = self.code_fingerprint()
        return [name for name, digest in now.items() if (recorded or {}).get(name) != digest]

    def own_tile_score(self) -> str | None:
        """The rule of a model whose tile score is its own, not its map reduced by
        ``score.patch_reduce`` (None: it reduces its map like the others). The score
        stage records it, so ``metrics/eval.json`` says what ran instead of a
        ``patch_reduce`` that did not, and warns when ``score.patch_reduce`` was set for
        such a model. Kept here by name rather than in each model's module because the
        results pages date every results row by its model's module (a test checks this
        table against what each model's score actually does)."""
        config = self.config
        if self.name == "patchcore":
            return "reweighted_max"  # the paper's: the largest patch distance, re-weighted
        if self.name == "draem" and getattr(config, "image_score", "recon") != "recon":
            return f"segmentation_{config.image_score}"
        if getattr(config, "score", None) == "elbo":  # the variational models' option
            return "elbo"
        return None

    def prepare_scoring(self, cfg: Any, device: torch.device | None = None) -> Any:
        """State a model fits lazily per ``score.*`` setting (an ensemble's member
        standardisation); export calls it before tracing so the graph holds it."""
        return None

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for one batch of good samples; key ``loss`` is minimised."""
        raise NotImplementedError

    @torch.no_grad()
    def calibrate(self, batches: Any) -> None:
        """Fit score normalisation on held-out good data after training (optional)."""

    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample anomaly scores (B,) and per-pixel maps (B, H, W) or None."""
        raise NotImplementedError

    @torch.no_grad()
    def latent_codes(self, x: torch.Tensor) -> torch.Tensor | None:
        """Latent codes (B, D) for the latent-space plot, or None for a model without one.

        Models with an ``encode`` (autoencoders; VAEs return ``(mu, logvar)``) use its
        output, posterior mean for the variational ones, flattened.
        """
        encode = getattr(self, "encode", None)
        if encode is None:
            return None
        code = encode(x)
        code = code[0] if isinstance(code, tuple) else code
        return code.flatten(1)


class MemoryModel(AnomalyModel):
    """A model fitted without gradient steps: one pass over good tiles fills a memory of
    normal features (anomalib's memory-bank idea), which scoring compares against.

    ``training.train_model`` calls :meth:`fit_memory` instead of the epoch loop, so the
    train stage never asks which kind of model it holds. PatchCore is one; PaDiM-like
    models (a Gaussian per feature position) fit the same hook.
    """

    trainable: ClassVar[bool] = False

    def fit_memory(
        self, batches: Any, device: torch.device, n_tiles: int, seed: int, cluster: Any = None
    ) -> dict:
        """Build the memory from good tiles; returns at least ``{"memory_bank": size}``.

        Distributed, ``batches`` are this rank's contiguous block of the tiles and
        ``cluster`` (``distributed.Cluster``) combines the ranks' statistics; every rank
        must end with the same memory."""
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise TypeError(f"{self.name} is fitted by fit_memory, not by gradient steps")


class ReconstructionModel(AnomalyModel):
    """A model that scores by how badly it reconstructs its input.

    ``error_scale`` holds the mean squared error and mean SSIM error of good
    validation pixels, so ``score.map: mse_ssim`` can add the two on a common
    scale; it is a buffer, so checkpoints carry it.
    """

    loss_kind: Literal["mse", "ssim", "mse_ssim"] = "mse"

    def __init__(
        self,
        config: Any,
        in_channels: int,
        image_size: int,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(config, in_channels, image_size, input_shape)
        self.register_buffer("error_scale", torch.ones(2))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reconstruction_loss(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        kind = getattr(self.config, "loss", "mse")
        mse, ssim_err = error_components(x, recon, window=7, need_ssim=kind != "mse")
        if kind == "mse":
            return mse.mean()
        if kind == "ssim":
            return ssim_err.mean()
        return mse.mean() + ssim_err.mean()

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct ``x``; with ``denoise`` > 0, from a corrupted copy (training only)."""
        p = getattr(self.config, "denoise", 0.0) if self.training else 0.0
        recon = self.reconstruct(corrupt(x, p))
        loss = self.reconstruction_loss(x, recon)
        return {"loss": loss}

    @torch.no_grad()
    def calibrate(self, batches: Any) -> None:
        totals = torch.zeros(2, dtype=torch.float64)
        count = 0
        for x in batches:
            x = x.to(self.error_scale.device)
            mse, ssim_err = error_components(x, self.reconstruct(x), window=7, need_ssim=True)
            totals += torch.stack([mse.double().sum(), ssim_err.double().sum()]).cpu()
            count += mse.numel()
        if count:
            self.error_scale.copy_((totals / count).clamp_min(1e-8).to(self.error_scale))

    @torch.no_grad()
    def score(self, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.reconstruct(x)
        maps = pixel_maps(x, recon, cfg, self.error_scale)
        return reduce_maps(maps, cfg.patch_reduce, cfg.patch_top_fraction), maps
