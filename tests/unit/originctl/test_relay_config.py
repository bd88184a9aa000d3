"""The controller's [relay] keys: defaults, and errors that name the key (exit 2 from `originctl serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from originctl import cli
from originctl.config import load_serve


def test_defaults(tmp_path: Path) -> None:
    cfg = load_serve(None, {})
    assert (cfg.relay.max_children, cfg.relay.max_depth) == (20, 3)
    (tmp_path / "o.toml").write_text("[relay]\nmax_children = 5\nmax_depth = 2\n")
    cfg = load_serve(str(tmp_path / "o.toml"), {})
    assert (cfg.relay.max_children, cfg.relay.max_depth) == (5, 2)


@pytest.mark.parametrize("text, key", [("[relay]\nmax_children = 0\n", "relay.max_children"),
                                       ("[relay]\nmax_depth = 4\n", "relay.max_depth"),
                                       ("[relay]\nfanout = 3\n", "relay.fanout")])
def test_bad_relay_keys_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str) -> None:
    (tmp_path / "o.toml").write_text(text)
    assert cli.main(["serve", "--config", str(tmp_path / "o.toml")]) == 2
    assert f"config: {key}" in capsys.readouterr().err
