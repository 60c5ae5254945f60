"""Wall time and peak memory of every pipeline stage, and how memory grows with the data.

Runs each stage as its own process (``python stages/<name>.py``, what DVC runs) in a
temporary project and reads the child's peak resident set size from ``wait4`` (each
stage's own peak, not the benchmark's). The memory-scaling check runs the data and
model stages twice, on the default synthetic fabric and on the same with 4x the rolls,
and reports each stage's peak RSS growth (issue 12's target: at most +30%).

    PYTHONPATH=src python benchmarks/bench_stages.py [--scale 4] [--out bench_stages.json]
    PYTHONPATH=src python benchmarks/bench_stages.py -S model=ae   # another model
    PYTHONPATH=src python benchmarks/bench_stages.py --tiny     # seconds: the smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
from anomaly.stages import NAMES as STAGES  # noqa: E402  (light: no torch)

SCALED = ("download", "patchify", "split", "train", "score", "threshold", "evaluate")
TINY = {
    "dataset": {"synthetic": {"n_good": 8, "n_defect": 6, "width": 256, "height": 64}},
    "patch": {"side": 32, "stride": 32},
    "split": {"val_fraction": 0.25, "test_good_fraction": 0.25},
    "models": {"cae": {"base_channels": 8, "depth": 2, "latent_channels": 4}},
    "train": {"epochs": 1, "batch_size": 32},
    "plot": {"dpi": 40, "latent": "none"},
}


def machine() -> dict:
    """CPU, cores, Python, torch and GPU. torch is asked in a child process: importing it
    here would make every stage's measured peak RSS start at this process's size (a
    child's ru_maxrss includes the memory it was forked with)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    probe = (
        "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': "
        "torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **json.loads(found.strip().splitlines()[-1]),
    }


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def run_stage(root: Path, stage: str) -> dict:
    """One stage as a child process: wall seconds and the child's own peak RSS (MiB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed:\n{err[-2000:]}")
    return {"stage": stage, "seconds": round(seconds, 2), "peak_rss_mib": usage.ru_maxrss // 1024}


def project(params: dict) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_pipeline(params: dict, stages: tuple[str, ...]) -> list[dict]:
    root = project(params)
    try:
        return [run_stage(root, stage) for stage in stages]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4, help="data growth for the memory check")
    parser.add_argument("--tiny", action="store_true", help="tiny data (the smoke test)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the memory check")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    parser.add_argument(
        "-S", "--set", action="append", default=[], help="param override, e.g. -S model=ae"
    )
    args = parser.parse_args(argv)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.tiny:
        deep_update(base, TINY)
    for item in args.set:
        key, _, value = item.partition("=")
        node = base
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    result_params = list(args.set)
    result: dict = {"machine": machine(), "tiny": args.tiny, "set": result_params, "stages": []}
    result["stages"] = run_pipeline(base, STAGES)
    for row in result["stages"]:
        print(json.dumps(row), flush=True)
    if not args.no_scaling:
        synthetic = base["dataset"]["synthetic"]
        bigger = deep_update(
            yaml.safe_load(yaml.safe_dump(base)),
            {
                "dataset": {
                    "synthetic": {
                        "n_good": synthetic["n_good"] * args.scale,
                        "n_defect": synthetic["n_defect"] * args.scale,
                    }
                }
            },
        )
        small = {r["stage"]: r for r in result["stages"] if r["stage"] in SCALED}
        large = {r["stage"]: r for r in run_pipeline(bigger, SCALED)}
        result["memory_scaling"] = {
            "data_growth": args.scale,
            "target_max_growth": 0.30,
            "stages": [
                {
                    "stage": stage,
                    "peak_rss_mib": small[stage]["peak_rss_mib"],
                    f"peak_rss_mib_x{args.scale}": large[stage]["peak_rss_mib"],
                    "growth": round(
                        large[stage]["peak_rss_mib"] / max(small[stage]["peak_rss_mib"], 1) - 1, 3
                    ),
                    "seconds": small[stage]["seconds"],
                    f"seconds_x{args.scale}": large[stage]["seconds"],
                }
                for stage in SCALED
            ],
        }
        for row in result["memory_scaling"]["stages"]:
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
