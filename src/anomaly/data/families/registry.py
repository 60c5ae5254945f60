"""Map ``dataset.name`` to its family: reader, categories, category type.

A family module defines one :class:`Family` and passes it to :func:`register`.
Everything that used to switch on dataset names (download, sweep categories,
report labels, texture/object split) asks the family instead, so adding a
family touches one new module and, where it has settings, one params block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ...errors import ParamsError
from ...plugins import ModuleRegistry

SHARED_MODULES = ("registry",)

# reader(params, out_dir) -> (manifest frame, channels or None: from the first image, info)
Reader = Callable[[Any, Path], tuple[Any, "int | None", dict]]


def _quoted_category(category: str) -> list[str]:
    # quoted, so YAML keeps a fabric code like "01" a string
    return ["-S", f"dataset.category='{category}'"]


def category_label(params: dict[str, Any]) -> str:
    import json

    category = params.get("dataset.category")
    if category in (None, "", "null"):
        return "all"
    if isinstance(category, str) and category.startswith("["):
        return "+".join(str(c) for c in json.loads(category))
    return str(category)


@dataclass(frozen=True)
class Family:
    """What the pipeline needs to know about a dataset family."""

    name: str
    read: Reader
    # every category, for `sweep.categories: all` (None: the family has none)
    categories: Callable[[Any], list[str]] | None = None
    # texture | object | fabric | digit | table | other, for the report's split
    category_type: Callable[[str], str] = field(default=lambda _category: "other")
    # the `dvc exp run -S` arguments that select one category
    select: Callable[[str], list[str]] = field(default=_quoted_category)
    # the report's label of a run, from its flattened params
    label: Callable[[dict[str, Any]], str] = field(default=category_label)
    # the dataset.<block> of params.yaml it reads, if any (documentation and checks)
    params_block: str | None = None
    # the group (fabric code, category) of a new image from its path, None when the path
    # does not say: predict then needs --group unless the model knows a single group
    group_of: Callable[[PurePath], str | None] = field(default=lambda _path: None)
    # what `score.* : auto` means on this family (scoring.resolve_score); empty: the
    # fallback for local defects. Recorded in dataset.json by the download stage.
    score_defaults: dict[str, Any] = field(default_factory=dict)
    # "local" (defects in part of an image: fabrics, MVTec) or "whole-image" (a wrong
    # digit); models trained on simulated local defects warn on whole-image data
    anomaly_kind: str = "local"


_FAMILIES: ModuleRegistry[Family] = ModuleRegistry(
    __package__, Path(__file__).parent, SHARED_MODULES, "dataset family"
)


def register(family: Family) -> Family:
    return _FAMILIES.add(family.name, family)


def available_families() -> list[str]:
    """Every family name: one module per family, named like it (found, not imported)."""
    return _FAMILIES.names()


def get_family(name: str, source: str = "params.yaml") -> Family:
    """The family registered as ``name``, importing its module (and only it) on first use."""
    return _FAMILIES.get(
        name,
        lambda known: ParamsError(
            f"{source}: dataset.name is {name!r}, not a known dataset (known: {', '.join(known)})"
        ),
    )
