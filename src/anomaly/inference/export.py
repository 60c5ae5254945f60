"""``anomaly export``: a bundle written elsewhere, or the tile scorer as an ONNX graph.

The ONNX file holds what a graph can: tiles (B, C, S, S) in [0, 1] in, raw tile scores
(B,) and tile maps (B, S, S) out, exactly the model's ``score`` with the pipeline's
``score.*`` settings. What a graph cannot hold (tiling, blank-tile rule, per-group
normalisation, thresholds) travels in its metadata (``anomaly_bundle``, JSON), so one
file is still enough to reproduce predict in another runtime. Equality with the eager
model is checked at export (onnxruntime) and in the tests.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from .bundle import bundle_from_pipeline, load_bundle, save_bundle

log = logging.getLogger(__name__)

# Bundle keys that describe how to use the graph (everything but the weights).
METADATA_KEYS = (
    "model",
    "package_version",
    "preprocessing",
    "score",
    "normalisation",
    "image_threshold",
    "pixel_threshold",
    "threshold_method",
    "dataset",
)


class TileScorer(nn.Module):
    """``model.score(x, score_cfg)`` as a module with tensor outputs only (what export
    traces); a model without maps gets an empty (B, 0, 0) map output."""

    def __init__(self, model: nn.Module, score_cfg: Any) -> None:
        super().__init__()
        self.model = model
        self.score_cfg = score_cfg
        # State a model fits lazily per score setting (an ensemble's standardisation)
        # is computed here, so the traced graph holds it as constants.
        model.prepare_scoring(score_cfg)

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps = self.model.score(tiles, self.score_cfg)
        if maps is None:
            maps = tiles.new_zeros((tiles.shape[0], 0, 0))
        return scores.float(), maps.float()


def export_onnx(bundle: dict, out: str | Path, check: bool = True) -> Path:
    """Write the bundle's tile scorer as ONNX (opset from torch's exporter), metadata
    attached; with ``check``, compare onnxruntime's outputs with the eager model's."""
    try:
        import onnx
    except ImportError as exc:
        raise DataError("export --format onnx needs the onnx package (pip install onnx)") from exc
    from .detector import Detector

    detector = Detector(bundle, "cpu", "bundle")
    scorer = TileScorer(detector.model, detector.score_cfg).eval()
    shape = (2, detector.channels, detector.tile_size, detector.tile_size)
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(
                scorer,
                (example,),
                str(tmp),
                input_names=["tiles"],
                output_names=["scores", "maps"],
                dynamic_shapes={"tiles": {0: torch.export.Dim("batch", min=1)}},
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        graph = onnx.load(str(tmp))
        meta = {key: bundle.get(key) for key in METADATA_KEYS}
        graph.metadata_props.add(key="anomaly_bundle", value=json.dumps(meta, sort_keys=True))
        onnx.save(graph, str(tmp))
        if check:
            check_onnx(tmp, scorer, shape)
        tmp.replace(out)
    except DataError:
        raise
    except Exception as exc:  # the exporter raises many types for an untraceable model
        raise DataError(
            f"model {detector.name}: cannot be exported to ONNX ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); use the bundle"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_onnx(path: str | Path, scorer: TileScorer, shape: tuple[int, ...]) -> float:
    """Largest absolute difference between onnxruntime and the eager scorer on random
    tiles (a batch size other than the export's, to check the dynamic axis); raises when
    the outputs differ by more than float32 rounding."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tiles = torch.rand((3, *shape[1:]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = [t.numpy() for t in scorer(tiles)]
    got = session.run(None, {"tiles": tiles.numpy()})
    worst = 0.0
    for name, want, have in zip(("scores", "maps"), expected, got, strict=True):
        if want.shape != have.shape:
            raise DataError(f"{path}: ONNX {name} shape {have.shape}, eager {want.shape}")
        if want.size:
            scale = max(float(np.abs(want).max()), 1e-6)
            worst = max(worst, float(np.abs(want - have).max()) / scale)
    if worst > 1e-4:
        raise DataError(f"{path}: ONNX outputs differ from the eager model by {worst:.2g}")
    return worst


def export(bundle_file: str | Path, fmt: str, out: str | Path | None, params_path: str) -> Path:
    """The CLI's ``anomaly export``: a bundle or an ONNX file from the given bundle, or
    from the pipeline's files when that bundle does not exist yet."""
    from ..params import load_params

    source = Path(bundle_file)
    if source.is_file():
        bundle = load_bundle(source)
    else:
        log.info("%s: not found; building the bundle from the pipeline's files", source)
        bundle = bundle_from_pipeline(load_params(params_path))
    if fmt == "onnx":
        return export_onnx(bundle, out or source.with_suffix(".onnx"))
    return save_bundle(bundle, out or source)
