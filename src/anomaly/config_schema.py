"""Turn plain YAML data into typed dataclasses, with one-line errors that name the key.

A hand-rolled validator rather than pydantic: the schema is a handful of
dataclasses, and the errors must read ``params.yaml: train.epochs must be an
integer, got 'ten' (str)`` so a user can fix the file without reading code.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ParamsError

T = TypeVar("T")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def coerce(tp: Any, value: Any, where: str, source: str = "params.yaml") -> Any:
    """Check ``value`` against type ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(option, value, where, source)
            except ParamsError as exc:
                if "finite number" in str(exc):  # the right type, a wrong value: say so
                    raise
                errors.append(exc)
        allowed = " or ".join(_type_name(o) if o is not type(None) else "null" for o in options)
        raise ParamsError(f"{source}: {where} must be {allowed}, got {_describe(value)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ParamsError(f"{source}: {where} must be {_type_name(tp)}, got {_describe(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{source}: {where} must be true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{source}: {where} must be an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{source}: {where} must be a number, got {_describe(value)}")
        if not math.isfinite(value):
            # NaN compares false with everything: a NaN threshold calls every image good.
            raise ParamsError(f"{source}: {where} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{source}: {where} must be a string, got {_describe(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{source}: {where} must be a list, got {_describe(value)}")
        (item_type, *_) = get_args(tp) or (Any,)
        return [coerce(item_type, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: {where} must be a mapping, got {_describe(value)}")
        _, value_type = get_args(tp) or (str, Any)
        return {str(k): coerce(value_type, v, f"{where}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, source)
    raise TypeError(f"unsupported schema type {tp!r} at {where}")


def build(cls: type[T], data: Any, where: str = "", source: str = "params.yaml") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are errors."""
    label = where or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: {label} must be a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - set(fields))
    prefix = f"{where}." if where else ""
    renamed = getattr(cls, "RENAMED", {})
    for old in unknown:
        if old in renamed:
            raise ParamsError(f"{source}: {prefix}{old} is now {prefix}{renamed[old]}")
    if unknown:
        raise ParamsError(
            f"{source}: unknown key {prefix}{unknown[0]} (allowed: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, field in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = coerce(hints[name], data[name], key, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{source}: missing required key {key}")
    _check_signs(cls, kwargs, where, source)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(where or "", source)
    return obj


def _check_signs(cls: type, values: dict[str, Any], where: str, source: str) -> None:
    """The range rule every number follows unless its class says otherwise.

    Integers are counts, sizes or widths: at least 1, or at least 0 for the names in
    ``cls.ZERO_OK`` (a seed, extra blocks). Floats are rates, weights and fractions: at
    least 0, except the names in ``cls.SIGNED`` (a manual threshold, a mean shift), and
    above 0 for the names in ``cls.POSITIVE`` (a scale that divides).
    So a negative or zero width is refused here, with its key, instead of failing deep
    inside torch; each class's ``validate`` adds the upper bounds it knows.
    """
    zero_ok = getattr(cls, "ZERO_OK", ())
    signed = getattr(cls, "SIGNED", ())
    positive = getattr(cls, "POSITIVE", ())
    for name, value in values.items():
        if name in signed or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        key = f"{where}.{name}" if where else name
        if isinstance(value, int) and name not in zero_ok and value < 1:
            raise ParamsError(f"{source}: {key} must be >= 1, got {value}")
        if value < 0:
            raise ParamsError(f"{source}: {key} must be >= 0, got {value}")
        if name in positive and value <= 0:
            raise ParamsError(f"{source}: {key} must be > 0, got {value}")


def to_dict(obj: Any) -> Any:
    """Plain-data view of a (nested) dataclass, for checkpoints and logs."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def require(condition: bool, source: str, where: str, message: str) -> None:
    """Raise a ParamsError for a value that has the right type but a wrong range."""
    if not condition:
        raise ParamsError(f"{source}: {where} {message}")


__all__ = ["build", "coerce", "to_dict", "require"]
