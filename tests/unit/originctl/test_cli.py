"""The operator CLI without a controller: usage errors, credential lookup, exit codes, rendering."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from originctl import cli, render
from originctl.model import Event, GpuStatus, Node, NodeInfo, NodeState, Report, report_from_dict, to_jsonable

DATA = Path(__file__).resolve().parents[2] / "data" / "nvml"
TOKEN = "s3cret." + "ab" * 16


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ORIGINCTL_TOKEN", "ORIGINCTL_ORIGIN", "ORIGINCTL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # no ./var/origin/admin.token here


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [["nodes", "-o", "yaml"], ["bogus"], [], ["node"], ["token", "create", "--ttl", "soon"],
                                  ["events", "--limit", "x"], ["channel"], ["channel", "create"],
                                  ["route", "news"], ["route", "news", "--client-ip", "1.2.3.4", "--location", "91,0"],
                                  ["streams", "-o", "yaml"], ["drain", "edge-1", "--wait", "soon"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_token_is_a_usage_error_that_says_where_to_get_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["nodes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("originctl: no admin token: pass --token, set ORIGINCTL_TOKEN")
    assert "admin.token" in err and err.count("\n") == 1


def test_malformed_token_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--token", "nope", "nodes"]) == 2
    assert "SECRET.FINGERPRINT" in capsys.readouterr().err


def test_unreachable_controller_exits_1_and_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert cli.main(["--origin", f"127.0.0.1:{port}", "--token", TOKEN, "nodes"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"originctl: cannot reach the controller at 127.0.0.1:{port}") and err.count("\n") == 1


def test_token_and_origin_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = tmp_path / "xdg" / "originctl" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('origin = "10.0.0.1:1"\ntoken = "from-file"\n')
    args = cli.build_parser().parse_args(["nodes"])
    assert (cli.resolve_token(args), cli.resolve_origin(args)) == ("from-file", "10.0.0.1:1")
    monkeypatch.setenv("ORIGINCTL_TOKEN", "from-env")
    monkeypatch.setenv("ORIGINCTL_ORIGIN", "10.0.0.2:2")
    assert (cli.resolve_token(args), cli.resolve_origin(args)) == ("from-env", "10.0.0.2:2")
    args = cli.build_parser().parse_args(["--token", "from-flag", "--origin", "10.0.0.3:3", "nodes"])
    assert (cli.resolve_token(args), cli.resolve_origin(args)) == ("from-flag", "10.0.0.3:3")


def test_default_token_file_of_a_local_controller(tmp_path: Path) -> None:
    (tmp_path / "var" / "origin").mkdir(parents=True)
    (tmp_path / "var" / "origin" / "admin.token").write_text(TOKEN + "\n")
    assert cli.resolve_token(cli.build_parser().parse_args(["nodes"])) == TOKEN


def test_bad_config_file_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "xdg" / "originctl" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("tokn = 'x'\n")
    assert cli.main(["nodes"]) == 2
    assert "tokn: unknown key" in capsys.readouterr().err


def test_serve_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "o.toml").write_text('grpc = "nowhere"\n')
    assert cli.main(["serve", "--config", str(tmp_path / "o.toml")]) == 2
    assert "config: grpc: expected HOST:PORT" in capsys.readouterr().err
    (tmp_path / "o.toml").write_text('[health]\nrecover_reports = 0\n')
    assert cli.main(["serve", "--config", str(tmp_path / "o.toml")]) == 2
    assert "health.recover_reports" in capsys.readouterr().err
    (tmp_path / "o.toml").write_text('trusted_proxies = ["127.0.0.1/32", "proxy.example"]\n')
    assert cli.main(["serve", "--config", str(tmp_path / "o.toml")]) == 2
    assert "config: trusted_proxies[1]: not an address or CIDR" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1.5h", 5400),
                                           ("7d", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert cli._duration(text) == seconds


def sample_node(name: str = "t4_transcoding.json", state: NodeState = NodeState.HEALTHY) -> Node:
    report = report_from_dict(json.loads((DATA / name).read_text())["reports"][0])
    return Node(id="nd-0a1b2c3d", info=NodeInfo(name="edge-ams-1", site="ams", version="0.1.0", http_port=8080),
                state=state, state_reason="reporting; 1 GPU(s) fine", state_since_unix_ms=1_000,
                last_report_unix_ms=61_000, connected=True, peer="ipv4:192.0.2.7:50000", last_report=report)


def test_tables_for_people() -> None:
    nodes = [sample_node(), sample_node("no_gpu.json", NodeState.LOST)]
    out = render.nodes_table(nodes, now_ms=63_000)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SITE", "STATE", "LAST-REPORT", "STREAMS", "VIEWERS", "GPU"]
    assert "T4 38%" in lines[1] and "2s" in lines[1] and "healthy" in lines[1]
    assert "no GPU" in lines[2] and "lost" in lines[2]
    wide = render.nodes_table(nodes, now_ms=63_000, wide=True)
    assert "1.9 Gbit/s" in wide and "71%" in wide and "ipv4:192.0.2.7:50000" in wide


def test_node_detail_shows_gpu_figures() -> None:
    text = render.node_detail(sample_node(), now_ms=63_000)
    assert "Tesla T4" in text and "GPU-5a3f4d2e" in text
    assert "6 sessions, 60 fps, 4.2 ms" in text and "h264 29%" in text and "throttle: sw-power-cap" in text
    text = render.node_detail(sample_node("nvml_failure.json"), now_ms=63_000)
    assert "throttle: none" in text


def test_events_and_top() -> None:
    ev = Event(id=1, time_unix_ms=1_000, node_id="nd-1", kind="state", from_state=NodeState.HEALTHY,
               to_state=NodeState.LOST, reason="no report for 6.0 s")
    assert "healthy -> lost" in render.events_table([ev])
    screen = render.top_screen([sample_node(), sample_node("2xt4_one_slowdown.json")], "127.0.0.1:50051", 63_000)
    assert "nodes 2: 2 healthy" in screen and screen.count("T4") == 3


def test_json_form_is_plain_data() -> None:
    d = to_jsonable(sample_node())
    assert d["state"] == "healthy" and d["last_report"]["gpus"][0]["name"] == "Tesla T4"
    assert d["last_report"]["gpu_status"] == GpuStatus.OK.value
    assert json.loads(json.dumps(d)) == d
    assert to_jsonable(Report())["gpus"] == []
