"""Which package files each DVC stage runs: its import closure within ``src/anomaly``.

Why: a stage's code dependencies in dvc.yaml must be exactly the files it
executes. Listed by hand they went stale (the score stage did not depend on
the model code it runs); listed too broadly (the whole package) any edit
reran everything. This module derives them from the source with ``ast``:
every ``import`` anywhere in a module (also inside functions, since a lazy
import still runs), plus the ``__init__.py`` of every package on the way, plus
the imports made by name (the registries load ``models/<model>.py`` and
``data/families/<dataset.name>.py``, written in dvc.yaml with ``${...}``).

``python -m anomaly.import_graph`` prints each stage's code deps for dvc.yaml;
``tests/test_stage_deps.py`` fails when dvc.yaml and this closure disagree.
Not imported by any stage, so it is no stage's dependency.
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
import sys
from pathlib import Path

PACKAGE = "anomaly"
SRC = Path(__file__).resolve().parents[1]  # .../src
REPO = SRC.parent
# Imports made by name through a registry: stage -> (package, dvc.yaml placeholder).
# The registry imports only the module of the active model / dataset family.
DYNAMIC = {
    "train": ("models", "${model}"),
    "score": ("models", "${model}"),
    "download": ("data.families", "${dataset.name}"),
}


def module_file(module: str) -> Path | None:
    """The file of a module of this package (a module or a package's __init__), or None."""
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    rel = path.resolve().relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def imports_of(path: Path, module: str | None, top_level_only: bool = False) -> frozenset[str]:
    """Package modules that the code in ``path`` imports (``module`` None: a script).

    ``top_level_only``: only the imports that run when the module itself is imported
    (not those inside functions), the ones that can form an import cycle.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    # A package's PEP 562 ``__getattr__`` runs only when its lazy attribute is used
    # (``anomaly.load_detector``, for users); no stage does, so its imports are skipped.
    lazy = {
        id(n)
        for f in tree.body
        if is_package and isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
        for n in ast.walk(f)
    }
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub) else base)
    found.discard(module)
    return frozenset(found)


# The package's layers, top to bottom; a module may import its own layer or lower ones,
# never a higher one (tests/test_stage_deps.py holds it, lazy imports included). Each
# entry is a module or a package (with everything under it); what no entry names is the
# shared base below them all, ``SHARED_BASE``.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "__main__", "pipeline", "import_graph"),  # entry points
    ("stages",),  # one module per DVC stage
    ("inference",),  # bundles, load_detector, predict, export, serve
    ("reporting",),  # report, figures, explore, sweep, select
    ("evaluation",),  # metrics, thresholds, the label-free figure
    ("models", "data"),  # models (and their training loop), dataset families
)

# The top-level modules every layer may use: the only ones besides the entry points that
# live at the package top (a new top-level module goes into a job's package, or here).
SHARED_BASE = (
    "config_schema",  # dataclass configs from params.yaml
    "distributed",  # torchrun groups
    "dvc_cli",  # calling dvc
    "errors",  # the one-line error types
    "image_reader",  # every image file the project reads
    "io",  # atomic writes
    "logging_utils",
    "params",  # params.yaml, typed and checked
    "paths",  # the pipeline's file layout
    "plugins",  # the registries' module loader
    "scoring",  # map arithmetic shared by models, stages and inference
)

# Known exceptions, each with its reason: params checks ``dataset.name`` against the
# family modules' names (a lazy import that lists file names and runs no family code).
ALLOWED_UPWARD = frozenset({("anomaly.params", "anomaly.data.families.registry")})


def layer(module: str) -> int:
    """The layer index of a package module (0 = top); the shared base is the last."""
    rest = module.split(".", 1)[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if any(rest == n or rest.startswith(n + ".") for n in names):
            return index
    return len(LAYERS)


def upward_imports() -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports from a higher layer, for every
    import in the package, lazy ones included (the package's own lazy API excepted)."""
    found = []
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        module = module_name(path)
        if module == PACKAGE:  # the public facade (``anomaly.load_detector``) is lazy
            continue
        for imported in imports_of(path, module):
            upward = imported != PACKAGE and layer(imported) < layer(module)
            if upward and (module, imported) not in ALLOWED_UPWARD:
                found.append((module, imported))
    return found


def closure(entry: Path, extra_modules: tuple[str, ...] = ()) -> set[Path]:
    """Every package file that running ``entry`` (a stage script) may execute."""
    seen: set[str] = set()
    todo = [*imports_of(entry, None), *extra_modules]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for n in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:n])
            if name in seen or module_file(name) is None:
                continue
            seen.add(name)
            todo.extend(imports_of(module_file(name), name))
    return {module_file(m) for m in seen}


def choices(stage: str) -> list[str | None]:
    """The names a stage's dynamic import can take (models, families), or [None]."""
    if stage not in DYNAMIC:
        return [None]
    package = DYNAMIC[stage][0]
    folder = SRC / PACKAGE / Path(*package.split("."))
    registry = importlib.import_module(f"{PACKAGE}.{package}.registry")
    return sorted(
        m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in registry.SHARED_MODULES
    )


@functools.cache
def stage_code_deps(stage: str, name: str | None = None) -> frozenset[str]:
    """Repo-relative code files of ``stage`` (with model / family ``name`` loaded by name)."""
    extra = (f"{PACKAGE}.{DYNAMIC[stage][0]}.{name}",) if name and stage in DYNAMIC else ()
    files = closure(REPO / "stages" / f"{stage}.py", extra)
    # stages/_checkout.py decides which src/ the stage imports: part of every stage's code
    own = {f"stages/{stage}.py", "stages/_checkout.py"}
    return frozenset(own | {str(p.relative_to(REPO)) for p in files})


def own_file(stage: str, name: str) -> str:
    return f"src/{PACKAGE}/{DYNAMIC[stage][0].replace('.', '/')}/{name}.py"


def templated_code_deps(stage: str) -> list[str]:
    """What dvc.yaml should list: the union over the names a dynamic import can take,
    each name's own module written once with its placeholder (``models/${model}.py``)."""
    if stage not in DYNAMIC:
        return sorted(stage_code_deps(stage))
    names = choices(stage)
    own = {own_file(stage, n) for n in names}
    shared = set().union(*(stage_code_deps(stage, n) for n in names)) - own
    return sorted(shared | {own_file(stage, DYNAMIC[stage][1])})


def is_code_dep(dep: str) -> bool:
    return dep.startswith((f"src/{PACKAGE}/", "stages/"))


def write_dvc_yaml(path: Path) -> list[str]:
    """Rewrite the code part of every stage's ``deps:`` in dvc.yaml (data deps, comments
    and order of everything else kept); returns the stages whose list changed."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(path.read_text(encoding="utf-8"))
    changed = []
    for name, stage in doc["stages"].items():
        deps = stage.get("deps", [])
        data = [d for d in deps if not is_code_dep(str(d))]
        new = [*templated_code_deps(name), *data]
        if [str(d) for d in deps] != new:
            deps.clear()
            deps.extend(new)
            changed.append(name)
    if changed:
        with open(path, "w", encoding="utf-8") as handle:
            yaml.dump(doc, handle)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Print each stage's code deps, or with ``--write`` put them into dvc.yaml."""
    from .stages import NAMES

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write"]:
        changed = write_dvc_yaml(REPO / "dvc.yaml")
        print(f"dvc.yaml: updated {', '.join(changed)}" if changed else "dvc.yaml: up to date")
        return 0
    for stage in NAMES:
        print(f"  {stage}:")
        for dep in templated_code_deps(stage):
            print(f"      - {dep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
