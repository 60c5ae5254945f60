"""One training loop for every gradient-trained model.

Adam, early stopping on the good-validation loss with the best weights kept,
AMP on CUDA, a NaN guard that stops with the epoch and batch that diverged,
and per-epoch logs for ``dvc plots``.
"""

from __future__ import annotations

import copy
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
    bar = tqdm(range(cfg.epochs), desc=f"train {model.name}", unit="epoch", disable=None)
    for epoch in bar:
        model.train()
        running, seen = 0.0, 0
        term_sums: dict[str, float] = {}
        for step, x in enumerate(train_batches):
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
        if logger is not None:
            terms_mean = {f"train/{k}": v / max(seen, 1) for k, v in term_sums.items()}
            logger.log({"train/loss": train_loss, "val/loss": val_loss, **terms_mean})
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        elif epoch + 1 - best_epoch >= cfg.patience:
            break
    if best_state is None:
        raise TrainingError(f"train: no epoch finished for model {model.name}")
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
