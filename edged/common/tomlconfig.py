"""TOML files into typed, frozen dataclass trees (edged's Config, originctl's ServeConfig and ClientConfig).

`build(cls, data)` checks every key against the dataclass fields (unknown keys are refused, missing
required ones named) and every value against the field's annotation: bool, int, float (an int is
accepted), str, `X | None`, unions (the first member that accepts the value wins), `tuple[X, ...]`
from a list, `dict[str, X]` from a table, and nested dataclasses from tables. Errors are
ConfigValueError with the dotted key path (`rtmp.listen`, `node.prefixes[2]`); each daemon re-raises
them as its own ConfigError.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigValueError(ValueError):
    """A configuration value is wrong; `key` names it, `message` says how."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def read_toml(path: str | Path, key: str) -> dict[str, Any]:
    """The parsed file; ConfigValueError naming `key` (the flag or variable that named the file) otherwise."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigValueError(key, f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigValueError(key, f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigValueError(key, f"{path}: {exc.strerror}") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, tables merged key by key (flags over a file)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """An instance of the dataclass `cls` from a TOML table; ConfigValueError names the offending key."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in fields}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        path = f"{prefix}.{k}" if prefix else k
        if k not in names:
            raise ConfigValueError(path, "unknown key")
        kwargs[k] = convert(hints[k], v, path)
    for f in fields:
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigValueError(f"{prefix}.{f.name}" if prefix else f.name, "missing (required)")
    return cls(**kwargs)


def convert(tp: Any, value: Any, key: str) -> Any:
    """`value` checked against (and converted to) the annotation `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigValueError(key, "expected a table")
        return build(typing.cast(type, tp), value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        first: ConfigValueError | None = None
        for alt in (a for a in args if a is not type(None)):  # the first member that accepts the value wins
            try:
                return convert(alt, value, key)
            except ConfigValueError as exc:
                first = first or exc
        assert first is not None
        raise first
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigValueError(key, "expected a table")
        return {str(k): convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigValueError(key, "expected a list")
        return tuple(convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigValueError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigValueError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigValueError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigValueError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigValueError(key, f"unsupported type {tp!r}")  # pragma: no cover - a bug in the caller's tree
