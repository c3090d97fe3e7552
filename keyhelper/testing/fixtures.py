"""Shared pytest fixtures: an isolated environment for every test, and a config file writer.

Load it from your top-level ``conftest.py``::

    pytest_plugins = ["keyhelper.testing.fixtures"]

or, from a conftest.py below the rootdir (where pytest refuses ``pytest_plugins``), import
the fixtures by name: ``from keyhelper.testing.fixtures import isolated_env, write_config``.

``isolated_env`` is autouse: every test runs with its own HOME, XDG directories and cache
directory under ``tmp_path``, and without the developer's keyhelper, Vault, Claude Code or
Anthropic variables, so no test reads real credentials or writes real files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Variables that would let the developer's own setup reach a test.
CLEARED_PREFIXES = ("KEYHELPER_", "VAULT_", "CLAUDE_CODE_", "AI_AGENT", "XDG_", "ANTHROPIC_")


class WriteConfig:
    """Writes the default config file (or another path) and returns its path."""

    def __init__(self, default: Path):
        self.default = default

    def __call__(self, text: str, path: Path | None = None) -> Path:
        target = path or self.default
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh HOME (returned), XDG directories and KEYHELPER_CACHE_DIR under tmp_path."""
    for name in list(os.environ):
        if name.startswith(CLEARED_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("KEYHELPER_CACHE_DIR", str(tmp_path / "cache"))
    # In-process runs must not lower this test process's core limit for good (the hard limit
    # cannot be raised again): the console script in a subprocess is what tests it. Named by
    # string: the kit sits below the entry points and must not import them.
    monkeypatch.setattr("keyhelper.app.no_core_dumps", lambda: None)
    yield home


@pytest.fixture
def cache_dir(isolated_env: Path) -> Path:
    """The test's cache directory (KEYHELPER_CACHE_DIR; not created)."""
    return Path(os.environ["KEYHELPER_CACHE_DIR"])


@pytest.fixture
def write_config(isolated_env: Path) -> WriteConfig:
    """Writes ``~/.config/keyhelper/config.toml`` (or the path given) in the isolated HOME."""
    return WriteConfig(isolated_env / ".config" / "keyhelper" / "config.toml")
