"""A miss imports only what the chosen backends need (issue 16: a miss under 3x A).

The command `setup claude-code` writes (the site-less launcher, on a regular pip install of
its own: tests/support/regular_install.py) runs a miss on the env and the command path with
``-X importtime`` (a sitecustomize hook would not run without ``site``), and none of the
modules below may be imported. (importtime lists what ``import`` statements load: the
plugins themselves, loaded through importlib.import_module, are not listed; what they
import is.) Guarded by modules, not by timing: each costs ~0.3-15 ms to import on a small
machine (docs/performance.md).

A repeat run neither parses the config (its parse is kept: keyhelper.configfile.load_toml)
nor scans the entry points (keyhelper.registry.found); the first run of each does, which
shows that the measurement sees them.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest
from helpers import Run
from regular_install import ROOT, Install, make_install

KEY = "sk-ant-Miss_0123456789"
CONFIG = f'[backends.echo]\ntype = "command"\ncommand = ["/bin/echo", "{KEY}"]\n'

# What no miss on the env or command path imports, by the layer that keeps it out.
NOT_ON_A_MISS = [
    # The resolver layer (config, configfile, policy, registry, chain, stores, resolver,
    # cachepolicy/fetcher, base/failures): the TOML parser and the entry-point scan on a
    # repeat, and what they and its former imports bring in.
    ("resolver", {"tomllib", "importlib.metadata", "email", "zipfile", "csv", "json",
                  "datetime", "shlex", "pathlib", "tempfile", "shutil", "hashlib", "pickle",
                  "argparse", "click", "keyhelper.cli", "keyhelper.hooks",
                  # the caller walk, for rotation detection: with a cache only (these runs
                  # are --no-cache, as Claude Code's calls are not)
                  "keyhelper.base.caller"}),
    # The contract layer (backend, errors, redact, app) and the env and command plugins:
    # plain classes, the lazy logger (keyhelper.redact.get_logger), traceback when printed,
    # the command run through os.posix_spawn; the hooks' shapes for aws_credentials only.
    ("contract", {"dataclasses", "inspect", "ast", "dis", "tokenize", "linecache", "typing",
                  "logging", "traceback", "threading", "weakref", "string", "textwrap", "re",
                  "contextlib", "enum", "collections", "functools", "warnings", "importlib",
                  "math", "copy", "locale", "subprocess", "keyhelper.base.shapes",
                  "keyhelper.base.jsontext"}),
]
# The env backend runs no process.
NOT_ON_AN_ENV_MISS = {"subprocess"}


@pytest.fixture(scope="session")
def regular(tmp_path_factory: pytest.TempPathFactory) -> Install:
    return make_install(tmp_path_factory.mktemp("regular-miss"))


def imported(install: Install, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a run of the launcher imported; it must print the key and nothing else."""
    proc = subprocess.run([install.python, "-X", "importtime", "-I", "-S",
                           str(install.launcher), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})
    lines = proc.stderr.splitlines()
    timing = [line for line in lines if line.startswith("import time:")]
    assert Run(proc.returncode, proc.stdout, "\n".join(
        line for line in lines if line not in timing)) == Run(0, KEY + "\n", "")
    return {line.split("|")[-1].strip() for line in timing if line.count("|") == 2} - {
        "imported package"}


def forbidden() -> set[str]:
    return set().union(*(modules for _, modules in NOT_ON_A_MISS))


def test_an_env_miss_imports_none_of_them(regular: Install) -> None:
    args = ("--no-cache", "--backend", "env")
    env = {"KEYHELPER_API_KEY": KEY}
    first = imported(regular, *args, env=env)
    assert "importlib.metadata" in first  # the first run scans, and the probe sees it
    again = imported(regular, *args, env=env)
    assert "keyhelper.resolver" in again  # the full path ran
    assert sorted(again & (forbidden() | NOT_ON_AN_ENV_MISS)) == []


def test_a_command_miss_imports_none_of_them(regular: Install, write_config) -> None:
    args = ("--no-cache", "--backend", "echo")
    write_config(CONFIG)
    first = imported(regular, *args)
    assert {"tomllib", "importlib.metadata"} <= first  # parsed and scanned once
    again = imported(regular, *args)
    assert "keyhelper.resolver" in again  # the full path ran (and the command: the key)
    assert sorted(again & forbidden()) == []
    write_config(CONFIG.replace("/bin/echo", "/bin//echo"))  # a new byte: parsed anew
    assert "tomllib" in imported(regular, *args)
    assert "tomllib" not in imported(regular, *args)


def test_the_launcher_and_the_console_script_share_the_index(regular: Install) -> None:
    """Both see one installation (the script's own directory on sys.path and bin/python3
    against bin/python do not count): taking turns does not scan the entry points again."""
    args = ("--no-cache", "--backend", "env")
    env = {"KEYHELPER_API_KEY": KEY}
    assert "importlib.metadata" in imported(regular, *args, env=env)  # the index made
    for _ in range(2):
        assert "importlib.metadata" not in imported(regular, *args, env=env)
        proc = subprocess.run([regular.script, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, **env, "PYTHONPROFILEIMPORTTIME": "1"})
        assert (proc.returncode, proc.stdout) == (0, KEY + "\n")
        assert "keyhelper.resolver" in proc.stderr  # the probe works here too
        assert [line for line in proc.stderr.splitlines()
                if line.split("|")[-1].strip() == "importlib.metadata"] == []


# --- the resolver layer's own files, whatever the layers below them import ----------------

RESOLVER_LAYER = ["config", "configfile", "policy", "registry", "chain", "stores", "resolver",
                  "hooks", "oskeyring", "cachepolicy/fetcher", "base/failures"]
# Imported at run time at the top of none of them (inside a function that needs it, or
# under TYPE_CHECKING, is fine).
NOT_AT_THE_TOP = {"dataclasses", "inspect", "typing", "re", "contextlib", "enum", "datetime",
                  "json", "tomllib", "logging", "shlex", "collections", "collections.abc",
                  "functools", "importlib.metadata", "traceback", "threading", "pathlib"}


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:  # module level; `if TYPE_CHECKING` skipped
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif isinstance(node, ast.Try):  # a fallback import
            names.update(top_level_imports_of(node.body))
    return names


def top_level_imports_of(body: list[ast.stmt]) -> set[str]:
    return {alias.name for node in body if isinstance(node, ast.Import)
            for alias in node.names} | {node.module for node in body
                                        if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("name", RESOLVER_LAYER)
def test_the_resolver_layer_imports_them_only_where_needed(name: str) -> None:
    path = ROOT / "keyhelper" / f"{name}.py"
    assert sorted(top_level_imports(path) & NOT_AT_THE_TOP) == []
