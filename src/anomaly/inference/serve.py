"""``anomaly serve``: a bundle behind HTTP, for cameras and line controllers.

    anomaly serve --model models/cae.bundle --port 8000
    curl -F files=@roll.png http://127.0.0.1:8000/predict

Endpoints:

- ``GET /health``: ``{"status": "ok", "model": ...}``, for load balancers;
- ``GET /model``: the bundle's metadata (model, dataset family, groups, thresholds,
  preprocessing, score settings, limits of this service);
- ``POST /predict``: one or more images as multipart field ``files``; the group comes
  from each file name (as in ``anomaly predict``) or a ``group`` form field. One JSON
  object per image, in upload order: ``image``, ``score``, ``threshold``, ``defect``,
  ``group``, ``blank``, ``mask_pixels``; with ``?overlay=true`` also ``overlay_png`` and
  ``mask_png`` (base64 PNG, the overlay drawn as predict draws it);
- ``GET /metrics``: Prometheus counters and histograms (requests by endpoint and status,
  latency, images, verdicts, requests in flight);
- ``GET /``: a page to drop images on and see each verdict, its score against the
  threshold and the overlay.

Every image goes through :class:`anomaly.inference.detector.Detector`, the path ``anomaly
predict`` takes, and uploads are decoded by the one image reader, so a served score
equals predict's for the same file (tested) and a 16-bit upload scores as its 8-bit
twin. Bad requests get a 4xx with one line of JSON, ``{"error": "..."}``, naming the
file: 413 over the byte limit, 415 not a readable image, 400 an unknown group or no
file, 422 a malformed request; a full queue answers 503 and a prediction over the
request timeout 504. An unexpected failure is a 500 with one line (its traceback goes
to the service's log, never to the client).

Why one prediction at a time: PyTorch already spreads one batch over every core, so
two concurrent predictions only compete for them (and a faiss index or a matplotlib
figure is not safe to share between threads). Uploads are received and parsed by the
event loop while the model works; decoding runs under the model's lock too, because
decoders running beside PyTorch's threads slowed both (measured with
``benchmarks/bench_serve.py`` on 2 cores: 0.64-0.71 of in-process throughput with
parallel decoding, 0.71-0.72 without; a plain ASGI middleware instead of Starlette's
``BaseHTTPMiddleware`` and uvloop/httptools brought it to about 0.75).
``max_pending`` bounds the requests admitted.
"""

import asyncio
import base64
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnomalyError, DataError
from .detector import Detector, Prediction

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("serve_page.html")


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one service (``anomaly serve`` options)."""

    max_bytes: int = 64 * 2**20  # per uploaded file
    max_files: int = 64  # per request
    max_pending: int = 64  # requests admitted at once (running + queued); more get 503
    timeout_s: float = 120.0  # a request's wait plus its predictions; then 504


class RequestError(Exception):
    """A bad request: its HTTP status and the one line the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def answering(status: int) -> Iterator[None]:
    """A user error inside becomes the client's answer: ``status`` and its one line."""
    try:
        yield
    except AnomalyError as exc:
        raise RequestError(status, str(exc)) from None


def _missing_extra(exc: ImportError) -> DataError:
    return DataError(
        f"anomaly serve needs the serve extra ({exc.name} is missing): "
        "pip install -e '.[serve]' (make setup installs it)"
    )


def model_info(detector: Detector, settings: ServeSettings) -> dict[str, Any]:
    """What ``GET /model`` answers: enough to call the service right and to audit it."""
    bundle = detector.bundle
    return {
        "model": detector.name,
        "dataset": detector.dataset,
        "groups": detector.groups,
        "normalisation": detector.normalisation.get("method"),
        "image_threshold": detector.image_threshold,
        "pixel_threshold": detector.pixel_threshold,
        "threshold_method": bundle.get("threshold_method"),
        "preprocessing": bundle["preprocessing"],
        "score": bundle["score"],
        "package_version": bundle.get("package_version"),
        "seed": bundle.get("seed"),
        "source": detector.source,
        "limits": asdict(settings),
    }


def _png_base64(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def answer(result: Prediction, name: str, image: np.ndarray | None) -> dict[str, Any]:
    """One image's JSON object; ``image`` given: with the overlay and mask as PNG."""
    out: dict[str, Any] = {
        "image": name,
        "score": result.score,
        "threshold": result.threshold,
        "defect": bool(result.defect),
        "group": result.group,
        "blank": bool(result.blank),
        "mask_pixels": None if result.mask is None else int(result.mask.sum()),
    }
    if image is not None:
        from ..reporting.plots import overlay_png

        png = overlay_png(image, result, name) if result.anomaly_map is not None else None
        out["overlay_png"] = None if png is None else base64.b64encode(png).decode("ascii")
        out["mask_png"] = (
            None if result.mask is None else _png_base64(result.mask.astype(np.uint8) * 255)
        )
    return out


def create_app(detector: Detector, settings: ServeSettings | None = None) -> Any:
    """The ASGI application serving ``detector`` (FastAPI); one detector per app."""
    try:
        from fastapi import FastAPI, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse, Response
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            generate_latest,
        )
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as exc:
        raise _missing_extra(exc) from exc

    settings = settings or ServeSettings()
    registry = CollectorRegistry()  # per app: two services in one process count apart
    requests = Counter(
        "anomaly_requests",
        "HTTP requests by endpoint and status",
        ["endpoint", "status"],
        registry=registry,
    )
    latency = Histogram(
        "anomaly_request_seconds",
        "Request latency by endpoint",
        ["endpoint"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        registry=registry,
    )
    images = Counter("anomaly_images", "Images scored", registry=registry)
    verdicts = Counter("anomaly_verdicts", "Images by verdict", ["verdict"], registry=registry)
    in_flight = Gauge(
        "anomaly_requests_in_flight",
        "Predict requests admitted",
        registry=registry,
        multiprocess_mode="livesum",
    )

    model_lock = threading.Lock()  # one prediction at a time (see the module docstring)
    pending = 0
    info = model_info(detector, settings)
    app = FastAPI(title="anomaly-pipeline detector", version=str(info["package_version"]))

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message.splitlines()[0] if message else ""}, status)

    class CountRequests:
        """Requests, statuses and latency for /metrics: a plain ASGI middleware (Starlette's
        ``BaseHTTPMiddleware`` costs a task and stream copies per request)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            started = time.perf_counter()
            status = [500]  # what the client gets if the app raises before answering

            async def capture(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self.inner(scope, receive, capture)
            finally:
                route = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
                requests.labels(route, str(status[0])).inc()
                latency.labels(route).observe(time.perf_counter() - started)

    app.add_middleware(CountRequests)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        """A bug: its traceback goes to the service's log, one line to the client."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "internal error; see the service log")

    @app.exception_handler(RequestError)
    async def bad_request(_: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error(422, f"malformed request ({problems})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": detector.name}

    @app.get("/model")
    async def model() -> dict:
        return info

    @app.get("/metrics")
    async def metrics() -> Response:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        from prometheus_client import multiprocess

        combined = CollectorRegistry()  # every worker's values, summed
        multiprocess.MultiProcessCollector(combined)
        return Response(generate_latest(combined), media_type=CONTENT_TYPE_LATEST)

    page_html = PAGE.read_text(encoding="utf-8")  # read once, not per request

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    async def read_upload(upload: UploadFile) -> tuple[str, bytes]:
        name = Path(upload.filename or "upload").name
        data = await upload.read(settings.max_bytes + 1)
        if len(data) > settings.max_bytes:
            raise RequestError(
                413, f"{name}: larger than the service's limit of {settings.max_bytes} bytes"
            )
        return name, data

    def predict_all(
        uploads: list[tuple[str, bytes]], group: str | None, overlay: bool, deadline: float
    ) -> list[dict]:
        """Runs in a worker thread, under the model's lock: decode, then predict (see the
        module docstring for why decoding is inside); a request whose client has given up
        is not computed."""
        with model_lock:
            if time.monotonic() > deadline:
                raise RequestError(504, "timed out waiting for the model")
            with answering(415):  # not an image
                arrays = [detector.decode_bytes(data, name) for name, data in uploads]
            with answering(400):  # no or unknown group
                groups = [detector.group_for(name, group) for name, _ in uploads]
            out = []
            for (name, _), array, chosen in zip(uploads, arrays, groups, strict=True):
                with answering(422):  # e.g. the model gave non-finite scores
                    result = detector.predict_one(array, chosen, name=name)
                out.append(answer(result, name, array if overlay else None))
        return out

    @app.post("/predict")
    async def predict(request: Request, group: str | None = None, overlay: bool = False):
        nonlocal pending
        declared = int(request.headers.get("content-length") or 0)
        if declared > settings.max_bytes * settings.max_files + 2**20:
            raise RequestError(413, f"request of {declared} bytes is over the service's limits")
        if pending >= settings.max_pending:
            raise RequestError(503, f"busy: {pending} requests admitted; retry later")
        pending += 1
        in_flight.inc()
        deadline = time.monotonic() + settings.timeout_s
        try:
            form = await request.form(max_files=settings.max_files + 1)
            uploads = [u for u in form.getlist("files") if not isinstance(u, str)]
            field = form.get("group")
            group = group or (str(field) if field else None)
            if not uploads:
                raise RequestError(400, "no image: send one or more files in the field 'files'")
            if len(uploads) > settings.max_files:
                raise RequestError(413, f"more than {settings.max_files} files in one request")
            read = [await read_upload(upload) for upload in uploads]
            await form.close()

            def work() -> list[dict]:
                return predict_all(read, group, overlay, deadline)

            try:
                results = await asyncio.wait_for(run_in_threadpool(work), settings.timeout_s)
            except asyncio.TimeoutError:
                raise RequestError(
                    504, f"prediction took longer than the service's {settings.timeout_s:g} s"
                ) from None
        finally:
            pending -= 1
            in_flight.dec()
        images.inc(len(results))
        for item in results:
            verdicts.labels("defect" if item["defect"] else "good").inc()
        return JSONResponse(results)

    return app


KNOWN_PATHS = {"/", "/health", "/model", "/metrics", "/predict"}


WORKER_ENV = "ANOMALY_SERVE_WORKER"  # how `serve --workers N` tells each worker what to load


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    settings: ServeSettings | None = None,
    workers: int = 1,
) -> None:
    """Load the bundle and serve it with uvicorn until interrupted.

    ``workers`` > 1 runs that many processes on the one port (uvicorn's supervisor), each
    with its own copy of the model and ``cores / workers`` PyTorch threads: one process's
    Python work (HTTP, decoding, tiling) then runs beside another's model instead of
    contending for one interpreter lock (measured in ``benchmarks/bench_serve.py``).
    /metrics then sums every worker (prometheus-client's multiprocess mode)."""
    from .detector import load_detector

    try:
        import uvicorn
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    settings = settings or ServeSettings()
    check_can_listen(host, port)
    detector = load_detector(bundle, device)  # a bad bundle fails here, in one line
    log.info("serving %s (%s) on http://%s:%d", bundle, detector.name, host, port)
    if workers == 1:
        app = create_app(detector, settings)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    del detector
    metrics_dir = tempfile.mkdtemp(prefix="anomaly-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[WORKER_ENV] = json.dumps(
        {
            "bundle": str(bundle),
            "device": device,
            "settings": asdict(settings),
            "threads": max(1, (os.cpu_count() or 1) // workers),
        }
    )
    try:
        uvicorn.run(
            "anomaly.inference.serve:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """One worker of ``serve --workers N``: the app for the bundle its parent named."""
    import torch

    from .detector import load_detector

    config = json.loads(os.environ[WORKER_ENV])
    torch.set_num_threads(int(config["threads"]))
    detector = load_detector(config["bundle"], config["device"])
    return create_app(detector, ServeSettings(**config["settings"]))


def check_can_listen(host: str, port: int) -> None:
    """One clear line for a port in use or a host this machine does not have, before the
    bundle is loaded (uvicorn would log it and exit without naming the option)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DataError(f"--host {host}: not an address of this machine ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise DataError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None


def wait_healthy(url: str, process: Any = None, seconds: float = 120.0) -> None:
    """Until ``url``/health answers 200 (a service started in another process: the
    benchmark, the page check, the tests); a DataError if ``process`` (a Popen) exits
    first or ``seconds`` pass."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            said = process.stderr.read()[-400:] if process.stderr else ""
            raise DataError(f"anomaly serve exited with {process.returncode}: {said}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise DataError(f"{url}/health: no answer within {seconds:.0f} s")
