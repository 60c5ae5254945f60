"""Property-based: any wrong value for any key gives one ParamsError line naming the key.

Hypothesis draws a key of params.yaml (every leaf, model blocks included) and a value of
a wrong type or out of range; loading must either accept it (a valid value of the same
kind) or fail with one line that names the key, before any stage does work. Any other
exception (TypeError, KeyError, a traceback) fails the test.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly.errors import ParamsError
from anomaly.models.registry import check_model_params
from anomaly.params import load_params
from conftest import REPO

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def _leaves(node, prefix=()):
    for key, value in node.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


SIGNED = {"threshold.value", "dataset.tabular.shift"}
LEAVES = [path for path, _ in _leaves(BASE)]
ORIGINAL = dict(_leaves(BASE))

wrong_values = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "size", "epochs"]), st.integers(), max_size=2),
)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(LEAVES), value=wrong_values)
def test_any_bad_value_is_one_line_naming_the_key(key, value):
    data = copy.deepcopy(BASE)
    node = data
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            check_model_params(load_params(path), "all")
        except ParamsError as exc:
            text = str(exc)
            assert "\n" not in text
            assert text.startswith(f"{path}: ")
            # The key itself, or the block whose cross-field rule it broke.
            named = [".".join(key[:n]) for n in range(len(key), 0, -1)]
            assert any(name in text for name in named) or key[0] == "model", text
            return
    original = ORIGINAL[key]
    # The sign rule (config_schema._check_signs): no key but these takes a negative number.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        assert ".".join(key) in SIGNED, f"{'.'.join(key)} accepted {value!r}"
    # Accepted: only a value of the kind the key holds (or null where null is allowed).
    assert (
        value is None
        or original is None
        or _kind(value) == _kind(original)
        or (_kind(original) == "list" and isinstance(value, str))
        # `auto` keys take the concrete value auto stands for (score.smooth_sigma: a
        # number, train.resident_store: a bool)
        or (original == "auto" and _kind(value) in ("number", "bool"))
    ), f"{'.'.join(key)} accepted {value!r}"


@pytest.mark.parametrize("key", [".".join(k) for k in LEAVES])
def test_every_key_rejects_a_mapping(key):
    """Deterministic companion: a mapping where a scalar or list belongs is always wrong."""
    parts = key.split(".")
    if isinstance(ORIGINAL[tuple(parts)], dict):
        pytest.skip("this key holds a mapping")
    data = copy.deepcopy(BASE)
    node = data
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = {"unexpected": 1}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(ParamsError) as info:
            check_model_params(load_params(path), "all")
    assert "\n" not in str(info.value)
    assert any(".".join(parts[:n]) in str(info.value) for n in range(len(parts), 0, -1))
