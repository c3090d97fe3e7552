"""What the contract layer and the env, command and file backends cost to import (issue 16):
none of the standard library's heavy modules, so that a miss through them pays only for what
it uses. Checked on ``sys.modules`` in a fresh ``python -I`` (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONTRACT = ["keyhelper.backend", "keyhelper.errors", "keyhelper.redact",
            "keyhelper_plugins.env", "keyhelper_plugins.command", "keyhelper_plugins.file"]
# Each costs 1-20 ms to import on a slow machine (with what it brings in); a call that needs
# one imports it then (subprocess when a command runs, logging when a line is written).
FORBIDDEN = {"dataclasses", "inspect", "typing", "logging", "re", "contextlib", "traceback",
             "enum", "threading", "json", "math", "subprocess", "signal", "collections",
             "collections.abc", "functools", "locale", "warnings", "tomllib", "importlib.metadata",
             "pathlib"}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two packages as a directory for sys.path: ``python -S`` does not run the editable
    install's finder, which itself loads re, enum, pathlib ... and would hide them."""
    root = tmp_path_factory.mktemp("path")
    (root / "keyhelper").symlink_to(ROOT / "keyhelper")
    (root / "keyhelper_plugins").symlink_to(ROOT / "plugins")
    return root


def loaded_after(packages: Path, code: str) -> dict[str, list[str]]:
    """The modules loaded by ``code`` in a fresh isolated interpreter without site, and
    those there before it ran (what the interpreter itself loads at start)."""
    probe = (f"import sys\nsys.path.insert(0, {str(packages)!r})\n"
             "before = sorted(sys.modules)\n" + code +
             "\nafter = sorted(sys.modules)\nimport json\n"
             "print(json.dumps({'before': before, 'after': after}))")
    run = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True,
                         check=True)
    found: dict[str, list[str]] = json.loads(run.stdout)
    return found


@pytest.mark.parametrize("module", CONTRACT)
def test_importing_the_contract_loads_nothing_heavy(packages: Path, module: str) -> None:
    found = loaded_after(packages, f"import {module}")
    heavy = FORBIDDEN & (set(found["after"]) - set(found["before"]))
    assert sorted(heavy) == []


def test_an_env_fetch_and_a_log_call_load_nothing_heavy(packages: Path) -> None:
    """Building a backend, fetching, and a debug line that is not shown import nothing."""
    found = loaded_after(
        packages,
        "import os, time\n"
        "from keyhelper.backend import Context, get_logger\n"
        "from keyhelper.redact import setup_logging\n"
        "from keyhelper_plugins.env import EnvBackend\n"
        "setup_logging(False)\n"
        "ctx = Context(None, {'K': 'sk-x'}, time.monotonic() + 5, '')\n"
        "backend = EnvBackend('env', EnvBackend.validate({'var': 'K'}, source='s', key='k'),"
        " ctx)\n"
        "assert backend.fetch().value == 'sk-x'\n"
        "get_logger('keyhelper.chain').debug('not shown %s', 1)\n")
    heavy = FORBIDDEN & (set(found["after"]) - set(found["before"]))
    assert sorted(heavy) == []


def test_a_command_fetch_loads_nothing_heavy(packages: Path) -> None:
    """The command backend runs its command without subprocess (which brings locale, re,
    enum, threading) where os.posix_spawn can."""
    found = loaded_after(
        packages,
        "import time\n"
        "from keyhelper.backend import Context\n"
        "from keyhelper_plugins.command import CommandBackend\n"
        "ctx = Context(None, {'PATH': '/usr/bin:/bin'}, time.monotonic() + 5, '')\n"
        "options = CommandBackend.validate({'command': ['echo', 'sk-x']}, source='s', key='k')\n"
        "assert CommandBackend('c', options, ctx).fetch().value == 'sk-x'\n")
    heavy = FORBIDDEN & (set(found["after"]) - set(found["before"]))
    assert sorted(heavy) == []
