"""How the command backend starts its command (issue 16: os.posix_spawn instead of subprocess,
which costs more to import than an empty interpreter's start): as subprocess did, no
descriptor of keyhelper's is inherited, SIGPIPE is back to its default, $PATH is searched in
the command's own environment, and a directory that cannot run it does not hide one that can."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cache_entry import wait_for_refresh_lock, write_due_entry
from helpers import keyhelper
from keyhelper_plugins import command
from keyhelper_plugins.command import CommandBackend

from keyhelper.backend import Context
from keyhelper.errors import BackendError, ConfigError

KEY = "sk-ant-Spawn_0123456789abcdef"
PROC_STATUS = Path("/proc/self/status")


def fetch(argv: list[str], env: Mapping[str, str]) -> str:
    options = CommandBackend.validate({"command": argv}, source="test.toml", key="backends.c")
    context = Context(None, dict(env), time.monotonic() + 10, "")
    return CommandBackend("c", options, context).fetch().value


@pytest.fixture
def inheritable_fd() -> Iterator[int]:
    """A descriptor a child would inherit (like the lock a refresh child holds as fd 3)."""
    read, write = os.pipe()
    os.set_inheritable(write, True)
    yield write
    os.close(read)
    os.close(write)


def test_the_command_inherits_no_descriptor_of_ours(inheritable_fd: int) -> None:
    probe = f'[ -e /dev/fd/{inheritable_fd} ] && echo sk-open || echo sk-closed'
    env = {"PATH": os.environ["PATH"]}
    assert fetch(["sh", "-c", probe], env) == "sk-closed"
    # the probe sees a descriptor that is passed (its own stdout)
    assert fetch(["sh", "-c", probe.replace(str(inheritable_fd), "1")], env) == "sk-open"


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="reads /proc/self/status (Linux)")
def test_sigpipe_and_sigxfsz_are_back_to_their_defaults() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; a pipeline in the command must not inherit that."""
    mask = fetch(["awk", '/^SigIgn/ { print "sk-" $2 }', str(PROC_STATUS)],
                 {"PATH": os.environ["PATH"]})
    ignored = int(mask.removeprefix("sk-"), 16)
    assert ignored & (1 << (13 - 1) | 1 << (25 - 1)) == 0  # SIGPIPE 13, SIGXFSZ 25


def tool(directory: Path, body: str, mode: int = 0o755) -> None:
    directory.mkdir(exist_ok=True)
    script = directory / "mytool"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(mode)


def test_path_is_searched_in_the_commands_environment(tmp_path: Path) -> None:
    tool(tmp_path / "bin", f"echo {KEY}")
    assert fetch(["mytool"], {"PATH": f"{tmp_path / 'none'}:{tmp_path / 'bin'}"}) == KEY


def test_a_directory_that_cannot_run_it_does_not_hide_one_that_can(tmp_path: Path) -> None:
    tool(tmp_path / "a", "echo sk-never", mode=0o644)
    tool(tmp_path / "b", f"echo {KEY}")
    assert fetch(["mytool"], {"PATH": f"{tmp_path / 'a'}:{tmp_path / 'b'}"}) == KEY
    with pytest.raises(BackendError) as caught:  # and alone, it says why
        fetch(["mytool"], {"PATH": f"{tmp_path / 'a'}:{tmp_path / 'none'}"})
    assert caught.value.message == "command not executable: mytool"
    with pytest.raises(BackendError) as caught:
        fetch(["mytool"], {"PATH": str(tmp_path / "none")})
    assert caught.value.message == "command not found: mytool"


@pytest.mark.parametrize("start", ["posix_spawn", "subprocess"])
def test_path_entries_relative_to_the_working_directory_are_skipped(
        start: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claude Code runs keyhelper in the project it has open: an empty, "." or relative
    $PATH entry would run the project's own `mytool` (as Go's exec.LookPath refuses)."""
    if start == "subprocess":
        monkeypatch.setattr(command, "_run_spawned", _no_spawn)
    project = tmp_path / "project"
    ran = tmp_path / "ran"
    tool(project, f"touch {ran}; echo sk-from-the-project")
    tool(project / "bin", f"touch {ran}; echo sk-from-the-project")
    monkeypatch.chdir(project)
    for path in ("", ":", ".", "bin", f".:{tmp_path / 'none'}"):
        with pytest.raises(BackendError) as caught:
            fetch(["mytool"], {"PATH": path})
        assert caught.value.message == "command not found: mytool", path
    tool(tmp_path / "tools", f"echo {KEY}")
    assert fetch(["mytool"], {"PATH": f".::bin:{tmp_path / 'tools'}"}) == KEY
    assert not ran.exists()


@pytest.mark.parametrize("program", ["./mytool", "bin/mytool", "../mytool"])
def test_a_relative_command_path_is_refused(program: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CommandBackend.validate({"command": [program, "--print"]}, source="test.toml",
                                key="backends.c")
    assert str(caught.value) == ("config error: test.toml: backends.c.command: command "
                                 f"{program!r} is a "
                                 "relative path; give its absolute path, or a name found on "
                                 "PATH")


def test_without_posix_spawn_subprocess_runs_it(monkeypatch: pytest.MonkeyPatch,
                                                 inheritable_fd: int) -> None:
    """The fallback (Windows, a libc without posix_spawn's setsid) behaves the same."""
    monkeypatch.setattr(command, "_run_spawned", _no_spawn)
    env = {"PATH": os.environ["PATH"]}
    assert fetch(["sh", "-c", f"echo {KEY}"], env) == KEY
    probe = f'[ -e /dev/fd/{inheritable_fd} ] && echo sk-open || echo sk-closed'
    assert fetch(["sh", "-c", probe], env) == "sk-closed"


def _no_spawn(*args: object) -> tuple[int, bytes, bytes]:
    raise NotImplementedError("posix_spawn cannot setsid here")


def test_a_daemon_the_command_leaves_does_not_hold_the_refresh_lock(tmp_path: Path,
                                                                     write_config) -> None:
    """The refresh child holds the entry's lock as fd 3; an agent the command starts and
    leaves running must not inherit it, or no refresh could run again while it lives."""
    pid_file = tmp_path / "daemon.pid"
    write_config('chain = ["src"]\n[backends.src]\ntype = "command"\ncommand = ["sh", "-c", '
                 f'"sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}; echo key-new"]\n')
    write_due_entry()
    try:
        run = keyhelper()  # a hit due for refresh: served, and the refresh child started
        assert (run.returncode, run.stdout, run.stderr) == (0, "key-old\n", "")
        wait_for_refresh_lock()  # fails after 20 s while the daemon holds the lock
        assert keyhelper().stdout == "key-new\n"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
