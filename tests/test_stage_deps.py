"""dvc.yaml's code deps are each stage's import closure; the package has no import cycles;
stage modules import domain code, never each other."""

from __future__ import annotations

import pytest
import yaml

from anomaly import import_graph
from anomaly.stages import NAMES
from conftest import REPO

DVC_STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def listed_code_deps(stage: str) -> list[str]:
    return [str(d) for d in DVC_STAGES[stage]["deps"] if import_graph.is_code_dep(str(d))]


def problems(stage: str, listed: list[str]) -> list[str]:
    """What is wrong with ``listed`` as the code deps of ``stage`` (empty: nothing)."""
    out = []
    used: set[str] = set()
    names = import_graph.choices(stage)
    placeholder = import_graph.DYNAMIC.get(stage, ("", "${none}"))[1]
    for name in names:
        expected = import_graph.stage_code_deps(stage, name)
        resolved = {d.replace(placeholder, name or "") for d in listed}
        used |= expected
        out += [f"missing {d} (with {name})" for d in sorted(expected - resolved)]
    for dep in listed:
        variants = {dep.replace(placeholder, n or "") for n in names}
        if not variants & used:
            out.append(f"lists {dep}, which the stage does not import")
    return sorted(set(out))


@pytest.mark.parametrize("stage", NAMES)
def test_dvc_yaml_code_deps_are_the_import_closure(stage):
    found = problems(stage, listed_code_deps(stage))
    assert found == [], (
        f"{stage}: {found}; run `python -m anomaly.import_graph --write` to update dvc.yaml"
    )
    assert listed_code_deps(stage) == import_graph.templated_code_deps(stage)


@pytest.mark.parametrize("stage", NAMES)
def test_the_check_fails_when_a_dependency_is_removed_or_stale(stage):
    listed = listed_code_deps(stage)
    for dep in listed:
        fewer = [d for d in listed if d != dep]
        assert any(p.startswith("missing ") for p in problems(stage, fewer)), dep
    stale = problems(stage, [*listed, "src/anomaly/reporting/report.py"])
    assert "lists src/anomaly/reporting/report.py, which the stage does not import" in stale


def test_registry_stages_depend_on_the_active_module_only():
    """train/score: the active model's file, not every model's; download: the active family's."""
    for stage, (package, placeholder) in import_graph.DYNAMIC.items():
        deps = listed_code_deps(stage)
        assert import_graph.own_file(stage, placeholder) in deps
        others = [import_graph.own_file(stage, n) for n in import_graph.choices(stage)]
        assert not set(others) & set(deps), (stage, package)


def test_stages_that_use_no_model_import_no_model_code():
    for stage in NAMES:
        if stage in ("train", "score"):
            continue
        assert not [d for d in listed_code_deps(stage) if "/models/" in d], stage


def _module_level_imports() -> dict[str, set[str]]:
    """Package module -> package modules it imports when it is itself imported."""
    graph = {}
    for path in sorted((import_graph.SRC / "anomaly").rglob("*.py")):
        name = import_graph.module_name(path)
        graph[name] = set(import_graph.imports_of(path, name, top_level_only=True))
    return graph


def test_no_import_cycles():
    graph = _module_level_imports()
    assert "anomaly.io" in graph["anomaly.data.manifest"]  # the graph is the real one
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle.extend([*trail, node, nxt])
                return True
            if nxt not in state and visit(nxt, [*trail, node]):
                return True
        state[node] = 2
        return False

    for module in graph:
        if module not in state and visit(module, []):
            break
    assert cycle == [], " -> ".join(cycle)


def test_no_module_imports_a_higher_layer(monkeypatch):
    """The layer order of docs/ARCHITECTURE.md, every import (lazy ones too)."""
    assert import_graph.upward_imports() == []
    # the check sees real edges: predict draws with the reporting layer's plots, so
    # with those two layers swapped that import is reported as upward
    layers = list(import_graph.LAYERS)
    at = layers.index(("inference",))
    layers[at], layers[at + 1] = layers[at + 1], layers[at]
    monkeypatch.setattr(import_graph, "LAYERS", tuple(layers))
    assert ("anomaly.inference.predict", "anomaly.reporting.plots") in (
        import_graph.upward_imports()
    )


def test_the_package_top_holds_entry_points_and_the_shared_base():
    """Everything else lives in a package named for its job (stages, inference, ...)."""
    top = {p.stem for p in (REPO / "src" / "anomaly").glob("*.py")} - {"__init__"}
    assert top == set(import_graph.LAYERS[0]) | set(import_graph.SHARED_BASE)
    assert {"bundle", "plots", "metrics", "training"}.isdisjoint(top)


def test_stage_modules_never_import_each_other():
    for stage in NAMES:
        path = REPO / "src" / "anomaly" / "stages" / f"{stage}.py"
        imported = import_graph.imports_of(path, f"anomaly.stages.{stage}")
        others = {f"anomaly.stages.{s}" for s in NAMES if s != stage}
        assert not imported & others, f"{stage} imports {imported & others}"
        # and no stage reaches another through domain code
        closure = import_graph.stage_code_deps(stage, import_graph.choices(stage)[0])
        assert not [
            d
            for d in closure
            if d.startswith("src/anomaly/stages/")
            and d.endswith(tuple(f"/{s}.py" for s in NAMES if s != stage))
        ], stage


def test_every_dataset_family_is_registered_under_its_module_name():
    """Follows the registry: a new family module is covered without editing a list."""
    from anomaly.data.families.registry import available_families, get_family
    from anomaly.params import load_params

    params = load_params(REPO / "params.yaml")
    families = available_families()
    assert {"synthetic_fabric", "aitex", "mvtec", "mnist", "folder", "tabular"} <= set(families)
    for name in families:
        family = get_family(name)
        assert family.name == name and callable(family.read)
        if family.categories is not None:
            categories = family.categories(params)
            assert categories and all(isinstance(c, str) for c in categories)
            args = family.select(categories[0])
            assert args[0] == "-S" and "=" in args[1]
            assert family.category_type(categories[0]) in ("texture", "object", "digit")
        assert isinstance(family.label({"dataset.name": name}), str)


def test_stage_scripts_run_the_code_of_their_own_checkout(tmp_path):
    """A queued DVC experiment runs in a copy of the repository (``.dvc/tmp/exps``) and
    DVC hashes that copy's code; the editable install points at the main working copy.
    The stage must import the copy's ``src/`` (and hand it to child processes, e.g.
    distributed workers), or an edited working copy silently changes queued results."""
    import os
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "stages", copy / "stages")
    shutil.copytree(
        REPO / "src" / "anomaly",
        copy / "src" / "anomaly",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    common = copy / "src" / "anomaly" / "stages" / "common.py"
    common.write_text(
        common.read_text()
        + "\nimport os as _os\nprint('RAN', __file__, _os.environ['PYTHONPATH'].split(_os.pathsep)[0])\n"
    )
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(copy / "stages" / "split.py")],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    ran = [line.split() for line in result.stdout.splitlines() if line.startswith("RAN ")]
    assert ran, f"the stage imported another checkout's code:\n{result.stdout}{result.stderr}"
    assert ran[0][1] == str(common.resolve())
    assert ran[0][2] == str((copy / "src").resolve())
