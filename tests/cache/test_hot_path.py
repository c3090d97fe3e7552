"""The cache-hit path imports nothing it does not need (guarded by modules, not by timing).

The real console script runs in a subprocess with a ``sitecustomize`` on PYTHONPATH that
writes ``sys.modules`` to a file at exit. The same hook runs a bare ``python -c pass`` of
the same interpreter, and the difference is what keyhelper's hit loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from countingcmd import CountingCommand, counting_command
from helpers import SCRIPT, keyhelper, loaded
from hit_path import FORBIDDEN, on_the_hit_path


def hit_modules(hook: dict[str, str], args: list[str], source: CountingCommand) -> set[str]:
    warm = keyhelper(*args)
    assert (warm.returncode, warm.stdout, warm.stderr) == (0, source.key + "\n", "")
    assert source.calls == 1
    baseline = loaded(hook, [sys.executable, "-c", "pass"])
    assert "sitecustomize" in baseline  # the hook really ran
    modules = loaded(hook, [SCRIPT, *args])
    assert source.calls == 1  # a hit: the backend did not run again
    return modules - baseline


@pytest.mark.parametrize("args", [["--backend", "vault"], ["-b", "vault", "-b", "env"],
                                  ["--profile", "work"], []])
def test_a_hit_imports_only_the_lean_path(write_config, tmp_path: Path, hook: dict[str, str],
                                          args: list[str]) -> None:
    source = counting_command(tmp_path)
    write_config('chain = ["vault"]\n[profiles.work]\nchain = ["vault"]\n'
                 + source.toml("vault"))
    extra = hit_modules(hook, args, source)
    assert not extra & FORBIDDEN, sorted(extra & FORBIDDEN)
    assert {"keyhelper", "keyhelper.console", "keyhelper.cachepolicy"} <= extra
    # Nothing else of keyhelper's, and only a handful of small stdlib modules besides.
    assert all(on_the_hit_path(m) for m in extra if m.startswith("keyhelper")), sorted(extra)
    assert len({m for m in extra if not m.startswith("keyhelper")}) <= 3, sorted(extra)


CLAUDE_ENV = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "cli"}
# Runs the command as a child of its own, so that each run has a distinct caller (Claude Code
# process) for rotation detection; -S keeps the hook (and site) out of this middle process.
VIA_PARENT = [sys.executable, "-S", "-c",
              "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]


def test_a_hit_called_by_claude_code_stays_lean(write_config, tmp_path: Path,
                                                hook: dict[str, str], cache_dir: Path) -> None:
    """Under Claude Code the hit also identifies its caller (/proc) and records what it served
    (rotation detection): still nothing forbidden."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    warm = keyhelper("-b", "vault", env=CLAUDE_ENV)
    assert (warm.returncode, warm.stdout) == (0, source.key + "\n")
    env = {**hook, **CLAUDE_ENV}
    baseline = loaded(env, [sys.executable, "-c", "pass"])
    extra = loaded(env, [*VIA_PARENT, SCRIPT, "-b", "vault"]) - baseline
    assert source.calls == 1  # a hit, not a refetch
    assert "keyhelper.base.caller" in extra  # the Claude Code path really ran
    if sys.platform.startswith("linux"):  # /proc: no native code (Windows: tests/portability)
        assert {"keyhelper.base.proc_linux"} <= extra and "_ctypes" not in extra
    assert len(list(cache_dir.glob("*.served"))) == 2  # one per caller
    assert not extra & FORBIDDEN, sorted(extra & FORBIDDEN)
    assert all(on_the_hit_path(m) for m in extra if m.startswith("keyhelper")), sorted(extra)


def test_a_miss_does_load_the_core(write_config, tmp_path: Path, hook: dict[str, str]) -> None:
    """The guard above can fail: the same measurement sees the full path on a miss."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    baseline = loaded(hook, [sys.executable, "-c", "pass"])
    extra = loaded(hook, [SCRIPT, "--backend", "vault"]) - baseline
    assert source.calls == 1
    assert {"keyhelper.resolver", "tomllib", "importlib.metadata"} <= extra
    assert "click" not in extra  # a miss on the get path does not need the CLI either
