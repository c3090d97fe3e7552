"""Reliability of the cache's own records, through the real console script: the failure
backoff counts from when a fetch failed (not when it started), times written while the clock
was ahead are not trusted, and an entry damaged in place is a miss (its checksum)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cache_entry import entry_path
from countingcmd import CountingCommand
from helpers import keyhelper

from keyhelper import cachepolicy
from keyhelper.base import records
from keyhelper.base.failures import FAILURE_FORMAT, FailureLog

DAYS_2 = 2 * 86400.0

HANG = """\
import sys, time
with open(sys.argv[1], "a") as counter:
    counter.write("call\\n")
time.sleep(60)
"""


def test_backoff_counts_from_the_failure_not_the_fetchs_start(tmp_path: Path,
                                                               write_config) -> None:  # type: ignore[no-untyped-def]
    """A backend that hangs until the deadline (3 s: longer than the first 2 s backoff) is
    called once; the next two calls answer at once from the failure record."""
    script, counter = tmp_path / "hang.py", tmp_path / "hang.calls"
    script.write_text(HANG)
    write_config(f'deadline = 3\nchain = ["slow"]\n[backends.slow]\ntype = "command"\n'
                 f'command = {json.dumps([sys.executable, str(script), str(counter)])}\n')
    first = keyhelper()
    assert (first.returncode, first.stdout) == (1, "")
    assert "did not finish within" in first.stderr
    for _ in range(2):
        started = time.monotonic()
        run = keyhelper()
        assert time.monotonic() - started < 2.5  # answered from the record, not the deadline
        assert (run.returncode, run.stdout) == (1, "")
        assert run.stderr.startswith(first.stderr.rstrip("\n"))
        assert "`keyhelper cache clear` retries now)\n" in run.stderr
    assert counter.read_text() == "call\n"


# --- times from the future ------------------------------------------------------------------

TOGGLED = """\
import os, sys
with open(sys.argv[1], "a") as counter:
    counter.write("call\\n")
if os.path.exists(sys.argv[2]):
    sys.exit("backend down")
print("sk-test-Counted-0123456789")
"""


@pytest.fixture
def source(tmp_path: Path, write_config) -> CountingCommand:  # type: ignore[no-untyped-def]
    """A backend that counts its calls and fails while ``down`` exists beside it (the
    config file stays the same: it names the cache entry)."""
    script, counter = tmp_path / "toggled.py", tmp_path / "toggled.calls"
    script.write_text(TOGGLED)
    command = CountingCommand([sys.executable, str(script), str(counter),
                               str(tmp_path / "down")], counter, "sk-test-Counted-0123456789")
    write_config('chain = ["src"]\n' + command.toml("src"))
    return command


def down(command: CountingCommand, broken: bool = True) -> None:
    flag = Path(command.argv[-1])
    if broken:
        flag.touch()
    else:
        flag.unlink()


def failure_log() -> FailureLog:
    path = entry_path()
    return FailureLog(str(path.parent), path.name.removesuffix(".entry"))


def move_failure(by: float) -> None:
    """Rewrite the failure record as if written with the clock ``by`` seconds ahead."""
    log = failure_log()
    failure = log.read()
    assert failure is not None
    Path(log.failed_path).write_bytes(records.dump(FAILURE_FORMAT, [
        ("failed_at", repr(failure.failed_at + by)), ("retry_at", repr(failure.retry_at + by)),
        ("count", str(failure.count)), ("envsum", failure.envsum),
        ("message", failure.message)]))


def test_a_failure_recorded_with_the_clock_ahead_does_not_hold_retries(
        source: CountingCommand) -> None:
    down(source)
    assert keyhelper().returncode == 1
    move_failure(DAYS_2)  # as if the clock had been two days ahead when it failed
    down(source, False)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, source.key + "\n", "")
    assert source.calls == 2


def test_a_failure_recorded_within_the_clock_skew_still_holds_retries(
        source: CountingCommand) -> None:
    down(source)
    assert keyhelper().returncode == 1
    move_failure(cachepolicy.CLOCK_SKEW / 2)
    down(source, False)
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert "retried in" in run.stderr
    assert source.calls == 1


def move_entry(by: float) -> None:
    path = entry_path()
    entry = records.parse_entry(path.read_bytes())
    assert entry is not None
    entry.stored += by
    entry.expires += by
    entry.refresh += by
    path.write_bytes(entry.serialize())


def test_an_entry_from_the_future_is_neither_served_nor_served_stale(
        source: CountingCommand) -> None:
    assert keyhelper().stdout == source.key + "\n"
    move_entry(DAYS_2)
    assert keyhelper().stdout == source.key + "\n"
    assert source.calls == 2  # fetched anew: the entry's times said nothing true
    move_entry(DAYS_2)
    down(source)
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")  # no stale serve of it either
    assert run.stderr.startswith("keyhelper: no key from src\n")


# --- a damaged entry ------------------------------------------------------------------------

def test_an_entry_with_one_character_of_its_key_changed_is_a_miss(
        source: CountingCommand) -> None:
    assert keyhelper().stdout == source.key + "\n"
    path = entry_path()
    data = path.read_bytes()
    damaged = data.replace(b"\nkey sk-test-Counted", b"\nkey sk-test-Countee")
    assert damaged != data
    path.write_bytes(damaged)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, source.key + "\n", "")
    assert source.calls == 2
    assert path.read_bytes() != damaged  # rewritten whole


def test_an_entry_of_the_previous_format_is_a_miss(source: CountingCommand) -> None:
    assert keyhelper().stdout == source.key + "\n"
    path = entry_path()
    entry = records.parse_entry(path.read_bytes())
    assert entry is not None
    old = entry.serialize().replace(records.ENTRY_FORMAT.encode(), b"keyhelper-cache 2")
    path.write_bytes(old[:old.rindex(b"check ")])  # as version 2 wrote it: no check line
    assert keyhelper().stdout == source.key + "\n"
    assert source.calls == 2


# --- waiting on a fetch that does not finish ------------------------------------------------

HOLD_LOCK = """\
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_waiter_serves_the_stale_key_when_the_fetch_does_not_finish(
        source: CountingCommand, write_config) -> None:  # type: ignore[no-untyped-def]
    """A cluster electing a leader keeps one process fetching to its deadline: the others,
    waiting on its lock, serve the key they have rather than fail."""
    write_config('deadline = 1\nchain = ["src"]\n' + source.toml("src"))
    assert keyhelper().stdout == source.key + "\n"
    move_entry(-400)  # past its cache life, within stale_grace
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK,
                               str(entry_path().with_suffix(".lock"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        run = keyhelper(timeout=10)
    finally:
        holder.kill()
        holder.wait()
    assert (run.returncode, run.stdout) == (0, source.key + "\n")
    assert run.stderr.startswith("keyhelper: another keyhelper process is still fetching the "
                                 "key; serving the cached key sha256:")
    assert source.calls == 1
