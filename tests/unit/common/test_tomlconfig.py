"""The typed TOML loader both daemons build their config trees with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edged.common.tomlconfig import ConfigValueError, build, merge, read_toml


@dataclass(frozen=True)
class Inner:
    ratio: float = 1.0
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outer:
    required: str
    flag: bool = False
    count: int = 0
    either: bool | str = "auto"
    maybe: float | None = None
    table: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def test_builds_every_kind_of_field() -> None:
    got = build(Outer, {"required": "x", "flag": True, "count": 3, "either": False, "maybe": 2,
                        "table": {"a": 1}, "inner": {"ratio": 2, "names": ["n"]}})
    assert got == Outer("x", True, 3, False, 2.0, {"a": 1}, Inner(2.0, ("n",)))
    assert isinstance(got.maybe, float) and isinstance(got.inner.ratio, float)


@pytest.mark.parametrize(("data", "key", "message"), [
    ({}, "required", "missing (required)"),
    ({"required": "x", "nope": 1}, "nope", "unknown key"),
    ({"required": "x", "count": True}, "count", "expected an integer, got True"),
    ({"required": "x", "flag": "yes"}, "flag", "expected true or false, got 'yes'"),
    ({"required": "x", "inner": {"names": ["a", 2]}}, "inner.names[1]", "expected a string, got 2"),
    ({"required": "x", "inner": {"bogus": 1}}, "inner.bogus", "unknown key"),
    ({"required": "x", "inner": 3}, "inner", "expected a table"),
    ({"required": "x", "table": {"a": "b"}}, "table.a", "expected an integer, got 'b'"),
])
def test_errors_name_the_key(data: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigValueError) as exc:
        build(Outer, data)
    assert (exc.value.key, exc.value.message) == (key, message)


def test_read_toml_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError) as missing:
        read_toml(tmp_path / "absent.toml", "--config")
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1\n")
    with pytest.raises(ConfigValueError) as invalid:
        read_toml(bad, "--config")
    assert missing.value.key == invalid.value.key == "--config"
    assert missing.value.message.startswith("no such file:") and "not valid TOML" in invalid.value.message


def test_merge_overlays_tables_key_by_key() -> None:
    assert merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}, "c": 4}) == {"a": {"x": 1, "y": 3}, "b": 1, "c": 4}
