"""Registries of one-module-per-entry packages (models, dataset families).

Entries are found by listing the package's modules (no import) and a module is
imported only when its entry is asked for, which is what lets each stage depend
on the active model's or family's file alone. Both registries use this class.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class ModuleRegistry(Generic[T]):
    """``name -> entry``, where module ``<package>.<name>`` registers the entry ``name``."""

    def __init__(self, package: str, folder: Path, shared: tuple[str, ...], what: str) -> None:
        self.package = package
        self.folder = folder
        self.shared = shared  # modules of shared code, not entries
        self.what = what
        self.entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self.entries:
            raise RuntimeError(f"{self.what} {name!r} registered twice")
        self.entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Every entry name: the package's modules less the shared ones (none imported)."""
        return sorted(
            m.name for m in pkgutil.iter_modules([str(self.folder)]) if m.name not in self.shared
        )

    def get(self, name: str, unknown: Callable[[list[str]], Exception]) -> T:
        """The entry ``name``, importing its module (and only it) on first use;
        ``unknown(known_names)`` is the error raised for a name with no module."""
        if name not in self.entries:
            known = self.names()
            if name not in known:
                raise unknown(known)
            importlib.import_module(f"{self.package}.{name}")
            if name not in self.entries:
                raise RuntimeError(f"{self.package}.{name} does not register {name!r}")
        return self.entries[name]
