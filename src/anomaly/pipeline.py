"""The stages in pipeline order, runnable in process (tests, notebooks) without DVC.

Each stage lives in its own module under ``anomaly.stages``; this registry imports
a stage's module only when that stage runs, so nothing here couples one stage's
code to another's (DVC tracks each module as its own stage's dependency).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial

from .params import Params
from .stages import NAMES


def run_stage(name: str, params: Params) -> None:
    """Run one stage in this process, exactly as ``python stages/<name>.py`` does."""
    importlib.import_module(f"{__package__}.stages.{name}").run(params)


def describe(name: str) -> str:
    """The first paragraph of a stage module's docstring: what it reads and writes."""
    doc = importlib.import_module(f"{__package__}.stages.{name}").__doc__ or name
    return " ".join(doc.strip().split("\n\n")[0].split())


STAGES: dict[str, Callable[[Params], None]] = {name: partial(run_stage, name) for name in NAMES}
