"""Faults 1-5 of issue 13: inputs that used to give exit 0 and wrong numbers.

Each test reproduces the reported fault first (the input that fooled the pipeline)
and asserts the documented behaviour: a one-line error naming the key or file, a
warning with null metrics, or a rerun where DVC used to reuse a stale result.
"""

from __future__ import annotations

import copy
import gzip
import io
import lzma
import tarfile

import numpy as np
import pytest
import yaml

from anomaly.data.archives import extract
from anomaly.errors import DataError, DownloadError, ParamsError
from anomaly.io import write_json
from anomaly.params import load_params
from conftest import REPO, tiny_params, write_params

# DVC's run-cache key drops every dict key named like these, recursively, params
# included (dvc/stage/cache.py::_get_cache_hash; DVC issue 10296, open upstream).
RUN_CACHE_BLIND_KEYS = {"size", "nfiles"}


def _walk_keys(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, str(key)
            yield from _walk_keys(value, path)


# --- 1. `-S patch.size=32` silently reused 64-px tiles ------------------------------


def test_no_param_key_is_invisible_to_the_dvc_run_cache():
    """Walks params.yaml: a key named size or nfiles would be ignored by DVC's run-cache."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    blind = [path for path, key in _walk_keys(params) if key in RUN_CACHE_BLIND_KEYS]
    assert blind == [], f"rename these params (DVC issue 10296): {blind}"


def test_config_classes_have_no_run_cache_blind_field():
    """Also the schema: a model block field named size would be just as invisible."""
    import dataclasses

    from anomaly.models.registry import available_models, model_config
    from anomaly.params import Params

    def fields(cls, prefix=""):
        for f in dataclasses.fields(cls):
            yield f"{prefix}{f.name}", f.name
            default = (
                getattr(cls, f.name, None)
                if f.default_factory is dataclasses.MISSING
                else f.default_factory()
            )
            if dataclasses.is_dataclass(default):
                yield from fields(type(default), f"{prefix}{f.name}.")

    names = list(fields(Params))
    for model in available_models():
        names += list(fields(type(model_config(model, None, "t")), f"models.{model}."))
    assert [p for p, n in names if n in RUN_CACHE_BLIND_KEYS] == []


def test_old_patch_size_key_points_to_the_new_name(tmp_path):
    data = tiny_params()
    data["patch"]["size"] = data["patch"].pop("side")
    path = write_params(tmp_path / "params.yaml", data)
    with pytest.raises(ParamsError, match=r"patch\.size is now patch\.side .*10296"):
        load_params(path)


def _declared_params():
    """(stage, declared key, value) for every param every dvc.yaml stage declares."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    values = yaml.safe_load((REPO / "params.yaml").read_text())
    out = []
    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    for key in dep.params:
                        node = values
                        for part in key.split("."):
                            node = node[part]
                        out.append((stage.name, stage.cmd, key, node))
    return out


def _perturb(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 1
    if isinstance(value, list):
        return [*value, "x"]
    raise TypeError(value)


def _leaf_changes():
    """One case per leaf value under every declared param of every stage."""
    cases = []
    for stage, cmd, key, value in _declared_params():
        leaves = [(key, [])] if not isinstance(value, dict) else []
        stack = [([], value)] if isinstance(value, dict) else []
        while stack:
            path, node = stack.pop()
            for k, v in node.items():
                (
                    stack.append((path + [k], v))
                    if isinstance(v, dict) and v
                    else leaves.append((key, path + [k]))
                )
        cases += [(stage, cmd, key, value, leaf) for _, leaf in leaves]
    return cases


CASES = _leaf_changes()


@pytest.mark.parametrize(
    ("stage", "cmd", "key", "value", "leaf"),
    CASES,
    ids=[f"{c[0]}:{'.'.join([c[2], *c[4]])}" for c in CASES],
)
def test_every_declared_param_changes_the_run_cache_key(stage, cmd, key, value, leaf):
    """DVC restores a stage from its run-cache when this key matches an earlier run: a param
    the key does not see would rerun nothing and record the new value anyway (fault 1)."""
    from dvc.stage.cache import _get_cache_hash

    def key_of(val):
        lock = {"cmd": cmd, "params": {"params.yaml": {key: val}}, "outs": []}
        return _get_cache_hash(copy.deepcopy(lock), key=True)

    changed = copy.deepcopy(value)
    if leaf:
        node = changed
        for part in leaf[:-1]:
            node = node[part]
        node[leaf[-1]] = _perturb(node[leaf[-1]])
    else:
        changed = _perturb(changed)
    assert key_of(changed) != key_of(value), f"{stage}: {key}.{'.'.join(leaf)}"


def test_the_run_cache_check_would_catch_a_size_key():
    """The check above is not vacuous: a key named size really is invisible (DVC 10296)."""
    from dvc.stage.cache import _get_cache_hash

    def key_of(side):
        return _get_cache_hash({"cmd": "c", "params": {"p": {"patch": {"size": side}}}}, key=True)

    assert key_of(64) == key_of(32)


# --- 2. `threshold.k=nan` wrote "threshold": NaN and called every image good ---------


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"threshold": {"method": "mean_std", "k": float("nan")}}, "threshold.k"),
        ({"threshold": {"method": "manual", "value": float("nan")}}, "threshold.value"),
        ({"threshold": {"percentile": float("inf")}}, "threshold.percentile"),
        ({"train": {"lr": float("-inf")}}, "train.lr"),
        ({"score": {"smooth_sigma": float("nan")}}, "score.smooth_sigma"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, change, key):
    path = write_params(tmp_path / "params.yaml", tiny_params(**change))
    text = path.read_text()
    assert ".nan" in text or ".inf" in text  # YAML spells them like this
    with pytest.raises(ParamsError, match=rf"{key} must be a finite number"):
        load_params(path)


def test_json_outputs_are_strict(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinity"):
        write_json(tmp_path / "m.json", {"threshold": float("nan")})
    assert not (tmp_path / "m.json").exists()
    write_json(tmp_path / "m.json", {"image.auroc": None})
    assert (tmp_path / "m.json").read_text() == '{\n  "image.auroc": null\n}\n'


# --- 3 and 7. corrupt compressed archives --------------------------------------------


def _tar_bytes(tmp_path) -> bytes:
    payload = np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("data/good/000.raw")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_corrupt_byte_in_tar_gz_is_caught_by_its_crc(tmp_path):
    # Level 0 stores the data: a flipped byte still decodes, into a wrong file. Only the
    # gzip CRC at the end of the stream tells; the extraction read it nowhere.
    raw = bytearray(gzip.compress(_tar_bytes(tmp_path), compresslevel=0, mtime=0))
    raw[len(raw) // 2] ^= 0xFF
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match=r"data\.tar\.gz: corrupt archive.*CRC"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_corrupt_byte_in_tar_xz_is_one_line(tmp_path):
    raw = bytearray(lzma.compress(_tar_bytes(tmp_path)))
    raw[len(raw) // 2] ^= 0xFF
    archive = tmp_path / "data.tar.xz"
    archive.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match=r"data\.tar\.xz: corrupt archive") as info:
        extract(archive, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_corrupt_archive_in_one_line(tmp_path, monkeypatch, capsys):
    from anomaly.cli import main

    raw = bytearray(lzma.compress(_tar_bytes(tmp_path)))
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "mvtec.tar.xz").write_bytes(bytes(raw))
    write_params(
        tmp_path / "params.yaml",
        tiny_params(
            dataset={
                "name": "mvtec",
                "category": "bottle",
                "source": str(tmp_path / "mvtec.tar.xz"),
                "cache_dir": str(tmp_path / "cache"),
            }
        ),
    )
    monkeypatch.chdir(tmp_path)
    assert main(["download"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "mvtec.tar.xz: corrupt archive" in err
    assert len(err.splitlines()) == 1


# --- 4. degenerate data: no anomalies, constant scores, labels that are not 0/1 -------


def test_no_defects_gives_null_not_zero(caplog):
    from anomaly.evaluation.metrics import check_evaluable, classification_metrics

    labels, scores = np.zeros(6, int), np.arange(6.0)
    metrics = classification_metrics(labels, scores, 3.0)
    for key in ("auroc", "aupr", "f1_max", "recall", "f1"):
        assert metrics[key] is None, key
    assert metrics["precision"] == 0.0  # 3 good images called defect: a real, measured 0
    with caplog.at_level("WARNING"):
        check_evaluable("scores.csv", labels, scores)
    assert "no defect images" in caplog.text


def test_constant_scores_are_an_error():
    from anomaly.evaluation.metrics import check_evaluable

    with pytest.raises(DataError, match="same score"):
        check_evaluable("scores.csv", np.array([0, 0, 1, 1]), np.full(4, 0.7))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["0", "", "1"], "row 3 has an empty cell"),
        (["normal", "anomaly", "normal"], "row 2 has 'normal'"),
    ],
)
def test_tabular_labels_must_be_numbers(tmp_path, labels, message):
    from anomaly.data.tabular import read_table

    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i},{v}\n" for i, v in enumerate(labels)))
    with pytest.raises(DataError, match=message) as info:
        read_table(csv, "label")
    assert "label column 'label' must hold numbers" in str(info.value)


def test_no_defect_dataset_runs_with_null_metrics(project, caplog):
    """The whole pipeline on a dataset without one defect: it trains, and says why the
    detection metrics are null instead of reporting 0.0 as if measured."""
    import json

    from anomaly import pipeline

    write_params(
        project / "params.yaml",
        tiny_params(dataset={"synthetic": {"n_defect": 0}}, train={"epochs": 1}),
    )
    params = load_params(project / "params.yaml")
    with caplog.at_level("WARNING"):
        for name in ("download", "patchify", "split", "train", "score", "threshold", "evaluate"):
            pipeline.STAGES[name](params)
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert metrics["image.auroc"] is None and metrics["image.recall"] is None
    assert "no defect images" in caplog.text


# --- 5. a stride larger than the tile left defects unseen ------------------------------


def test_stride_larger_than_tile_is_refused(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params(patch={"side": 64, "stride": 300}))
    with pytest.raises(ParamsError, match=r"patch\.stride is 300, larger than patch\.side 64"):
        load_params(path)
