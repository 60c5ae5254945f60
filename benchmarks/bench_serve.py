"""``anomaly serve`` under load, against ``Detector.predict`` in process.

1. In process: ``load_detector(bundle).predict_one(path)`` over the images, after a
   warm-up pass; images/s, and every image's score (the reference answers).
2. Service: ``anomaly serve`` in its own process (same bundle, same machine), then
   ``--clients`` threads post one image per request, round robin over the images, for
   ``--seconds``. Every answer is checked against the in-process score of that file
   (equal floats: same code path), and 5xx, other errors and mismatches are counted.
   The service's RSS (all its processes) is sampled every second; "flat" means the
   last sample is within 5% of the sample at the end of warm-up (the first 10 s).

    PYTHONPATH=src python benchmarks/bench_serve.py                  # the active bundle
    PYTHONPATH=src python benchmarks/bench_serve.py --seconds 5 --clients 4   # smoke

Writes ``benchmarks/results/bench_serve.json`` (``--out``) with machine and commit.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_stages import machine  # noqa: E402  (one description of the machine)


def commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    )
    return proc.stdout.strip() or "unknown"


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it (``--workers`` > 1: the
    supervisor and each worker), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def test_images(limit: int) -> list[Path]:
    """The pipeline's test images (defective and good), as predict would get them."""
    import pandas as pd

    from anomaly.params import load_params
    from anomaly.paths import manifest, score_dir

    params = load_params("params.yaml")
    raw = manifest(params.dataset.name).parent
    table = score_dir(params.model) / "test_images.csv"
    if not table.is_file():
        sys.exit(f"error: {table}: not found; run the pipeline first (make repro)")
    return [raw / p for p in pd.read_csv(table)["image_path"][:limit]]


def in_process(bundle: str, images: list[Path]) -> tuple[dict[str, float], float]:
    from anomaly.inference.detector import load_detector

    detector = load_detector(bundle, "cpu")
    for path in images[:8]:
        detector.predict_one(path)
    started = time.perf_counter()
    scores = {path.name: detector.predict_one(path).score for path in images}
    return scores, len(images) / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def multipart(name: str, data: bytes, boundary: str) -> bytes:
    """One file as a multipart/form-data body, encoded once: the load generator shares
    the service's 2 cores, so each request should cost it as little as possible."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()


def load(url: str, images: list[Path], expected: dict, clients: int, seconds: float, pid: int):
    import http.client

    boundary = "anomalybenchboundary"
    bodies = [(p.name, multipart(p.name, p.read_bytes(), boundary)) for p in images]
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    host, port = url.removeprefix("http://").split(":")
    counts = {"ok": 0, "mismatch": 0, "5xx": 0, "other_error": 0, "transport_error": 0}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        turn = index
        while time.monotonic() < stop:
            name, body = bodies[turn % len(bodies)]
            turn += clients
            began = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, headers)
                response = connection.getresponse()
                status, payload = response.status, response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=120)
                with lock:
                    counts["transport_error"] += 1
                continue
            took = time.perf_counter() - began
            with lock:
                if status >= 500:
                    counts["5xx"] += 1
                elif status != 200:
                    counts["other_error"] += 1
                else:
                    answer = json.loads(payload)
                    same = len(answer) == 1 and answer[0]["image"] == name
                    same = same and answer[0]["score"] == expected[name]
                    counts["ok" if same else "mismatch"] += 1
                    latencies.append(took)
        connection.close()

    samples: list[tuple[float, float]] = []
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        samples.append((round(time.monotonic() - started, 1), round(rss_mb(pid), 1)))
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    return counts, latencies, samples, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundle (default: the active model's)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--images", type=int, default=64, help="how many test images")
    parser.add_argument("--workers", type=int, default=2, help="anomaly serve --workers")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/bench_serve.json")
    args = parser.parse_args()
    import numpy as np

    from anomaly.inference.bundle import bundle_path
    from anomaly.params import load_params

    bundle = args.model or str(bundle_path(load_params("params.yaml").model))
    images = test_images(args.images)
    expected, direct_rate = in_process(bundle, images)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anomaly",
            "serve",
            "--model",
            bundle,
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-pending",
            str(max(64, 2 * args.clients)),
            "--workers",
            str(args.workers),
        ],
    )
    try:
        from anomaly.inference.serve import wait_healthy

        wait_healthy(url, server)
        counts, latencies, samples, elapsed = load(
            url, images, expected, args.clients, args.seconds, server.pid
        )
    finally:
        server.terminate()
        server.wait(30)
    answered = counts["ok"] + counts["mismatch"]
    served_rate = answered / elapsed
    warm = next((rss for t, rss in samples if t >= min(10.0, args.seconds / 2)), samples[0][1])
    result = {
        "benchmark": "serve",
        "commit": commit(),
        "machine": machine(),
        "bundle": bundle,
        "images": len(images),
        "clients": args.clients,
        "workers": args.workers,
        "seconds": round(elapsed, 1),
        "in_process_images_per_s": round(direct_rate, 2),
        "served_images_per_s": round(served_rate, 2),
        "throughput_ratio": round(served_rate / direct_rate, 3),
        "answers": counts,
        "latency_s": {
            "p50": round(float(np.percentile(latencies, 50)), 4) if latencies else None,
            "p95": round(float(np.percentile(latencies, 95)), 4) if latencies else None,
        },
        "rss_mb": {"after_warmup": warm, "end": samples[-1][1], "max": max(s[1] for s in samples)},
        "rss_flat": abs(samples[-1][1] - warm) <= 0.05 * warm,
        "rss_samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=2))
    bad = counts["5xx"] + counts["mismatch"] + counts["transport_error"] + counts["other_error"]
    if bad or answered == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
