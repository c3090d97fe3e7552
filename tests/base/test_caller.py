"""The caller walk (keyhelper.base.caller): which Claude Code process runs us, by pid and
start time, or no identity at all (then the plain TTL).

The rules over fake process tables (every shape the OSes produce, and every way a walk can
go wrong), then the real thing on Linux: bash, dash and zsh between a parent process and
the helper, read through /proc. macOS cannot run here (docs/portability.md); Windows runs
under wine (tests/portability).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from keyhelper.base import caller, proc_linux, proc_windows

Table = dict[int, tuple[str, int, int]]
CLAUDE_ENV = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "cli"}


def lookup_in(table: Table) -> Callable[[int], tuple[str, int, int] | None]:
    return table.get


def chain(*names: str, first_pid: int = 100) -> Table:
    """A process chain, the first name the oldest; the last one is us."""
    table: Table = {}
    for i, name in enumerate(names):
        pid = first_pid + 100 * i
        table[pid] = (name, pid - 100 if i else 1, 10 * (i + 1))
    return table


def me(table: Table) -> int:
    return max(table)


@pytest.mark.parametrize("names", [
    ("claude", "python3"),  # bash 3.2 and zsh exec a lone command: Claude is the parent
    ("claude", "sh", "python3"),  # dash forks, and bash for "cmd 2>/dev/null" or "a; b"
    ("node", "bash", "env", "timeout", "python3"),
    ("claude", "sh", "uv", "python3"),  # uvx keyhelper: uv runs the tool as its child
    ("claude", "sh", "sh", "sh", "sh", "sh", "sh", "sh", "python3"),  # 7 shells: in reach
])
def test_the_caller_is_the_nearest_ancestor_that_is_not_a_shell(names: tuple[str, ...]) -> None:
    table = chain(*names)
    assert caller.walk(lookup_in(table), me(table)) == "100-10"


def test_on_windows_cmd_and_the_launchers_are_stepped_past() -> None:
    """claude.exe -> cmd.exe /d /s /c -> keyhelper.exe (console-script launcher) -> a venv's
    python.exe (it starts the base interpreter) -> python.exe (us)."""
    table = chain("claude", "cmd", "keyhelper", "python", "python")
    skip = caller.SHELLS | proc_windows.SKIP
    assert caller.walk(lookup_in(table), me(table), skip) == "100-10"
    assert caller.walk(lookup_in(chain("node", "cmd", "python")), 300, skip) == "100-10"


def test_a_parent_started_after_its_child_is_pid_reuse_and_gives_no_identity() -> None:
    """Windows keeps a dead parent's pid in InheritedFromUniqueProcessId; another process
    may have it now. Claude exited and "claude" is someone else: no identity."""
    table = chain("claude", "sh", "python3")
    table[100] = ("explorer", 4, 25)  # started after the shell (20)
    assert caller.walk(lookup_in(table), me(table)) is None
    table[200] = ("sh", 100, 35)  # and the shell after us (30)
    assert caller.walk(lookup_in(table), me(table)) is None


def test_the_same_start_tick_is_not_reuse() -> None:
    """Linux counts start times in clock ticks: a parent and a fast child can share one."""
    table = {100: ("claude", 1, 10), 200: ("sh", 100, 10), 300: ("python3", 200, 10)}
    assert caller.walk(lookup_in(table), 300) == "100-10"


@pytest.mark.parametrize("vanished", [300, 200, 100])
def test_a_process_that_vanished_gives_no_identity(vanished: int) -> None:
    table = chain("claude", "sh", "python3")
    del table[vanished]
    assert caller.walk(lookup_in(table), 300) is None


def test_a_loop_gives_no_identity() -> None:
    table = {200: ("sh", 300, 10), 300: ("python3", 200, 10)}
    assert caller.walk(lookup_in(table), 300) is None
    table = {100: ("sh", 200, 10), 200: ("sh", 100, 10), 300: ("python3", 200, 10)}
    assert caller.walk(lookup_in(table), 300) is None
    table = {300: ("python3", 300, 10)}  # its own parent
    assert caller.walk(lookup_in(table), 300) is None


def test_past_the_depth_bound_or_at_init_gives_no_identity() -> None:
    table = chain("claude", *["sh"] * caller.MAX_DEPTH, "python3")
    assert caller.walk(lookup_in(table), me(table)) is None
    assert caller.walk(lookup_in(chain("sh", "python3")), 200) is None  # init's child shell
    table = {300: ("python3", 0, 10)}  # Windows: the idle process (0) as parent
    assert caller.walk(lookup_in(table), 300) is None


def test_only_claude_codes_environment_starts_a_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(caller, "platform_lookup", fail)
    assert caller.caller_id({}) is None
    assert caller.caller_id({"AI_AGENT": "claude-code_2"}) is None
    assert caller.caller_id({"CLAUDE_CODE_ENTRYPOINT": "cli"}) is None
    assert caller.caller_id({"AI_AGENT": "cursor", "CLAUDE_CODE_ENTRYPOINT": "cli"}) is None


def test_an_os_without_a_lookup_gives_no_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "freebsd14")
    assert caller.platform_lookup() is None
    assert caller.caller_id(CLAUDE_ENV) is None


@pytest.mark.parametrize(("stat", "parsed"), [
    ("42 (claude) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 11 0 98765 1 2 3",
     ("claude", 7, 98765)),
    ("42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 11 0 5 1 2 3",
     ("a) b (c)", 7, 5)),  # the name may hold spaces and parentheses
    ("42 (claude S 7", None), ("42 (claude) S 7 x", None), ("", None),
])
def test_proc_stat_parsing(stat: str, parsed: tuple[str, int, int] | None) -> None:
    assert proc_linux.parse_stat(stat) == parsed


# --- real shells on Linux ---------------------------------------------------------------

# The parent ("Claude Code") prints its pid and start time, then runs the command; the
# helper prints the caller it finds and its own parent's name.
PARENT = ("import os, subprocess, sys\n"
          "from keyhelper.base import proc_linux\n"
          "print(f'{os.getpid()}-{proc_linux.lookup(os.getpid())[2]}', flush=True)\n"
          "sys.exit(subprocess.call(sys.argv[1:]))\n")
HELPER = ("import os\n"
          "from keyhelper.base import caller, proc_linux\n"
          "print(caller.caller_id(os.environ), proc_linux.lookup(os.getppid())[0])\n")


def shell_chain(shell: str, command: str) -> tuple[str, str, str]:
    env = {**os.environ, **CLAUDE_ENV, "PY": sys.executable, "HELPER": HELPER}
    run = subprocess.run([sys.executable, "-c", PARENT, shell, "-c", command], env=env,
                         capture_output=True, text=True, timeout=30, check=True)
    claude, found = run.stdout.splitlines()
    identity, parent_name = found.split()
    return claude, identity, parent_name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("shell", ["bash", "dash", "zsh"])
@pytest.mark.parametrize("command", [
    '"$PY" -c "$HELPER"',  # what apiKeyHelper usually is: one command
    '"$PY" -c "$HELPER" 2>/dev/null',  # a redirection: bash forks
    'true; "$PY" -c "$HELPER"',  # a list: everyone forks but zsh for the last command
    'sh -c \'"$PY" -c "$HELPER"; true\'',  # a shell in a shell
    'env timeout 20 "$PY" -c "$HELPER"',
])
def test_real_shells_between_the_caller_and_the_helper(shell: str, command: str) -> None:
    claude, identity, parent_name = shell_chain(shell, command)
    assert identity == claude
    assert parent_name.startswith(("python", "bash", "dash", "zsh", "sh", "timeout"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_real_shells_do_fork_so_the_walk_steps_past_them() -> None:
    """The helper's parent is a shell in the cases that matter (the walk is needed), and
    Claude itself where the shell execs the command."""
    assert shell_chain("dash", 'true; "$PY" -c "$HELPER"')[2] == "dash"
    assert shell_chain("bash", '"$PY" -c "$HELPER" 2>/dev/null')[2] == "bash"
    assert shell_chain("bash", '"$PY" -c "$HELPER"')[2].startswith("python")  # exec


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs another OS's calls to fail")
@pytest.mark.parametrize(("platform", "module"), [("darwin", "keyhelper.base.proc_macos"),
                                                  ("win32", "keyhelper.base.proc_windows")])
def test_another_oss_calls_failing_give_no_identity(platform: str, module: str) -> None:
    """The macOS and Windows lookups, run here, fail for real (no libSystem, no kernel32):
    no identity, no exception, the plain TTL. Chosen by sys.platform, in a fresh process."""
    code = ("import os, sys; sys.platform = sys.argv[1]\n"
            "from keyhelper.base import caller\n"
            "lookup, _ = caller.platform_lookup()\n"
            "print(caller.caller_id(os.environ), lookup(os.getpid()), lookup.__module__)\n")
    run = subprocess.run([sys.executable, "-c", code, platform],
                         env={**os.environ, **CLAUDE_ENV}, capture_output=True, text=True,
                         timeout=30)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"None None {module}\n", "")
