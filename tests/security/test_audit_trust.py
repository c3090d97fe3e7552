"""The audit log path is not trusted blindly (issue 10, finding 2): what another local user can
leave at the log's path, in its directory or beside it (a FIFO, a file of theirs, a lock, a
rotated name) never hangs a call, never receives a line, and never stops the key. Runs the real
console script; "another user" is the real account of tests/support/other_user.py."""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path
from typing import Any

import pytest
from countingcmd import CountingCommand, counting_command
from helpers import keyhelper
from xuser import give, other_user

from keyhelper.base import audit

DEADLINE = 10  # seconds: a call that takes longer is taken as hung


@pytest.fixture
def attacker() -> pwd.struct_passwd:
    return other_user()


@pytest.fixture
def counted(tmp_path: Path) -> CountingCommand:
    return counting_command(tmp_path)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A directory like /tmp: root's, sticky, writable by everyone."""
    path = tmp_path / "shared"
    path.mkdir()
    os.chown(path, 0, 0)
    path.chmod(0o1777)
    return path


def configure(write_config: Any, counted: CountingCommand, log: Path, extra: str = "") -> None:
    write_config(f'chain = ["counted"]\n[audit]\npath = "{log}"\n{extra}' + counted.toml())


def miss_then_hit(counted: CountingCommand, warning: str) -> None:
    """The miss prints the key with one warning line; the hit prints it silently."""
    miss = keyhelper(timeout=DEADLINE)
    assert (miss.returncode, miss.stdout, miss.stderr) == (
        0, counted.key + "\n", f"keyhelper: audit log not written ({warning})\n")
    hit = keyhelper(timeout=DEADLINE)
    assert (hit.returncode, hit.stdout, hit.stderr) == (0, counted.key + "\n", "")
    assert counted.calls == 1  # the second call was a cache hit


def test_a_fifo_at_the_log_path_hangs_neither_hit_nor_miss_nor_doctor(
        write_config: Any, counted: CountingCommand, shared: Path,
        attacker: pwd.struct_passwd) -> None:
    log = shared / "audit.jsonl"
    os.mkfifo(log, 0o666)
    give(log, attacker)
    configure(write_config, counted, log)
    miss_then_hit(counted, f"{log} is not a regular file")
    doctor = keyhelper("doctor", timeout=DEADLINE)
    assert doctor.returncode == 0, doctor.stderr
    assert f"audit log: {log} (rotated at 10485760 bytes, 5 old files kept)\n" \
           f"  cannot read it ({log} is not a regular file)\n" in doctor.stdout
    assert stat.S_ISFIFO(log.lstat().st_mode)


def test_a_fifo_with_a_reader_gets_no_line(write_config: Any, counted: CountingCommand,
                                           shared: Path, attacker: pwd.struct_passwd) -> None:
    """With the other user reading the FIFO the open succeeds: the descriptor is refused."""
    log = shared / "audit.jsonl"
    os.mkfifo(log, 0o666)
    give(log, attacker)
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    try:
        configure(write_config, counted, log)
        miss_then_hit(counted, f"{log} is not a regular file")
        assert os.read(reader, 65536) == b""
    finally:
        os.close(reader)


def test_a_file_planted_by_another_user_gets_no_line(write_config: Any,
                                                     counted: CountingCommand, shared: Path,
                                                     attacker: pwd.struct_passwd) -> None:
    log = shared / "audit.jsonl"
    forged = '{"user": "alice", "cache": "hit"}\n'
    log.write_text(forged)
    log.chmod(0o666)
    give(log, attacker)
    configure(write_config, counted, log)
    miss_then_hit(counted, f"{log} is owned by another user: uid {attacker.pw_uid}")
    assert log.read_text() == forged
    doctor = keyhelper("doctor", timeout=DEADLINE)
    assert doctor.returncode == 0, doctor.stderr
    assert (f"  cannot read it ({log} is owned by another user: uid {attacker.pw_uid})\n"
            in doctor.stdout)
    assert "alice" not in doctor.stdout  # the forged line is not shown as ours


def test_own_file_in_a_sticky_root_directory_is_used(write_config: Any,
                                                     counted: CountingCommand,
                                                     shared: Path) -> None:
    log = shared / "audit.jsonl"
    configure(write_config, counted, log)
    for _ in range(2):
        run = keyhelper(timeout=DEADLINE)
        assert (run.returncode, run.stdout, run.stderr) == (0, counted.key + "\n", "")
    assert [json.loads(line)["cache"] for line in log.read_text().splitlines()] == [
        "miss", "hit"]
    st = log.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.getuid())


def test_a_directory_others_may_write_is_refused(write_config: Any, counted: CountingCommand,
                                                tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)  # not sticky: anyone may rename the log away and put theirs
    log = directory / "audit.jsonl"
    log.write_text("")
    log.chmod(0o600)
    configure(write_config, counted, log)
    miss_then_hit(counted, f"{directory} is writable by group or others: mode 777")
    assert log.read_text() == ""


def test_a_group_writable_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "team"
    directory.mkdir()
    directory.chmod(0o2770)
    with pytest.raises(audit.Unsafe) as caught:
        audit.append(str(directory / "audit.jsonl"), b"{}\n")
    assert str(caught.value) == f"{directory} is writable by group or others: mode 2770"
    assert not (directory / "audit.jsonl").exists()


@pytest.mark.parametrize("mode", [0o755, 0o1777], ids=["0755", "sticky-1777"])
def test_a_directory_of_another_user_is_refused(write_config: Any, counted: CountingCommand,
                                                tmp_path: Path, attacker: pwd.struct_passwd,
                                                mode: int) -> None:
    """Theirs, even sticky: its owner may remove or replace any file in it."""
    directory = tmp_path / "theirs"
    directory.mkdir()
    directory.chmod(mode)
    give(directory, attacker)
    log = directory / "audit.jsonl"
    configure(write_config, counted, log)
    miss_then_hit(counted, f"{directory} is owned by another user: uid {attacker.pw_uid}")
    assert not log.exists()


def test_a_hard_link_is_refused(write_config: Any, counted: CountingCommand,
                                tmp_path: Path) -> None:
    """Another name for a file of ours (one that is not a log) must not receive lines."""
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    precious = logs / "precious"
    precious.write_text("mine\n")
    log = logs / "audit.jsonl"
    os.link(precious, log)
    configure(write_config, counted, log)
    miss_then_hit(counted, f"{log} has 2 hard links")
    assert precious.read_text() == "mine\n"


def full_log(directory: Path) -> Path:
    """A log of ours already at max_bytes (1024): the next line rotates it."""
    log = directory / "audit.jsonl"
    log.write_text("{}\n" * 400)
    log.chmod(0o600)
    return log


def test_a_lock_file_of_another_user_stops_rotation_only(
        write_config: Any, counted: CountingCommand, shared: Path,
        attacker: pwd.struct_passwd) -> None:
    """Their lock could be held forever, or be a FIFO: never opened as ours."""
    log = full_log(shared)
    lock = shared / "audit.jsonl.lock"
    os.mkfifo(lock, 0o666)
    give(lock, attacker)
    configure(write_config, counted, log, "max_bytes = 1024\n")
    run = keyhelper(timeout=DEADLINE)
    assert (run.returncode, run.stdout) == (0, counted.key + "\n")
    assert run.stderr == f"keyhelper: audit log not rotated ({lock} is not a regular file)\n"
    assert json.loads(log.read_text().splitlines()[-1])["cache"] == "miss"  # written
    assert sorted(p.name for p in shared.iterdir()) == ["audit.jsonl", "audit.jsonl.lock"]


def test_a_rotated_name_of_another_user_stops_rotation(shared: Path,
                                                       attacker: pwd.struct_passwd) -> None:
    log = full_log(shared)
    theirs = shared / "audit.jsonl.2"
    theirs.write_text("theirs\n")
    give(theirs, attacker)
    ours = shared / "audit.jsonl.1"
    ours.write_text("older\n")
    ours.chmod(0o600)
    with pytest.raises(audit.NotRotated) as caught:
        audit.append(str(log), b"{}\n", max_bytes=1024, keep=3)
    assert str(caught.value) == f"{theirs} is owned by another user: uid {attacker.pw_uid}"
    assert (ours.read_text(), theirs.read_text()) == ("older\n", "theirs\n")
    assert log.read_text().endswith("{}\n" * 401)  # the line itself was written


def test_rotation_in_a_sticky_root_directory(shared: Path) -> None:
    log = full_log(shared)
    audit.append(str(log), b"{}\n", max_bytes=1024, keep=2)
    audit.append(str(log), b"{}\n", max_bytes=1024, keep=2)
    assert sorted(p.name for p in shared.iterdir()) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.lock"]
    assert log.read_text() == "{}\n"
    assert stat.S_IMODE((shared / "audit.jsonl.lock").stat().st_mode) == 0o600


def test_a_new_log_is_0600_under_umask_000(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    previous = os.umask(0)
    try:
        audit.append(str(logs / "audit.jsonl"), b"{}\n", max_bytes=1024)
        audit.append(str(logs / "audit.jsonl"), b"{}\n" * 400, max_bytes=1024)
        audit.append(str(logs / "audit.jsonl"), b"{}\n", max_bytes=1024)
    finally:
        os.umask(previous)
    for name in ("audit.jsonl", "audit.jsonl.1", "audit.jsonl.lock"):
        assert stat.S_IMODE((logs / name).stat().st_mode) == 0o600, name


def test_the_user_field_never_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A uid without an account (a container's) is logged as its number, not as $USER."""
    monkeypatch.setenv("USER", "someoneelse")
    monkeypatch.setenv("LOGNAME", "someoneelse")
    assert audit._user() == pwd.getpwuid(os.getuid()).pw_name
    unknown = 54321
    with pytest.raises(KeyError):
        pwd.getpwuid(unknown)
    monkeypatch.setattr(os, "getuid", lambda: unknown)  # in process: no such account exists
    assert audit._user() == "54321"
