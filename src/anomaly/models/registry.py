"""Map the names used in params.yaml to model classes.

Adding a model is adding one module under ``models/`` that decorates its class
with :func:`register`, its import in ``models/__init__.py`` and a params block;
nothing else in the pipeline names a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config_schema import build, to_dict
from ..errors import DataError, ParamsError

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make the model available as ``model: <name>`` in params.yaml."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise RuntimeError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _ensure_loaded() -> None:
    """Import the models package, whose __init__ imports (and so registers) every family."""
    import anomaly.models  # noqa: F401


def available_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ParamsError(
            f"params.yaml: model is {name!r}, not a known model (known: {', '.join(sorted(_REGISTRY))})"
        )
    return _REGISTRY[name]


def model_config(name: str, block: Any, source: str = "params.yaml") -> Any:
    """The typed config of model ``name`` built from its params block."""
    cls = get_model_class(name)
    return build(cls.config_cls, block or {}, f"models.{name}", source)


def build_model(
    name: str,
    config: Any,
    in_channels: int,
    image_size: int,
    input_shape: tuple[int, int, int] | None = None,
) -> Any:
    """``input_shape`` (C, H, W) matters only for non-square input such as table rows."""
    cls = get_model_class(name)
    model = cls(
        config,
        in_channels=in_channels,
        image_size=image_size,
        **({"input_shape": tuple(input_shape)} if input_shape else {}),
    )
    return model


def save_checkpoint(model: Any, path: str | Path, extra: dict[str, Any]) -> None:
    """Save weights plus everything needed to rebuild the model, loadable with weights_only."""
    from ..io import atomic_path

    payload = {
        "format": 1,
        "model": model.name,
        "config": to_dict(model.config),
        "in_channels": model.in_channels,
        "image_size": model.image_size,
        "input_shape": list(model.input_shape),
        "state_dict": model.state_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """Rebuild a model from a checkpoint; returns (model in eval mode, the checkpoint dict)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found (run the train stage first)")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise DataError(f"{path}: not a readable checkpoint ({exc})") from exc
    name = payload.get("model")
    config = model_config(name, payload.get("config"), source=str(path))
    shape = payload.get("input_shape")
    model = build_model(
        name, config, payload["in_channels"], payload["image_size"], tuple(shape) if shape else None
    )
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, payload
