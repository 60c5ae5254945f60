"""Training and scoring throughput and peak memory per model.

Usage (from the project root; DVC is not needed):

    PYTHONPATH=src python benchmarks/bench_models.py [--device auto|cpu|cuda] [--models cae,vae]
        [--tile 64] [--batch 64] [--steps 20] [--amp] [--channels-last] [--out bench.json]

Random tiles stand in for data (throughput does not depend on content). Prints
one JSON line per model: training tiles/s, scoring tiles/s, seconds per epoch
for the default synthetic training set (1408 tiles), and peak memory (CUDA
allocator peak on GPU, process max RSS on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

from anomaly.models.registry import available_models, build_model, model_config
from anomaly.params import ScoreConfig
from anomaly.scoring import resolve_score
from anomaly.training import resolve_device

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
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad] or [torch.zeros(1, requires_grad=True)],
        lr=1e-3,
    )
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            loss = model.training_loss(x)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if model.trainable:
        model.train()
        for _ in range(3):
            train_step()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            train_step()
        sync()
    else:  # memory models: "training" is one feature pass plus coreset selection
        start = time.perf_counter()
        model.fit_memory([x] * steps, device, steps * batch, 0)
        sync()
    train_rate = steps * batch / (time.perf_counter() - start)

    model.eval()
    cfg, _ = resolve_score(ScoreConfig(), None)  # the fabric setting (auto's fallback)
    with (
        torch.no_grad(),
        torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp),
    ):
        model.score(x, cfg)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model.score(x, cfg)
        sync()
    score_rate = steps * batch / (time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": name,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "tile": tile,
        "batch": batch,
        "amp": use_amp,
        "channels_last": channels_last,
        "train_tiles_per_s": round(train_rate, 1),
        "score_tiles_per_s": round(score_rate, 1),
        "epoch_seconds_default_set": round(DEFAULT_TRAIN_TILES / train_rate, 2),
        "peak_memory_mib": round(peak, 1),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default=",".join(available_models()))
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = [
        bench(m, device, args.tile, args.batch, args.steps, args.amp, args.channels_last)
        for m in args.models.split(",")
    ]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        with open(args.out, "a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
