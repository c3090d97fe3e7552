"""Every test runs with its own HOME, config, cache and runtime directories, and without the
developer's keyhelper, Vault or Claude Code variables, so no test touches real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = shutil.which("keyhelper", path=os.path.dirname(sys.executable)) or "keyhelper"

CLEARED_PREFIXES = ("KEYHELPER_", "VAULT_", "CLAUDE_CODE_", "AI_AGENT", "XDG_",
                    "ANTHROPIC_")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


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
    yield home


@pytest.fixture
def cache_dir(isolated_env: Path) -> Path:
    return Path(os.environ["KEYHELPER_CACHE_DIR"])


@pytest.fixture
def write_config(isolated_env: Path) -> "WriteConfig":
    return WriteConfig(isolated_env / ".config" / "keyhelper" / "config.toml")


class WriteConfig:
    """Writes the default config file (or another path) and returns its path."""

    def __init__(self, default: Path):
        self.default = default

    def __call__(self, text: str, path: Path | None = None) -> Path:
        target = path or self.default
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target


def keyhelper(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30,
              input_text: str | None = None, cwd: str | None = None) -> Run:
    """Run the real console script. Its stdin is an open pipe that is never written or
    closed (as Claude Code does), unless ``input_text`` is given."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen([SCRIPT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full_env, text=True, cwd=cwd)
    try:
        if input_text is not None:
            out, err = proc.communicate(input_text, timeout=timeout)
        else:
            # Read to EOF without closing stdin: a helper that reads stdin hangs here.
            out, err = _communicate_keep_stdin(proc, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdin:
            proc.stdin.close()
    return Run(proc.wait(), out, err)


def _communicate_keep_stdin(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    import threading

    result: dict[str, str] = {}

    def drain(name: str, stream: object) -> None:
        result[name] = stream.read()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            proc.kill()
            raise AssertionError(f"keyhelper did not finish within {timeout} s (reading stdin?)")
    proc.wait(timeout)
    return result.get("out", ""), result.get("err", "")
