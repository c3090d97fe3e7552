"""``keyhelper setup claude-code`` never leaves or writes settings another user can change
(issue 10, finding 3): the settings name a command Claude Code runs as the user. Runs the real
console script; "another user" is the real account of tests/support/other_user.py."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import SCRIPT, Run, keyhelper
from xuser import give, other_user

DEADLINE = 10  # seconds: a run that takes longer is taken as hung


@pytest.fixture
def attacker() -> pwd.struct_passwd:
    return other_user()


def setup_under_umask(umask: str, *args: str, cwd: Path | None = None) -> Run:
    """``setup claude-code`` started by a shell that set the umask first."""
    proc = subprocess.run(["sh", "-c", f'umask {umask}; exec "$0" "$@"', SCRIPT, "setup",
                           "claude-code", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=DEADLINE, cwd=cwd,
                          check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("umask", ["000", "077"])
def test_user_scope_creates_claude_dir_0700_whatever_the_umask(isolated_env: Path,
                                                               umask: str) -> None:
    run = setup_under_umask(umask)
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    claude = isolated_env / ".claude"
    assert (mode(claude), mode(claude / "settings.json")) == (0o700, 0o600)
    assert json.loads((claude / "settings.json").read_text()) == {"apiKeyHelper": SCRIPT}


def test_project_scope_creates_claude_dir_0700_under_umask_000(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    run = setup_under_umask("000", "--scope", "project", cwd=project)
    assert run.returncode == 0, run.stderr
    assert (mode(project / ".claude"), mode(project / ".claude" / "settings.json")) == (
        0o700, 0o600)


def refused(message: str, *args: str) -> None:
    """setup (and its dry run) exit 2 with this one config error line, printing nothing."""
    for extra in ((), ("--dry-run",)):
        run = keyhelper("setup", "claude-code", *args, *extra, timeout=DEADLINE)
        assert (run.returncode, run.stdout, run.stderr) == (
            2, "", f"keyhelper: config error: {message}\n"), extra


@pytest.mark.parametrize(("dir_mode", "who"), [(0o777, "others"), (0o775, "its group"),
                                                (0o1777, "others")],
                         ids=["0777", "0775", "sticky-1777"])
def test_a_claude_dir_others_can_write_is_refused(isolated_env: Path, dir_mode: int,
                                                  who: str) -> None:
    claude = isolated_env / ".claude"
    claude.mkdir()
    claude.chmod(dir_mode)
    refused(f"{claude}: writable by {who} (mode {dir_mode:o}); fix with: chmod 700 {claude}")
    assert list(claude.iterdir()) == []
    claude.chmod(0o700)  # as the message says: then it works
    assert keyhelper("setup", "claude-code").returncode == 0
    assert (claude / "settings.json").exists()


def test_a_project_claude_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    claude = tmp_path / "project" / ".claude"
    claude.mkdir(parents=True)
    claude.chmod(0o777)
    run = keyhelper("setup", "claude-code", "--scope", "project", cwd=str(claude.parent))
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.endswith(
        f"keyhelper: config error: {claude}: writable by others (mode 777); "
        f"fix with: chmod 700 {claude}\n")
    assert list(claude.iterdir()) == []


def test_a_claude_dir_of_another_user_is_refused(isolated_env: Path,
                                                 attacker: pwd.struct_passwd) -> None:
    claude = isolated_env / ".claude"
    claude.mkdir(mode=0o755)
    give(claude, attacker)
    refused(f"{claude}: owned by another user (uid {attacker.pw_uid}); move it away, then "
            "run setup again")
    assert list(claude.iterdir()) == []


def test_settings_of_another_user_are_refused(isolated_env: Path,
                                              attacker: pwd.struct_passwd) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir(mode=0o700)
    theirs = json.dumps({"apiKeyHelper": "/tmp/theirs"})
    settings.write_text(theirs)
    give(settings, attacker)
    refused(f"{settings}: owned by another user (uid {attacker.pw_uid}); move it away, then "
            "run setup again")
    assert settings.read_text() == theirs


def test_settings_writable_by_others_are_refused(isolated_env: Path) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir(mode=0o700)
    settings.write_text("{}")
    settings.chmod(0o666)
    refused(f"{settings}: writable by others (mode 666); fix with: chmod 600 {settings}")
    assert settings.read_text() == "{}"


def test_a_symlinked_settings_file_is_not_followed(isolated_env: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir(mode=0o700)
    settings.symlink_to(target)
    refused(f"{settings}: a symlink, not followed: put a regular file in its place (or edit "
            "the file it points to yourself)")
    assert (settings.is_symlink(), target.read_text()) == (True, "{}")


def test_a_fifo_as_settings_file_does_not_hang(isolated_env: Path) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir(mode=0o700)
    os.mkfifo(settings, 0o600)
    refused(f"{settings}: not a regular file")
    assert stat.S_ISFIFO(settings.lstat().st_mode)


def test_deeply_nested_settings_are_a_config_error(isolated_env: Path) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir(mode=0o700)
    nested = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    settings.write_text(nested)
    refused(f"{settings}: nested too deeply to be Claude Code settings; fix it or move it "
            "away first")
    assert settings.read_text() == nested
