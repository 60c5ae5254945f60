"""Stage train: good training tiles + ``models.<model>`` -> ``models/<model>/model.pt``."""

from __future__ import annotations

import logging

import numpy as np

from .. import distributed, paths
from ..config_schema import to_dict
from ..data.store import open_store
from ..errors import DataError
from ..io import atomic_dir, write_json
from ..logging_utils import make_logger
from ..models.registry import (
    build_model,
    check_model_params,
    model_block,
    resolve_auto,
    save_checkpoint,
)
from ..models.training import effective_train_config, resolve_device, seed_everything, train_model
from ..params import Params, TrainConfig
from .common import split_tiles

log = logging.getLogger(__name__)

# Wall-clock values: never inside the model folder, whose hash must be reproducible.
TIMING_KEYS = ("seconds", "seconds_per_epoch")


def run(params: Params) -> None:
    """Train (or fit the memory bank of) the active model on good tiles only.

    With ``train.distributed: true`` the stage re-launches itself as
    ``train.processes`` DistributedDataParallel workers (torchrun's launcher); started
    by ``torchrun`` it joins that group. Rank 0 writes every output.
    """
    check_model_params(params, "active")
    config = model_block(params)
    train_cfg = effective_train_config(params.train, config)
    if train_cfg.distributed and not distributed.under_torchrun():
        processes = distributed.resolve_processes(train_cfg.processes, train_cfg.device)
        if processes > 1:
            distributed.launch(processes, ["--params", params.source_path])
            return
    if distributed.under_torchrun():
        cluster, device = distributed.join(train_cfg.device)
    else:
        cluster, device = distributed.SINGLE, resolve_device(train_cfg.device)
    try:
        _train(params, config, train_cfg, cluster, device)
    finally:
        distributed.leave(cluster)


def _train(
    params: Params,
    config: object,
    train_cfg: TrainConfig,
    cluster: distributed.Cluster,
    device: object,
) -> None:
    import torch

    seed_everything(params.seed)
    store = open_store(paths.PATCHES, paths.SPLITS)
    train_ids = split_tiles("train", good_only=True)["patch_id"].to_numpy()
    if train_cfg.max_train_patches and len(train_ids) > train_cfg.max_train_patches:
        rng = np.random.default_rng([params.seed, 5])
        train_ids = np.sort(rng.choice(train_ids, train_cfg.max_train_patches, replace=False))
    val_ids = split_tiles("val", good_only=True)["patch_id"].to_numpy()
    if len(train_ids) == 0:
        raise DataError(f"{paths.SPLITS / 'train.csv'}: the good-only training set is empty")
    kind = store.meta.get("anomaly_kind", "local")
    model = build_model(
        params.model, config, store.channels, store.tile_size, store.tile_shape, kind
    )
    _, resolved = resolve_auto(type(model), config, kind)
    if resolved:
        log.info("train %s: auto for %s data: %s", params.model, kind, resolved)
    if kind in model.weak_on:
        log.warning("%s on %s data: %s", params.model, kind, model.weak_on[kind])
    if not cluster.is_main:  # the other ranks train and check, rank 0 writes
        train_model(model, store, train_ids, val_ids, train_cfg, None, device, params.seed, cluster)
        return
    # The epoch logs go to a temp folder that replaces metrics/train only when training
    # succeeds: a crash keeps the previous run's logs (not an empty `{}`).
    with atomic_dir(paths.TRAIN_LOG) as log_dir:
        logger = make_logger(log_dir)
        try:
            result = train_model(
                model, store, train_ids, val_ids, train_cfg, logger, device, params.seed, cluster
            )
        finally:
            logger.close()
    out = paths.model_dir(params.model)
    out.mkdir(parents=True, exist_ok=True)
    model.cpu()
    save_checkpoint(
        model,
        out / "model.pt",
        {
            "train": to_dict(train_cfg),
            "seed": params.seed,
            # an ensemble's members are loaded by name, outside DVC's code deps: the
            # score stage compares this with the source (models/ensemble.py)
            **({"member_code": model.code_fingerprint()} if model.member_names else {}),
            "preprocessing": {
                "channels": store.channels,
                "tile_size": store.tile_size,
                "patch": store.meta["patch"],
                "scale": "uint8 / 255",
            },
        },
    )
    # Run time as a metric of its own (dvc.yaml's top-level `metrics:`, not a stage
    # output), so that neither eval.json nor dvc.lock change between identical runs.
    write_json(
        paths.TRAIN_TIME,
        {
            "seconds": round(float(result.get("seconds", 0.0)), 2),
            "seconds_per_epoch": round(float(result.get("seconds_per_epoch", 0.0)), 3),
            "epochs_run": int(result.get("epochs_run", 0)),
        },
    )
    write_json(
        out / "train_summary.json",
        {
            "model": params.model,
            "device": str(device),
            "train_patches": int(len(train_ids)),
            "val_patches": int(len(val_ids)),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            **({"auto": resolved} if resolved else {}),
            **{k: v for k, v in to_dict(result).items() if k not in TIMING_KEYS},
        },
    )
    torch.set_grad_enabled(True)


if __name__ == "__main__":  # the workers torchrun starts: python -m anomaly.stages.train
    import sys

    from .common import entry

    sys.exit(entry("train", run, sys.argv[1:]))
