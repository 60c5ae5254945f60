"""``anomaly serve``: the API through FastAPI's test client and a real uvicorn server.

The contract: a served score is ``anomaly predict``'s for the same file; bad uploads
are a 4xx with one line of JSON; the service counts what it did at /metrics.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from anomaly.cli import main  # noqa: E402
from anomaly.inference.detector import load_detector  # noqa: E402
from anomaly.inference.serve import ServeSettings, create_app, wait_healthy  # noqa: E402
from conftest import TO_BUNDLE, run_tiny_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return run_tiny_pipeline(tmp_path_factory.mktemp("project"), TO_BUNDLE)


@pytest.fixture(scope="module")
def detector(project):
    return load_detector(project / "models/cae.bundle", "cpu")


@pytest.fixture(scope="module")
def client(detector):
    with TestClient(create_app(detector)) as test_client:
        yield test_client


def _files(project, label: int, count: int) -> list:
    raw = project / "data/raw/synthetic_fabric"
    manifest = pd.read_csv(raw / "manifest.csv")
    return [raw / p for p in manifest.loc[manifest["label"] == label, "image_path"][:count]]


def _upload(paths) -> list:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def test_health_and_model_describe_the_bundle(client, detector):
    assert client.get("/health").json() == {"status": "ok", "model": "cae"}
    info = client.get("/model").json()
    assert info["model"] == "cae" and info["dataset"] == "synthetic_fabric"
    assert info["groups"] == detector.groups and len(info["groups"]) > 1
    assert info["image_threshold"] == detector.image_threshold
    assert info["preprocessing"]["tile_size"] == detector.tile_size
    assert info["limits"]["max_bytes"] == ServeSettings().max_bytes


def test_served_scores_equal_predict_in_upload_order(client, project, tmp_path, monkeypatch):
    """Several files in one request, groups from the file names: each answer is what
    ``anomaly predict`` writes for that file (same float, same call, same mask)."""
    paths = _files(project, 1, 3) + _files(project, 0, 2)
    answers = client.post("/predict", files=_upload(paths)).json()
    assert [a["image"] for a in answers] == [p.name for p in paths]
    monkeypatch.chdir(project)
    out = tmp_path / "predicted"
    assert main(["predict", *map(str, paths), "--out", str(out), "--no-overlays"]) == 0
    expected = pd.read_csv(out / "predictions.csv", dtype={"group": str}).set_index("image")
    for item in answers:
        row = expected.loc[item["image"]]
        assert item["score"] == row["score"]
        assert item["defect"] == bool(row["defect"]) and item["group"] == row["group"]
        assert item["mask_pixels"] == row["mask_pixels"] and item["blank"] is False
    assert {a["defect"] for a in answers} == {True, False}  # both verdicts exercised


def test_a_16_bit_upload_scores_like_its_8_bit_original(client, project):
    original = _files(project, 1, 1)[0]
    gray = np.asarray(Image.open(original))
    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16) * 257).save(buffer, format="PNG")
    eight = client.post("/predict", files=_upload([original])).json()[0]
    deep = client.post(
        "/predict", files=[("files", (original.name, buffer.getvalue(), "image/png"))]
    ).json()[0]
    assert deep["score"] == pytest.approx(eight["score"], rel=1e-3)
    assert deep["defect"] == eight["defect"]


def test_overlay_and_mask_come_back_as_png(client, project):
    path = _files(project, 1, 1)[0]
    item = client.post("/predict?overlay=true", files=_upload([path])).json()[0]
    overlay = Image.open(io.BytesIO(base64.b64decode(item["overlay_png"])))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["mask_png"]))))
    assert overlay.format == "PNG" and overlay.width > 100
    assert mask.shape == np.asarray(Image.open(path)).shape
    assert int((mask > 0).sum()) == item["mask_pixels"] > 0


def test_group_form_field_overrides_the_file_name(client, project, detector):
    path = _files(project, 0, 1)[0]
    other = next(g for g in detector.groups if g != detector.group_for(path))
    upload = [("files", ("frame.png", path.read_bytes(), "image/png"))]
    item = client.post("/predict", files=upload, data={"group": other}).json()[0]
    assert item["group"] == other
    assert item["score"] == detector.predict_one(path, other).score


@pytest.mark.parametrize(
    ("files", "data", "status", "says"),
    [
        (
            [("files", ("notes.png", b"plain text, not pixels", "image/png"))],
            {},
            415,
            "notes.png: corrupt or unreadable image (not a format Pillow can read)",
        ),
        ([("files", ("empty.png", b"", "image/png"))], {}, 415, "empty.png: empty file"),
        ("roll", {"group": "99"}, 400, "group 99 is not one"),
        ("frame", {}, 400, "does not say which"),
        ([], {"group": "01"}, 400, "no image"),
    ],
)
def test_bad_uploads_are_4xx_with_one_json_line(client, project, files, data, status, says):
    if files == "roll":
        files = _upload(_files(project, 0, 1))
    elif files == "frame":
        files = [("files", ("frame.png", _files(project, 0, 1)[0].read_bytes(), "image/png"))]
    response = client.post("/predict", files=files or None, data=data)
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["error"] and says in body["error"] and "\n" not in body["error"]


def test_limits_answer_413_504_and_internal_errors_stay_one_line(detector, project):
    path = _files(project, 0, 1)[0]
    small = ServeSettings(max_bytes=1000, max_files=2)
    with TestClient(create_app(detector, small)) as limited:
        too_big = limited.post("/predict", files=_upload([path]))
        assert too_big.status_code == 413 and "1000 bytes" in too_big.json()["error"]
    with TestClient(create_app(detector, ServeSettings(max_files=2))) as limited:
        many = limited.post("/predict", files=_upload([path] * 3))
        assert many.status_code == 413 and "more than 2 files" in many.json()["error"]
    with TestClient(create_app(detector, ServeSettings(timeout_s=1e-6))) as hurried:
        late = hurried.post("/predict", files=_upload([path]))
        assert late.status_code == 504 and "longer than" in late.json()["error"]

    class Broken:  # a bug inside the model: the client gets one line, not a traceback
        def __getattr__(self, name):
            return getattr(detector, name)

        def predict_one(self, *args, **kwargs):
            raise RuntimeError("boom\nTraceback (most recent call last): ...")

    with TestClient(create_app(Broken()), raise_server_exceptions=False) as broken:
        failed = broken.post("/predict", files=_upload([path]))
        assert failed.status_code == 500
        assert failed.json() == {"error": "internal error; see the service log"}


def test_metrics_count_requests_images_and_verdicts(detector, project):
    with TestClient(create_app(detector)) as fresh:
        fresh.post("/predict", files=_upload(_files(project, 1, 2) + _files(project, 0, 1)))
        fresh.post("/predict", files=[("files", ("x.png", b"nope", "image/png"))])
        text = fresh.get("/metrics").text
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["anomaly_images_total"] == 3
    assert (
        values['anomaly_verdicts_total{verdict="defect"}']
        + values['anomaly_verdicts_total{verdict="good"}']
        == 3
    )
    assert values['anomaly_requests_total{endpoint="/predict",status="200"}'] == 1
    assert values['anomaly_requests_total{endpoint="/predict",status="415"}'] == 1
    assert values['anomaly_request_seconds_count{endpoint="/predict"}'] == 2
    assert values["anomaly_requests_in_flight"] == 0


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and "predict?overlay=" in page.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_real_server_admits_max_pending_and_answers_503_beyond(detector, project):
    """uvicorn, real sockets: while one request holds the model, a second over
    ``max_pending`` is refused at once with 503; the first still completes."""
    import httpx
    import uvicorn

    release = threading.Event()

    class Slow:
        def __getattr__(self, name):
            return getattr(detector, name)

        def predict_one(self, *args, **kwargs):
            release.wait(30)
            return detector.predict_one(*args, **kwargs)

    port = _free_port()
    app = create_app(Slow(), ServeSettings(max_pending=1))
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        upload = _upload(_files(project, 0, 1))
        first: dict = {}
        runner = threading.Thread(
            target=lambda: first.update(r=httpx.post(f"{url}/predict", files=upload, timeout=60))
        )
        runner.start()
        for _ in range(200):  # until the first request is admitted
            gauge = httpx.get(f"{url}/metrics").text
            if "anomaly_requests_in_flight 1.0" in gauge:
                break
            time.sleep(0.02)
        busy = httpx.post(f"{url}/predict", files=upload, timeout=10)
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        release.set()
        runner.join(60)
        assert first["r"].status_code == 200
        assert (
            json.loads(first["r"].text)[0]["score"]
            == detector.predict_one(_files(project, 0, 1)[0]).score
        )
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)


def test_cli_refuses_a_busy_port_and_bad_limits_in_one_line(project, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(project / "models/cae.bundle"), "--port", str(port)])
    assert code == 2
    assert f"--port {port}: cannot listen" in capsys.readouterr().err
    assert main(["serve", "--model", "x.bundle", "--max-bytes", "0"]) == 2
    assert "--max-bytes: must be positive" in capsys.readouterr().err


def test_workers_answer_like_predict_and_metrics_sum_over_workers(project, detector):
    """`anomaly serve --workers 2`: two processes on one port, one thread each; every
    answer is still predict's score, and /metrics counts what both workers did."""
    import os
    import subprocess
    import sys

    import httpx

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anomaly",
            "serve",
            "--model",
            str(project / "models/cae.bundle"),
            "--port",
            str(port),
            "--workers",
            "2",
            "--device",
            "cpu",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        paths = _files(project, 1, 2) + _files(project, 0, 2)
        for path in paths:  # one request each, so both workers get some
            item = httpx.post(f"{url}/predict", files=_upload([path]), timeout=60).json()[0]
            assert item["score"] == detector.predict_one(path).score
        text = httpx.get(f"{url}/metrics", timeout=10).text
        images = [line for line in text.splitlines() if line.startswith("anomaly_images_total")]
        assert images and float(images[0].split()[-1]) == len(paths)
    finally:
        server.terminate()
        server.wait(30)


def test_service_and_huge_image_benchmarks_run(project, tmp_path, monkeypatch):
    """`make bench`'s service and huge-image parts, in seconds on the tiny project: every
    answer matches predict, and both write their results with machine and commit."""
    import subprocess
    import sys

    from conftest import REPO

    monkeypatch.chdir(project)
    serve_out, huge_out = tmp_path / "serve.json", tmp_path / "huge.json"
    for command in (
        [
            str(REPO / "benchmarks/bench_serve.py"),
            "--seconds",
            "3",
            "--clients",
            "2",
            "--images",
            "4",
            "--workers",
            "1",
            "--out",
            str(serve_out),
        ],
        [
            str(REPO / "benchmarks/bench_huge.py"),
            "--megapixels",
            "0.02",
            "0.08",
            "--no-overlays",
            "--out",
            str(huge_out),
        ],
    ):
        proc = subprocess.run([sys.executable, *command], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-1500:]
    served = json.loads(serve_out.read_text())
    assert served["answers"]["ok"] > 0 and served["answers"]["mismatch"] == 0
    assert served["machine"]["cores"] >= 1 and served["in_process_images_per_s"] > 0
    huge = json.loads(huge_out.read_text())
    assert [row["megapixels"] for row in huge["rows"]] == [0.02, 0.08]
    assert all(row["peak_rss_mib"] > 0 for row in huge["rows"])
