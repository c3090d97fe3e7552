"""Every test runs with its own HOME, config, cache and runtime directories, and without the
developer's keyhelper, Vault or Claude Code variables, so no test touches real files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SITECUSTOMIZE, WriteConfig

# Fixture modules for the real servers, each owned by its backend's tests.
pytest_plugins = ["fixtures_openbao", "fixtures_keyring"]

CLEARED_PREFIXES = ("KEYHELPER_", "VAULT_", "CLAUDE_CODE_", "AI_AGENT", "XDG_",
                    "ANTHROPIC_")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
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
    # cannot be raised again): the console script in a subprocess is what tests it.
    monkeypatch.setattr("keyhelper.app.no_core_dumps", lambda: None)
    yield home


@pytest.fixture
def cache_dir(isolated_env: Path) -> Path:
    return Path(os.environ["KEYHELPER_CACHE_DIR"])


@pytest.fixture
def write_config(isolated_env: Path) -> WriteConfig:
    return WriteConfig(isolated_env / ".config" / "keyhelper" / "config.toml")


@pytest.fixture
def hook(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "hook"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(site), "MODULES_OUT": str(tmp_path / "modules.txt")}
