"""Import boundaries, each checked in a fresh interpreter (sys.modules starts empty of our packages):

* no module of edged imports originctl (originctl imports edged.common, never the other way);
* edged.common imports neither gRPC, the generated edgenet code, originctl, nor the rest of edged;
* edged.agent.discovery and edged.agent.link import in either order (no import circle between them).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return sorted([package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")
                               if not m.name.endswith("__main__")])


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_no_module_of_edged_imports_originctl() -> None:
    modules = _modules("edged")
    assert "edged.agent.link" in modules and "edged.common.tomlconfig" in modules
    code = f"""
import importlib, json, sys
out = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    out[name] = sorted(m for m in sys.modules if m == "originctl" or m.startswith("originctl."))
print(json.dumps(out))
"""
    found = json.loads(_fresh(code))
    assert set(found) == set(modules)
    offenders = {name: mods for name, mods in found.items() if mods}
    assert offenders == {}, f"these edged modules pulled in originctl: {offenders}"


@pytest.mark.parametrize("module", _modules("edged.common"))
def test_edged_common_stands_alone(module: str) -> None:
    code = f"""
import importlib, json, sys
importlib.import_module({module!r})
print(json.dumps(sorted(sys.modules)))
"""
    loaded = json.loads(_fresh(code))
    forbidden = [m for m in loaded
                 if m.split(".")[0] in ("grpc", "edgenet", "originctl", "google")
                 or (m.startswith("edged.") and not m.startswith("edged.common"))]
    assert forbidden == [], f"{module} imports {forbidden}"


@pytest.mark.parametrize("order", [("edged.agent.discovery", "edged.agent.link"),
                                   ("edged.agent.link", "edged.agent.discovery")])
def test_discovery_and_link_import_in_either_order(order: tuple[str, str]) -> None:
    first, second = order
    out = json.loads(_fresh(f"import json, sys, {first}; was = {second!r} in sys.modules; import {second}; "
                            f"print(json.dumps([was, {second}.__name__]))"))
    assert out == [False, second]  # the first does not pull the second in at import time: no circle
