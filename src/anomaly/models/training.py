"""One training loop for every gradient-trained model.

Adam, early stopping on the good-validation loss with the best weights kept,
AMP on CUDA, a NaN guard that stops with the epoch and batch that diverged,
and per-epoch logs for ``dvc plots``.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..distributed import SINGLE, Cluster
from ..errors import ParamsError, TrainingError
from ..logging_utils import EpochLogger
from ..params import TrainConfig

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch; deterministic kernels on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"params.yaml: train.device is {name!r} but CUDA is not available here")
    return torch.device(name)


def effective_train_config(train: TrainConfig, overrides: Any) -> TrainConfig:
    """``train.*`` with the model block's non-null epochs / lr / batch_size / weight_decay."""
    changes = {
        key: getattr(overrides, key)
        for key in ("epochs", "lr", "batch_size", "weight_decay")
        if getattr(overrides, key, None) is not None
    }
    return replace(train, **changes)


@dataclass
class FitResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    seconds_per_epoch: float


def amp_dtype(device: torch.device, wanted: bool) -> torch.dtype | None:
    """Mixed precision on CUDA: bfloat16 where the GPU has it (no loss scaling needed),
    else float16 with a GradScaler; None (full fp32) on CPU or when ``train.amp`` is off."""
    if not wanted or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class LossStep(torch.nn.Module):
    """``model.training_loss`` as a module's forward, so DistributedDataParallel (which
    syncs gradients of what its forward computed) and ``torch.compile`` can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.training_loss(x)


def _uses_conv(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _mean_val_loss(
    model: Any,
    batches: Any,
    device: torch.device,
    dtype: torch.dtype | None,
    cluster: Cluster = SINGLE,
) -> float:
    """Mean validation loss over every rank's share (the same value on every rank)."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for x in batches:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                loss = model.training_loss(x)["loss"]
            totals[0] += loss.detach().double() * len(x)
            totals[1] += len(x)
    cluster.sum_(totals)
    total, count = totals.tolist()
    return total / max(count, 1)


def _length(batches: Any) -> int:
    try:
        return len(batches)
    except TypeError:
        return 0


def relative_losses(
    train_loss: float, val_loss: float, first: tuple[float, float]
) -> dict[str, float]:
    """Each loss divided by its first-epoch value, where that is positive.

    Why: models minimise losses on different scales (an MSE near 0.001, an ELBO near
    0.3), so `dvc plots diff` across experiments with different models drew one flat
    line and one curve; relative to epoch 1 they share an axis that starts at 1.
    """
    out = {}
    for name, value, start in (("train", train_loss, first[0]), ("val", val_loss, first[1])):
        if start > 0:
            out[f"{name}/loss_relative"] = value / start
    return out


def fit(
    model: Any,
    train_batches: Any,
    val_batches: Any,
    cfg: TrainConfig,
    logger: EpochLogger | None,
    device: torch.device,
    cluster: Cluster = SINGLE,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best-validation weights.

    Distributed, every rank runs this loop on its share of each batch under
    DistributedDataParallel; losses are summed over ranks, so every rank takes the same
    early-stopping decision. The hot loop never waits for the device: losses stay on
    it and are checked (NaN guard) and summed once per epoch.
    """
    model.to(device)
    conv_last = device.type == "cuda" and _uses_conv(model)
    if conv_last:  # tensor cores want NHWC activations
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, cfg.amp)
    step_fn: torch.nn.Module = LossStep(model)
    if cluster.active:
        from torch.nn.parallel import DistributedDataParallel

        step_fn = DistributedDataParallel(
            step_fn, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        step_fn = torch.compile(step_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    best_loss, best_epoch, best_state = math.inf, -1, None
    start = time.perf_counter()
    epochs_run = 0
    # On a terminal: a bar that moves per batch. Elsewhere (`dvc queue`, CI, a log file):
    # one plain line per epoch with the losses, elapsed time and ETA.
    per_epoch = _length(train_batches)
    bar = tqdm(
        total=cfg.epochs * per_epoch if per_epoch else None,
        desc=f"train {model.name}",
        unit="batch",
        disable=None if cluster.is_main else True,
    )
    quiet = bar.disable and cluster.is_main
    for epoch in range(cfg.epochs):
        model.train()
        step_losses: list[torch.Tensor] = []
        sizes: list[int] = []
        term_sums: dict[str, torch.Tensor] = {}
        bar.set_description(f"train {model.name} epoch {epoch + 1}/{cfg.epochs}")
        for x in train_batches:
            bar.update(1)
            if conv_last and x.dim() == 4:
                x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
            else:
                x = x.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                terms = step_fn(x)
            loss = terms["loss"]
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step_losses.append(loss.detach().float())
            sizes.append(len(x))
            for key, value in terms.items():
                if key != "loss":
                    term = value.detach().double() * len(x)
                    term_sums[key] = term_sums[key] + term if key in term_sums else term
        cluster.share_buffers(model)
        train_loss, term_means = _epoch_losses(
            step_losses, sizes, term_sums, device, cluster, epoch, model.name, cfg.lr
        )
        val_loss = _mean_val_loss(model, val_batches, device, dtype, cluster)
        if not math.isfinite(val_loss):
            raise TrainingError(
                f"train: validation loss became {val_loss} at epoch {epoch + 1} "
                f"(model {model.name}); lower the learning rate"
            )
        epochs_run = epoch + 1
        if epoch == 0:
            first = (train_loss, val_loss)
        if logger is not None:
            logger.log(
                {
                    "train/loss": train_loss,
                    "val/loss": val_loss,
                    **relative_losses(train_loss, val_loss, first),
                    **{f"train/{k}": v for k, v in term_means.items()},
                }
            )
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        if quiet:
            elapsed = time.perf_counter() - start
            log.info(
                "train %s: epoch %d/%d, train loss %.5g, val loss %.5g, %.1f s elapsed, "
                "at most %.0f s left",
                model.name,
                epoch + 1,
                cfg.epochs,
                train_loss,
                val_loss,
                elapsed,
                elapsed / (epoch + 1) * (cfg.epochs - epoch - 1),
            )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        elif epoch + 1 - best_epoch >= cfg.patience:
            break
    bar.close()
    if best_state is None:
        raise TrainingError(f"train: no epoch finished for model {model.name}")
    log.info(
        "train %s: best val loss %.5g at epoch %d of %d run",
        model.name,
        best_loss,
        best_epoch,
        epochs_run,
    )
    if conv_last:
        model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    return FitResult(best_epoch, best_loss, epochs_run, seconds, seconds / max(epochs_run, 1))


def _epoch_losses(
    step_losses: list[torch.Tensor],
    sizes: list[int],
    term_sums: dict[str, torch.Tensor],
    device: torch.device,
    cluster: Cluster,
    epoch: int,
    name: str,
    lr: float,
) -> tuple[float, dict[str, float]]:
    """The epoch's mean training loss and loss terms over all ranks, after the NaN
    guard: the first non-finite step (on any rank) stops training with its batch."""
    if not step_losses:
        raise TrainingError(f"train: no training batch in epoch {epoch + 1} (model {name})")
    losses = torch.stack(step_losses)
    bad = (~torch.isfinite(losses)).nonzero()
    flags = torch.zeros(cluster.world_size, dtype=torch.float64, device=device)
    if len(bad):  # 1 + the first bad step of this rank
        flags[cluster.rank] = int(bad[0, 0]) + 1
    cluster.sum_(flags)
    if flags.any():
        rank = int(flags.nonzero()[0, 0])
        step = int(flags[rank]) - 1
        value = float(losses[step]) if rank == cluster.rank else float("nan")
        where = f" on rank {rank}" if cluster.active else ""
        raise TrainingError(
            f"train: loss became {value} at epoch {epoch + 1}, batch {step + 1}{where} "
            f"(model {name}, lr {lr}); lower the learning rate or check the data"
        )
    weights = torch.tensor(sizes, dtype=torch.float64, device=device)
    keys = sorted(term_sums)
    totals = torch.stack(
        [(losses.double() * weights).sum(), weights.sum(), *(term_sums[k] for k in keys)]
    )
    cluster.sum_(totals)
    values = totals.tolist()
    seen = max(values[1], 1.0)
    return values[0] / seen, {k: v / seen for k, v in zip(keys, values[2:], strict=True)}


def _place_tiles(sources: list[Any], device: torch.device, setting: bool | str) -> str:
    """On CUDA, keep the tiles on the GPU when they fit (``train.resident_store``), else
    pin host batches for asynchronous copies. Returns what was done, for the summary."""
    if device.type != "cuda":
        if setting is True:
            log.info("train.resident_store applies to CUDA devices; reading from the store")
        return "host"
    need = sum(len(src.ids) * src.store.tiles[0].nbytes for src in sources)
    free, _ = torch.cuda.mem_get_info(device)
    if setting is True or (setting == "auto" and need <= free / 4):
        for src in sources:
            src.to_device(device)
        return "gpu"
    for src in sources:
        src.pin = True
    return "pinned"


def train_model(
    model: Any,
    store: Any,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    cfg: TrainConfig,
    logger: EpochLogger | None,
    device: torch.device,
    seed: int,
    cluster: Cluster = SINGLE,
) -> dict:
    """Fit any registered model: gradient training for trainable ones (then calibration on
    good validation tiles), one pass building the memory bank for memory models
    (``MemoryModel``: PatchCore, PaDiM), each rank on its share of the tiles. Both log
    through ``logger`` (None on ranks other than 0), so the files are the same."""
    from dataclasses import asdict

    from ..data.store import BatchSource
    from .base import MemoryModel

    if len(train_ids) < cluster.world_size:
        raise TrainingError(
            f"train: {len(train_ids)} training tiles cannot be shared by "
            f"{cluster.world_size} processes; lower train.processes"
        )
    if model.member_names:  # an ensemble: each member as if trained alone
        return _train_members(model, store, train_ids, val_ids, cfg, logger, device, seed, cluster)
    rank, world = cluster.rank, cluster.world_size
    memory = isinstance(model, MemoryModel)
    train_src = BatchSource(  # a memory is built from one pass over the tiles: no repeats
        store,
        train_ids,
        cfg.batch_size,
        True,
        seed,
        rank,
        world,
        "block" if memory else "batch",
        min_batches=0 if memory else cfg.min_steps_per_epoch,
        max_batches=0 if memory else (cfg.max_steps_per_epoch or 0),
    )
    val_src = BatchSource(store, val_ids, cfg.batch_size, False, seed, rank, world, "block")
    placement = _place_tiles([train_src, val_src], device, cfg.resident_store)
    if cluster.active:  # the same weights everywhere, but each rank its own noise
        torch.manual_seed(seed * 7919 + rank)
    if not memory:
        result = asdict(fit(model, train_src, val_src, cfg, logger, device, cluster))
        full_val = BatchSource(store, val_ids, cfg.batch_size, False, seed)
        model.calibrate(x.to(device) for x in full_val)
    else:
        start = time.perf_counter()
        result = model.fit_memory(train_src, device, len(train_ids), seed, cluster)
        result["seconds"] = time.perf_counter() - start
        if logger is not None:
            logger.log({"memory_bank": float(result["memory_bank"])})  # one step
    if cluster.active:
        result["distributed"] = _in_sync(model, cluster)
    if device.type == "cuda":
        result["tiles_on"] = placement
    return result


def _train_members(
    model: Any,
    store: Any,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    cfg: TrainConfig,
    logger: EpochLogger | None,
    device: torch.device,
    seed: int,
    cluster: Cluster,
) -> dict:
    """Train an ensemble's members one by one, each with ``train.*`` plus its own epochs /
    lr / batch_size / weight_decay, then keep its reference tiles (``calibrate``). The
    epoch logs carry every member's keys (``loss`` of a trained member, ``memory_bank``
    of a fitted one) in turn."""
    from ..data.store import BatchSource

    results, seconds = {}, 0.0
    for name, member in zip(model.member_names, model.members, strict=True):
        member_cfg = effective_train_config(cfg, member.config)
        log.info("ensemble: training member %s", name)
        member.to(device)
        result = train_model(
            member, store, train_ids, val_ids, member_cfg, logger, device, seed, cluster
        )
        seconds += float(result.pop("seconds", 0.0))
        result.pop("seconds_per_epoch", None)
        results[name] = result
    model.to(device)
    full_val = BatchSource(store, val_ids, cfg.batch_size, False, seed)
    model.calibrate(x.to(device) for x in full_val)
    out: dict = {"members": results, "seconds": seconds, "reference_tiles": len(model.reference)}
    if cluster.active:
        out["distributed"] = _in_sync(model, cluster)
    return out


def _in_sync(model: Any, cluster: Cluster) -> dict:
    """What the train summary records of a distributed run, after checking that every
    rank ends with the same weights (``distributed.check_in_sync`` raises otherwise)."""
    from ..distributed import check_in_sync

    return {
        "processes": cluster.world_size,
        "backend": cluster.backend,
        "weights_sha256": check_in_sync(model, cluster),
    }
