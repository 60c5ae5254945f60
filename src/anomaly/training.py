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

from .errors import ParamsError, TrainingError
from .logging_utils import EpochLogger
from .params import TrainConfig

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


def _mean_val_loss(model: Any, batches: Any, device: torch.device, amp: bool) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x in batches:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                loss = model.training_loss(x)["loss"]
            total += float(loss) * len(x)
            count += len(x)
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
) -> FitResult:
    """Train ``model`` in place; on return it holds the best-validation weights."""
    model.to(device)
    amp = cfg.amp and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
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
        disable=None,
    )
    for epoch in range(cfg.epochs):
        model.train()
        running, seen = 0.0, 0
        term_sums: dict[str, float] = {}
        bar.set_description(f"train {model.name} epoch {epoch + 1}/{cfg.epochs}")
        for step, x in enumerate(train_batches):
            bar.update(1)
            x = x.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                terms = model.training_loss(x)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"train: loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1} "
                    f"(model {model.name}, lr {cfg.lr}); lower the learning rate or check the data"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += loss.item() * len(x)
            seen += len(x)
            for key, value in terms.items():
                if key != "loss":
                    term_sums[key] = term_sums.get(key, 0.0) + float(value.detach()) * len(x)
        train_loss = running / max(seen, 1)
        val_loss = _mean_val_loss(model, val_batches, device, amp)
        if not math.isfinite(val_loss):
            raise TrainingError(
                f"train: validation loss became {val_loss} at epoch {epoch + 1} "
                f"(model {model.name}); lower the learning rate"
            )
        epochs_run = epoch + 1
        if epoch == 0:
            first = (train_loss, val_loss)
        if logger is not None:
            terms_mean = {f"train/{k}": v / max(seen, 1) for k, v in term_sums.items()}
            logger.log(
                {
                    "train/loss": train_loss,
                    "val/loss": val_loss,
                    **relative_losses(train_loss, val_loss, first),
                    **terms_mean,
                }
            )
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        if bar.disable:
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
    model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    return FitResult(best_epoch, best_loss, epochs_run, seconds, seconds / max(epochs_run, 1))


def train_model(
    model: Any,
    train_batches: Any,
    val_batches: Any,
    cfg: TrainConfig,
    logger: EpochLogger,
    device: torch.device,
    n_train: int,
    seed: int,
) -> dict:
    """Fit any registered model: gradient training for trainable ones (then calibration on
    good validation tiles), one pass building the memory bank for memory models
    (``MemoryModel``: PatchCore). Both log through ``logger``, so the files are the same."""
    from dataclasses import asdict

    from .models.base import MemoryModel

    if not isinstance(model, MemoryModel):
        result = asdict(fit(model, train_batches, val_batches, cfg, logger, device))
        model.calibrate(x.to(device) for x in val_batches)
        return result
    start = time.perf_counter()
    result = model.fit_memory(train_batches, device, n_train, seed)
    result["seconds"] = time.perf_counter() - start
    logger.log({"memory_bank": float(result["memory_bank"])})  # one step
    return result
