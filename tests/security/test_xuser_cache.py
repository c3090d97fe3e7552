"""The cache directory and every file in it, against another local user.

Inside the cache directory (0700, ours) the other user cannot plant anything: those cases
are planted by the test (as root) and handed to the other user with lchown, standing for a
directory that was open once, or for our own mistakes. The cache directory itself, and its
parents, are planted by the other user in a shared sticky directory, as /tmp.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from countingcmd import CountingCommand, counting_command
from xuser import (
    DIRECTORY,
    FIFO,
    FILE_OBSTACLES,
    OPEN_TO_OTHERS,
    OURS,
    PLANTED_BY_OTHER,
    SYMLINK_TO_OURS,
    SYMLINK_TO_THEIRS,
    Attacker,
    Planter,
    private_file,
    run,
)

from keyhelper.base import caller as kcaller
from keyhelper.base import failures, records
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

PLANTED = "sk-ant-Planted_by_another_user_0000"
CACHED = "sk-ant-Cached_key_of_ours_0000"
CLAUDE = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "cli"}
FAILING = [sys.executable, "-c", "import sys; sys.exit(3)"]


@pytest.fixture
def counted(tmp_path: Path, write_config: Any) -> CountingCommand:
    """The chain: one command backend that counts its calls."""
    source = counting_command(tmp_path)
    write_config('chain = ["counted"]\n' + source.toml())
    return source


def entry_key(*backends: str) -> str:
    return kentry.entry_key(Selection(backends), os.environ)


def entry_bytes(key: str, age: float = 10, life: float = 3600) -> bytes:
    """A well-formed entry for a command backend (no environment), stored ``age`` s ago."""
    now = time.time()
    return kentry.Entry(key, "counted", now - age, now - age + life, now - age + life, None,
                       [], kentry.env_digest([], {})).serialize()


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Type, owner, mode and content of everything under ``roots`` (links not followed)."""
    found = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(directory, name)
                st = os.lstat(path)
                data = b""
                if stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as handle:
                        data = handle.read()
                found[path] = (stat.S_IFMT(st.st_mode), st.st_uid, stat.S_IMODE(st.st_mode),
                               data)
    return found


def served(result: Any, key: str, stderr: str = "") -> None:
    assert (result.returncode, result.stdout, result.stderr) == (0, key + "\n", stderr)
    assert PLANTED not in result.stdout + result.stderr


# --- the cache directory ----------------------------------------------------------------

DIR_OBSTACLES = {
    "owned_by_other": "it is owned by another user",
    SYMLINK_TO_OURS: "it is a symlink or not a directory",
    SYMLINK_TO_THEIRS: "it is a symlink or not a directory",
    FIFO: "it is a symlink or not a directory",
    "a_file": "it is a symlink or not a directory",
}


@pytest.mark.parametrize("kind", sorted(DIR_OBSTACLES))
def test_a_cache_directory_planted_by_another_user_is_not_used(
        kind: str, attacker: Attacker, counted: CountingCommand, tmp_path: Path) -> None:
    """KEYHELPER_CACHE_DIR in a shared directory, where the other user was first. Each
    planted directory holds a valid entry with the planted key, served if it were used."""
    cache = attacker.shared / "kh-cache"
    name = entry_key() + ".entry"
    ours = tmp_path / "our-dir"
    ours.mkdir(mode=0o700)
    if kind == "owned_by_other":
        attacker.mkdir(cache, 0o777)
        attacker.write(cache / name, entry_bytes(PLANTED))
    elif kind == SYMLINK_TO_OURS:
        (ours / name).write_bytes(entry_bytes(PLANTED))
        (ours / name).chmod(0o600)
        attacker.symlink(ours, cache)
    elif kind == SYMLINK_TO_THEIRS:
        theirs = attacker.mkdir(attacker.shared / "their-dir", 0o777)
        attacker.write(theirs / name, entry_bytes(PLANTED))
        attacker.symlink(theirs, cache)
    elif kind == FIFO:
        attacker.mkfifo(cache)
    else:
        attacker.write(cache, entry_bytes(PLANTED), 0o644)
    before = snapshot(attacker.shared, ours)
    note = (f"keyhelper: cache directory {cache} not used: {DIR_OBSTACLES[kind]}; going on "
            "without a cache\n")
    for _ in range(2):  # the hit path, then the full path, each refuse it
        served(run(env={"KEYHELPER_CACHE_DIR": str(cache)}), counted.key, note)
    assert counted.calls == 2
    assert snapshot(attacker.shared, ours) == before  # nothing written there, or through


def test_a_cache_directory_of_ours_open_to_others_is_tightened_and_its_files_checked(
        counted: CountingCommand, attacker: Attacker, cache_dir: Path) -> None:
    """Open to others for a while: what the other user left there is not trusted."""
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    entry = attacker.write(cache_dir / f"{entry_key()}.entry", entry_bytes(PLANTED))
    served(run(), counted.key,
           f"keyhelper: cache directory {cache_dir} had mode 777; set to 700\n")
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert private_file(entry) and counted.key in entry.read_text()
    served(run(), counted.key)
    assert counted.calls == 1


@pytest.mark.parametrize("mask", [0o000, 0o077])
def test_everything_keyhelper_creates_is_private_whatever_the_umask(
        mask: int, tmp_path: Path, write_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing parents of the cache directory, the cache, state/, entries, locks, the
    route, served markers, the failure record and stale counter: 0700 and 0600."""
    source = counting_command(tmp_path)
    key_file = tmp_path / "key"
    key_file.write_text("sk-ant-From_a_key_file_0000\n")
    key_file.chmod(0o600)
    write_config('chain = ["counted"]\n' + source.toml()
                 + f'[backends.keyfile]\ntype = "file"\npath = "{key_file}"\n'
                 + f'[backends.broken]\ntype = "command"\ncommand = {json.dumps(FAILING)}\n')
    cache = tmp_path / "p1" / "p2" / "cache"
    monkeypatch.setenv("KEYHELPER_CACHE_DIR", str(cache))
    served(run(env=CLAUDE, mask=mask), source.key)  # entry, lock, served marker, state/
    served(run("-b", "keyfile", mask=mask), "sk-ant-From_a_key_file_0000")  # route
    stale = cache / f"{entry_key('broken')}.entry"
    stale.write_bytes(entry_bytes(CACHED, age=100, life=90))
    stale.chmod(0o600)
    result = run("-b", "broken", mask=mask)  # the failure record, the stale counter
    assert (result.returncode, result.stdout) == (0, CACHED + "\n")

    made = [tmp_path / "p1", tmp_path / "p1" / "p2", cache, *cache.rglob("*")]
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in made}
    assert modes == {p.name: 0o700 if p.is_dir() else 0o600 for p in made}
    suffixes = {p.name.rsplit(".", 1)[-1] for p in cache.iterdir()}
    assert suffixes == {"entry", "lock", "served", "route", "failed", "stale", "state"}


def test_a_parent_planted_by_another_user_cannot_read_the_cache(
        counted: CountingCommand, attacker: Attacker) -> None:
    """Documented limit: parents others can write let them take the cache away (denial of
    service), never read it: the cache directory and its files are still private."""
    parent = attacker.mkdir(attacker.shared / "theirs", 0o777)
    cache = parent / "cache"
    served(run(env={"KEYHELPER_CACHE_DIR": str(cache)}), counted.key)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and cache.stat().st_uid == os.getuid()
    entry = cache / f"{entry_key()}.entry"
    assert private_file(entry)
    with pytest.raises(Exception, match="exit status 1"):
        attacker.run("cat", str(entry))


# --- files in the cache directory -------------------------------------------------------

@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_an_entry_not_ours_and_private_is_a_miss(kind: str, planter: Planter, cache: Path,
                                                 counted: CountingCommand) -> None:
    path = planter.plant(kind, cache / f"{entry_key()}.entry", entry_bytes(PLANTED))
    links = planter.targets()
    result = run()
    if kind == OURS:  # control: the planted entry is well formed, and served when ours
        assert (result.returncode, result.stdout, counted.calls) == (0, PLANTED + "\n", 0)
        return
    note = (f"keyhelper: cache entry {path} not written (Is a directory); going on without "
            "it\n" if kind == DIRECTORY else "")
    served(result, counted.key, note)
    assert counted.calls == 1
    assert planter.targets() == links  # nothing written through a link
    if kind != DIRECTORY:
        assert private_file(path) and counted.key in path.read_text()  # replaced by ours


LOCK_NOTES = {
    PLANTED_BY_OTHER: "owned by another user",
    SYMLINK_TO_OURS: "Too many levels of symbolic links",
    SYMLINK_TO_THEIRS: "Too many levels of symbolic links",
    FIFO: "not a regular file",
    DIRECTORY: "Is a directory",
}


@pytest.mark.parametrize("kind", FILE_OBSTACLES)
def test_a_lock_not_ours_is_not_used(kind: str, planter: Planter, cache: Path,
                                     counted: CountingCommand) -> None:
    """Another user's lock could be held forever: go on without it, and say so. A hard
    link or a mode open to others is harmless: a lock is never read or written."""
    path = planter.plant(kind, cache / f"{entry_key()}.lock", b"a file of ours\n")
    links = planter.targets()
    note = ""
    if kind in LOCK_NOTES:
        note = f"keyhelper: cache lock {path} not usable ({LOCK_NOTES[kind]}); going on " \
               "without it\n"
    served(run(), counted.key, note)
    assert counted.calls == 1
    assert planter.targets() == links


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_route_not_ours_and_private_is_not_followed(kind: str, planter: Planter,
                                                      cache: Path, write_config: Any,
                                                      tmp_path: Path) -> None:
    """A route naming another key file would make the hit path print that file's key."""
    real = tmp_path / "real.key"
    real.write_text("sk-ant-The_real_key_file_0000\n")
    real.chmod(0o600)
    write_config(f'chain = ["keyfile"]\n[backends.keyfile]\ntype = "file"\npath = "{real}"\n')
    elsewhere = planter.ours("planted.key", PLANTED.encode() + b"\n")
    route = f"keyhelper-route 2\nfile {elsewhere}\n".encode()
    path = planter.plant(kind, cache / f"{entry_key()}.route", route)
    links = planter.targets()
    result = run()
    if kind == OURS:  # control: the planted route is well formed, and followed when ours
        assert (result.returncode, result.stdout) == (0, PLANTED + "\n")
        return
    served(result, "sk-ant-The_real_key_file_0000")
    assert planter.targets() == links
    if kind != DIRECTORY:
        assert private_file(path) and path.read_text() == f"keyhelper-route 2\nfile {real}\n"


def caller() -> str:
    """The Claude Code process keyhelper sees: this test process, its parent."""
    info = kcaller._stat(os.getpid())
    assert info is not None
    return f"{os.getpid()}-{info[2]}"


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_served_marker_not_ours_and_private_is_ignored(kind: str, planter: Planter,
                                                         cache: Path,
                                                         counted: CountingCommand) -> None:
    """A marker saying "this caller was just served this entry" makes keyhelper fetch
    anew (its key was refused): a planted one would force refetches."""
    entry = cache / f"{entry_key()}.entry"
    entry.write_bytes(entry_bytes(CACHED))
    entry.chmod(0o600)
    stored = kentry.parse_entry(entry.read_bytes()).stored  # type: ignore[union-attr]
    marker = records.dump(kentry.MARKER_FORMAT, [("stored", repr(stored)),
                                                 ("served", repr(time.time() - 1))])
    path = planter.plant(kind, cache / f"{entry_key()}.{caller()}.served", marker)
    links = planter.targets()
    result = run(env=CLAUDE)
    if kind == OURS:  # control: the planted marker is well formed, and believed when ours
        served(result, counted.key)
        assert counted.calls == 1
        return
    served(result, CACHED)
    assert counted.calls == 0
    assert planter.targets() == links
    if kind != DIRECTORY:
        assert private_file(path)


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_failure_record_not_ours_and_private_is_ignored(kind: str, planter: Planter,
                                                          cache: Path,
                                                          counted: CountingCommand) -> None:
    """A planted failure record would keep the backend from being tried (a denial of
    service with a message of the other user's choosing)."""
    now = time.time()
    record = records.dump(failures.FAILURE_FORMAT, [
        ("failed_at", repr(now)), ("retry_at", repr(now + 30)), ("count", "1"),
        ("envsum", kentry.env_digest([], {})),
        ("message", f"keyhelper: no key from counted\n  counted failed: {PLANTED}")])
    path = planter.plant(kind, cache / f"{entry_key()}.failed", record)
    links = planter.targets()
    result = run()
    if kind == OURS:  # control: the planted record is well formed, and obeyed when ours
        assert (result.returncode, result.stdout, counted.calls) == (1, "", 0)
        assert f"counted failed: {PLANTED}\n  (failed 0 s ago; retried in" in result.stderr
        return
    served(result, counted.key)
    assert counted.calls == 1
    assert planter.targets() == links
    assert path.is_dir() if kind == DIRECTORY else not os.path.lexists(path)  # forgotten


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_stale_counter_not_ours_and_private_is_not_counted_on(
        kind: str, planter: Planter, cache: Path, write_config: Any) -> None:
    """Every backend fails, the old key is served stale, and counted: from 0 when the
    counter is not a private file of ours."""
    write_config(f'chain = ["broken"]\n[backends.broken]\ntype = "command"\n'
                 f'command = {json.dumps(FAILING)}\n')
    entry = cache / f"{entry_key()}.entry"
    entry.write_bytes(entry_bytes(CACHED, age=100, life=90))
    entry.chmod(0o600)
    path = planter.plant(kind, cache / f"{entry_key()}.stale",
                         records.dump(failures.STALE_FORMAT, [("count", "41"), ("last", "1.0")]))
    links = planter.targets()
    result = run()
    assert (result.returncode, result.stdout) == (0, CACHED + "\n")
    assert re.fullmatch(r"keyhelper: every backend failed; serving the cached key "
                        r"sha256:[0-9a-f]{12} \(\d+ s past its cache life\)\n", result.stderr)
    assert planter.targets() == links
    if kind == DIRECTORY:
        assert path.is_dir()
        return
    assert private_file(path)
    counted = failures.FailureLog(str(cache), entry_key()).stale_count()[0]
    assert counted == (42 if kind == OURS else 1)


# --- the state directory ----------------------------------------------------------------

STATE_OBSTACLES = {
    "owned_by_other": "it is owned by another user",
    SYMLINK_TO_OURS: "it is a symlink or not a directory",
    SYMLINK_TO_THEIRS: "it is a symlink or not a directory",
    FIFO: "it is a symlink or not a directory",
    "a_file": "it is a symlink or not a directory",
}


@pytest.mark.parametrize("kind", [*sorted(STATE_OBSTACLES), OPEN_TO_OTHERS])
def test_a_state_directory_not_ours_and_private_is_not_used(
        kind: str, attacker: Attacker, cache: Path, counted: CountingCommand,
        tmp_path: Path) -> None:
    """state/ holds Vault login tokens: one of another user's would hand us their token
    (test_xuser_vault.py); here, that it is refused, said, and nothing goes through it."""
    state = cache / "state"
    ours = tmp_path / "our-dir"
    ours.mkdir(mode=0o700)
    if kind == "owned_by_other":
        attacker.mkdir(state, 0o777)
    elif kind == SYMLINK_TO_OURS:
        attacker.symlink(ours, state)
    elif kind == SYMLINK_TO_THEIRS:
        attacker.symlink(attacker.mkdir(attacker.shared / "their-dir", 0o777), state)
    elif kind == FIFO:
        attacker.mkfifo(state)
    elif kind == "a_file":
        attacker.write(state, b"not a directory\n")
    else:
        state.mkdir()
        state.chmod(0o777)
    before = snapshot(attacker.shared, ours)
    result = run()
    if kind == OPEN_TO_OTHERS:
        served(result, counted.key, f"keyhelper: state directory {state} had mode 777; "
                                    "set to 700\n")
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        return
    served(result, counted.key, f"keyhelper: state directory {state} not used: "
                                f"{STATE_OBSTACLES[kind]}; going on without it\n")
    assert snapshot(attacker.shared, ours) == before
