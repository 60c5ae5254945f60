"""Training and scoring throughput and peak memory per model.

Usage (from the project root; DVC is not needed):

    PYTHONPATH=src python benchmarks/bench_models.py [--device auto|cpu|cuda] [--models cae,vae]
        [--tile 64] [--batch 64] [--steps 20] [--amp] [--channels-last] [--out bench.json]

Random tiles stand in for data (throughput does not depend on content). Each model runs
in a process of its own, so its peak memory is its own (CUDA allocator peak on GPU,
max RSS on CPU). One JSON line per model: training tiles/s on tensors already on the
device and fed by the pipeline's loader (``BatchSource`` over a memory-mapped uint8 tile
store, pinned host memory and asynchronous copies on CUDA) with their ratio (the
loader's cost; issue 12's target on a GPU: >= 0.9), scoring tiles/s, seconds per epoch
of a 1,408-tile training set (the default synthetic one before the 240-roll benchmark;
today's has 1,344 tiles); memory models (PatchCore, PaDiM)
report building their memory from that many tiles instead. On CUDA, ``--amp`` also
measures fp32 and reports the mixed-precision speedup (bfloat16 where supported).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly.data.store import BatchSource, PatchStore
from anomaly.io import write_json
from anomaly.models.registry import available_models, build_model, model_config
from anomaly.models.training import LossStep, amp_dtype, resolve_device
from anomaly.params import ScoreConfig
from anomaly.scoring import resolve_score
from bench_serve import commit  # noqa: E402  (the commit the rows were measured at)

DEFAULT_TRAIN_TILES = 1408


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _tile_store(root: Path, tiles: int, tile: int) -> PatchStore:
    """A tile store of random uint8 tiles, laid out like ``data/patches``."""
    rng = np.random.default_rng(0)
    np.save(root / "patches.npy", rng.integers(0, 256, (tiles, 1, tile, tile), dtype=np.uint8))
    np.save(root / "masks.npy", np.zeros((tiles, tile, tile), dtype=np.uint8))
    write_json(root / "meta.json", {"channels": 1, "tile_size": tile})
    return PatchStore(root)


def _train_rate(
    model: torch.nn.Module,
    batches: list | BatchSource,
    device: torch.device,
    dtype: torch.dtype | None,
    steps: int,
) -> float:
    """Training tiles/s over ``steps`` batches (after 3 warm-up steps)."""
    step_fn = LossStep(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    model.train()

    def run(count: int) -> int:
        seen = 0
        while seen < count:
            for x in batches:
                x = x.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                    loss = step_fn(x)["loss"]
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                seen += 1
                if seen == count:
                    break
        return seen

    run(3)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return steps * len(next(iter(batches))) / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    name: str,
    device: torch.device,
    tile: int,
    batch: int,
    steps: int,
    amp: bool,
    channels_last: bool,
) -> dict:
    torch.manual_seed(0)
    model = build_model(name, model_config(name, {}), 1, tile).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.rand(batch, 1, tile, tile, device=device).contiguous(memory_format=memory_format)
    dtype = amp_dtype(device, amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if model.trainable:
            row["train_tiles_per_s"] = _train_rate(model, [x], device, dtype, steps)
            store = _tile_store(Path(tmp), steps * batch, tile)
            source = BatchSource(store, np.arange(steps * batch), batch, True, 0)
            source.pin = device.type == "cuda"
            fed = _train_rate(model, source, device, dtype, steps)
            row["train_tiles_per_s_loader"] = fed
            row["loader_ratio"] = round(fed / row["train_tiles_per_s"], 3)
            if dtype is not None:
                fp32 = _train_rate(model, [x], device, None, steps)
                row["train_tiles_per_s_fp32"] = round(fp32, 1)
                row["amp_speedup"] = round(row["train_tiles_per_s"] / fp32, 2)
            train_rate = row["train_tiles_per_s"]
        else:  # memory models: "training" is one feature pass plus the bank build
            store = _tile_store(Path(tmp), DEFAULT_TRAIN_TILES, tile)
            source = BatchSource(store, np.arange(DEFAULT_TRAIN_TILES), batch, True, 0)
            start = time.perf_counter()
            fitted = model.fit_memory(source, device, DEFAULT_TRAIN_TILES, 0)
            _sync(device)
            seconds = time.perf_counter() - start
            row["bank_build_seconds"] = round(seconds, 2)
            row["bank"] = fitted
            train_rate = DEFAULT_TRAIN_TILES / seconds
            row["train_tiles_per_s"] = train_rate
    model.eval()
    cfg, _ = resolve_score(ScoreConfig(), None)  # the fabric setting (auto's fallback)
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)),
    ):
        model.score(x, cfg)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            model.score(x, cfg)
        _sync(device)
    score_rate = steps * batch / (time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for key in ("train_tiles_per_s", "train_tiles_per_s_loader"):
        if key in row:
            row[key] = round(row[key], 1)
    return {
        "model": name,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "tile": tile,
        "batch": batch,
        "amp": str(dtype).replace("torch.", "") if dtype else False,
        "channels_last": channels_last,
        **row,
        "score_tiles_per_s": round(score_rate, 1),
        "epoch_seconds_default_set": round(DEFAULT_TRAIN_TILES / train_rate, 2),
        "peak_memory_mib": round(peak, 1),
        "torch": torch.__version__,
    }


def _bench_in_child(args: tuple) -> dict:
    name, device, *rest = args
    return bench(name, resolve_device(device), *rest)


# Models made of other models: their cost is their members' (``ensemble``: its members
# train one after the other in the train stage), so they have no throughput of their own.
COMPOSITE = ("ensemble",)


def benchmarkable() -> list[str]:
    """Every registered model with a throughput of its own."""
    return [m for m in available_models() if m not in COMPOSITE]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default=",".join(benchmarkable()))
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    resolve_device(args.device)  # a bad --device fails here, once
    names, known = args.models.split(","), benchmarkable()
    for name in names:
        if name not in known:
            print(
                f"--models: {name!r} is not a benchmarkable model (known: "
                f"{', '.join(known)}; {', '.join(COMPOSITE)} costs what its "
                "members cost)",
                file=sys.stderr,
            )
            return 2
    context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
    for name in names:
        job = (name, args.device, args.tile, args.batch, args.steps, args.amp, args.channels_last)
        with context.Pool(1) as pool:
            row = pool.apply(_bench_in_child, (job,))
        row.update(commit=commit(), cores=multiprocessing.cpu_count())
        print(json.dumps(row), flush=True)
        if args.out:  # each row as it finishes: a long run stopped early keeps its rows
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
