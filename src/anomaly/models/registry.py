"""Map the names used in params.yaml to model classes.

Adding a model is adding one module ``models/<name>.py`` that decorates its class
with ``@register("<name>")``, and a params block; nothing else in the pipeline
names a model. Modules are imported by name, only when needed: the train and
score stages load the active model's module alone, which is why their DVC
dependencies can be ``src/anomaly/models/${model}.py`` plus the shared files
(``SHARED_MODULES``) instead of the whole folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config_schema import build, to_dict
from ..errors import DataError, ParamsError
from ..plugins import ModuleRegistry

# Modules of this package that hold shared code, not a model of their own.
SHARED_MODULES = (
    "backbones",
    "base",
    "blocks",
    "corruption",
    "registry",
    "training",
    "variational",
)
_MODELS: ModuleRegistry[type] = ModuleRegistry(
    __package__, Path(__file__).parent, SHARED_MODULES, "model name"
)


def register(name: str):
    """Class decorator: make the model available as ``model: <name>`` in params.yaml."""

    def wrap(cls: type) -> type:
        cls.name = name
        return _MODELS.add(name, cls)

    return wrap


def available_models() -> list[str]:
    """Every model name: one module per model, named like the model (found, not imported)."""
    return _MODELS.names()


def get_model_class(name: str, source: str = "params.yaml") -> type:
    """The class registered as ``name``, importing its module (and only it) on first use."""
    return _MODELS.get(
        name,
        lambda known: ParamsError(
            f"{source}: model is {name!r}, not a known model (known: {', '.join(known)})"
        ),
    )


def model_config(name: str, block: Any, source: str = "params.yaml") -> Any:
    """The typed config of model ``name`` built from its params block."""
    cls = get_model_class(name, source)
    return build(cls.config_cls, block or {}, f"models.{name}", source)


def model_block(params: Any, name: str | None = None) -> Any:
    """The active (or named) model's typed config, defaults filled in."""
    name = name or params.model
    return model_config(
        name, params.models.get(name), getattr(params, "source_path", "params.yaml")
    )


def check_model_params(params: Any, which: str = "all") -> None:
    """Model names and blocks of params.yaml against the registry, one error line each.

    ``which="active"``: the active model and its block only (the train and score stages,
    which must not import other models' code); ``"all"``: every block and the sweep list
    (the CLI, before queueing a sweep).
    """
    source = getattr(params, "source_path", "params.yaml")
    known = available_models()
    if params.model not in known:
        raise ParamsError(
            f"{source}: model is {params.model!r}, not a known model (known: {', '.join(known)})"
        )
    if which == "active":
        model_block(params)
        return
    for name, block in params.models.items():
        if name not in known:
            raise ParamsError(
                f"{source}: models.{name} is not a known model (known: {', '.join(known)})"
            )
        model_config(name, block, source)
    for name in params.sweep.models if params.sweep.models != "all" else []:
        if name not in known:
            raise ParamsError(
                f"{source}: sweep.models names {name!r}, not a known model "
                f"(known: {', '.join(known)})"
            )


def resolve_auto(cls: Any, config: Any, anomaly_kind: str = "local") -> tuple[Any, dict]:
    """``config`` with each ``auto`` field replaced by the model's value for the data's
    anomaly kind (``kind_defaults``; "local" when the kind has none), and what was
    chosen, for the train summary."""
    import dataclasses

    table = cls.kind_defaults
    chosen = {}
    for item in dataclasses.fields(config):
        if getattr(config, item.name) != "auto":
            continue
        for kind in (anomaly_kind, "local"):
            if item.name in table.get(kind, {}):
                chosen[item.name] = table[kind][item.name]
                break
        else:
            raise ParamsError(f"models.{cls.name}.{item.name}: auto has no value for this model")
    return dataclasses.replace(config, **chosen), chosen


def build_model(
    name: str,
    config: Any,
    in_channels: int,
    image_size: int,
    input_shape: tuple[int, int, int] | None = None,
    anomaly_kind: str = "local",
) -> Any:
    """``input_shape`` (C, H, W) matters only for non-square input such as table rows;
    ``anomaly_kind`` picks the values of ``auto`` fields (see ``resolve_auto``)."""
    cls = get_model_class(name)
    config, _ = resolve_auto(cls, config, anomaly_kind)
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
    # Saved through a file object: given a path, torch names the zip's inner folder after
    # the (random) temp file name, and identical weights would hash differently each run.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """Rebuild a model from a checkpoint; returns (model in eval mode, the checkpoint dict)."""
    from ..io import load_torch_file

    payload = load_torch_file(
        path, device, "checkpoint", "checkpoint not found (run the train stage first)"
    )
    return model_from_payload(payload, device, str(path)), payload


def model_from_payload(payload: dict, device: str | torch.device, source: str) -> Any:
    """The model a checkpoint or bundle describes, its weights loaded, in eval mode."""
    name = payload.get("model")
    config = model_config(name, payload.get("config"), source=source)
    shape = payload.get("input_shape")
    model = build_model(
        name, config, payload["in_channels"], payload["image_size"], tuple(shape) if shape else None
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:  # written by a version whose architecture differs
        reason = str(exc).strip().splitlines()[0]
        raise DataError(
            f"{source}: its weights do not fit the {name} model this version builds from "
            f"the stored config ({reason}); retrain it (dvc repro) or use the version that "
            "wrote it"
        ) from None
    model.to(device).eval()
    return model
