"""The shared cache: TTL and expiry (frozen time, in process), then permissions, symlinks,
foreign owners, corrupt entries and locks through the real console script."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import freezegun
import freezegun.config
import pytest
from countingcmd import CountingCommand, counting_command
from freezegun.api import FrozenDateTimeFactory
from helpers import keyhelper

from keyhelper.backend import Backend, Option, Token
from keyhelper.base import files as kpaths
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection
from keyhelper.cachepolicy import try_hit
from keyhelper.registry import GROUP, Registry
from keyhelper.resolver import Result, Run

T0 = 1_800_000_000.0  # 2027-01-15


class ExpiringBackend(Backend):
    """A test backend whose tokens carry their own expiry (like a minted JWT or a Vault
    lease). Loaded through a real entry point object, as a plugin is."""

    options: ClassVar = {"lifetime": Option(float, 3600.0)}
    calls: ClassVar[list[float]] = []

    def fetch(self) -> Token:
        now = self.context.now()
        ExpiringBackend.calls.append(now)
        return Token(f"sk-expiring-{len(ExpiringBackend.calls)}",
                     expires_at=now + self.config["lifetime"])


@pytest.fixture
def registry() -> Iterator[Registry]:
    ExpiringBackend.calls = []
    points = [metadata.EntryPoint(name, f"keyhelper_plugins.{name}:{cls}", GROUP)
              for name, cls in [("command", "CommandBackend"), ("env", "EnvBackend")]]
    points.append(metadata.EntryPoint("expiring", f"{__name__}:ExpiringBackend", GROUP))
    yield Registry(entry_points=points)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    """Time frozen at T0, for the core AND the backend.

    freezegun hands real time to code called from a thread ('threading' is on its default
    ignore list, looked up 5 frames deep), and the core runs each backend's fetch in a
    daemon thread (the deadline backstop). Taking 'threading' off the list gives the
    backend the same frozen clock as the core, and subprocess one consistent clock.
    """
    saved = freezegun.config.settings.default_ignore_list
    # ... and real time for pytest's own timing of the test (--durations).
    freezegun.config.settings.default_ignore_list = [
        *(m for m in saved if m != "threading"), "_pytest.runner", "_pytest.timing"]
    try:
        with freezegun.freeze_time(create_at(T0)) as frozen:
            yield frozen
    finally:
        freezegun.config.settings.default_ignore_list = saved


def create_at(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


def resolve(registry: Registry, *backends: str, profile: str | None = None,
            **env: str) -> Result:
    selection = Selection(backends, profile)
    return Run(selection, {**os.environ, **env}, registry=registry).resolve()


# --- TTL and expiry with frozen time --------------------------------------------------------

def test_default_ttl_is_300_seconds(write_config, tmp_path: Path, registry: Registry,
                                    clock: FrozenDateTimeFactory) -> None:
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    first = resolve(registry, "vault")
    assert (first.source, first.token.value, source.calls) == ("fetched", source.key, 1)
    assert first.entry is not None
    assert (first.entry.stored, first.entry.expires) == (T0, T0 + 300)
    clock.tick(299.5)
    assert resolve(registry, "vault").source == "hit"
    assert source.calls == 1
    clock.tick(0.5)
    again = resolve(registry, "vault")
    assert (again.source, source.calls) == ("fetched", 2)
    assert again.entry is not None and again.entry.expires == T0 + 600


@pytest.mark.parametrize(("config", "env", "profile", "ttl"), [
    ("ttl = 60\n", {}, None, 60),
    ("ttl = 2.5\n", {}, None, 2.5),
    ("", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "120000"}, None, 120),
    ("", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "1500"}, None, 1.5),
    ("", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "two minutes"}, None, 300),  # ignored
    ("", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": ""}, None, 300),
    ("ttl = 60\n", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "120000"}, None, 60),
    ("ttl = 60\n[profiles.p]\nttl = 30\n", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "120000"},
     "p", 30),
    ("[profiles.p]\n", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "90000"}, "p", 90),
])
def test_ttl_sources_and_precedence(write_config, tmp_path: Path, registry: Registry,
                                    config: str, env: dict[str, str], profile: str | None,
                                    ttl: float, clock: FrozenDateTimeFactory) -> None:
    source = counting_command(tmp_path)
    write_config(config.replace("[profiles", source.toml("vault") + "[profiles", 1)
                 if "[profiles" in config else config + source.toml("vault"))
    result = resolve(registry, "vault", profile=profile, **env)
    assert result.entry is not None
    assert result.entry.expires == T0 + ttl
    clock.tick(ttl - 0.25)
    assert resolve(registry, "vault", profile=profile, **env).source == "hit"
    clock.tick(0.25)
    assert resolve(registry, "vault", profile=profile, **env).source == "fetched"
    assert source.calls == 2


@pytest.mark.parametrize(("lifetime", "cached_for"), [
    (3600, 300),  # the TTL ends first
    (200, 140),  # the token's own expiry minus the 60 s margin ends first
    (360, 300),
    (359, 299),
])
def test_cache_life_never_runs_past_token_expiry_minus_margin(
        write_config, registry: Registry, lifetime: float, cached_for: float,
        clock: FrozenDateTimeFactory) -> None:
    write_config(f"[backends.minted]\ntype = \"expiring\"\nlifetime = {lifetime}\n")
    result = resolve(registry, "minted")
    assert result.entry is not None
    assert (result.entry.expires, result.entry.token_expires) == (T0 + cached_for,
                                                                   T0 + lifetime)
    clock.tick(cached_for - 1)
    assert resolve(registry, "minted").token.value == "sk-expiring-1"
    clock.tick(1)
    assert resolve(registry, "minted").token.value == "sk-expiring-2"
    assert ExpiringBackend.calls == [T0, T0 + cached_for]


def test_a_token_about_to_expire_is_not_cached(write_config, registry: Registry,
                                               cache_dir: Path,
                                               clock: FrozenDateTimeFactory) -> None:
    write_config('[backends.minted]\ntype = "expiring"\nlifetime = 60\n')
    first = resolve(registry, "minted")
    second = resolve(registry, "minted")
    assert (first.source, second.source) == ("uncached", "uncached")
    assert (first.token.value, second.token.value) == ("sk-expiring-1", "sk-expiring-2")
    assert list(cache_dir.glob("*.entry")) == []


def test_hit_path_sees_the_same_clock(write_config, tmp_path: Path, registry: Registry,
                                      clock: FrozenDateTimeFactory) -> None:
    source = counting_command(tmp_path)
    write_config("ttl = 100\n" + source.toml("vault"))
    selection = Selection(("vault",))
    resolve(registry, "vault")
    clock.tick(50)  # before the refresh-ahead window (the last 20 %)
    assert try_hit(selection, os.environ) == source.key
    clock.tick(50)
    assert try_hit(selection, os.environ) is None
    clock.move_to(create_at(T0 - 1))  # the clock went back: the entry is from the future
    assert try_hit(selection, os.environ) is None


def test_an_entry_depends_on_the_environment_its_backend_reads(
        write_config, tmp_path: Path, registry: Registry,
        clock: FrozenDateTimeFactory) -> None:
    """An env var a backend watches changes the entry's validity, not just its name."""
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    first = resolve(registry, "env", "vault")
    assert (first.source, first.token.value) == ("fetched", source.key)
    assert resolve(registry, "env", "vault").source == "hit"
    switched = resolve(registry, "env", "vault", KEYHELPER_API_KEY="sk-now-from-env")
    assert (switched.source, switched.token.value) == ("uncached", "sk-now-from-env")
    assert source.calls == 1


# --- files on disk, through the console script ----------------------------------------------

@pytest.fixture
def vault(write_config, tmp_path: Path) -> CountingCommand:
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    return source


def entry_path(cache: Path) -> Path:
    key = kentry.entry_key(Selection(("vault",)), os.environ)
    return cache / f"{key}.entry"


def get(expect_stderr: str = "") -> None:
    run = keyhelper("--backend", "vault")
    assert (run.returncode, run.stdout, run.stderr) == (0, vault_key() + "\n", expect_stderr)


def vault_key() -> str:
    from countingcmd import KEY

    return KEY


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_directory_0700_and_entry_0600_whatever_the_umask(vault: CountingCommand,
                                                          cache_dir: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        get()
    finally:
        os.umask(old)
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    assert entry_path(cache_dir).stat().st_mode & 0o777 == 0o600
    leftovers = [p.name for p in cache_dir.iterdir()
                 if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []


def test_a_directory_open_to_others_is_tightened(vault: CountingCommand,
                                                 cache_dir: Path) -> None:
    cache_dir.mkdir()
    cache_dir.chmod(0o755)
    get(f"keyhelper: cache directory {cache_dir} had mode 755; set to 700\n")
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    get()
    assert vault.calls == 1


def test_a_symlinked_cache_directory_is_not_used(vault: CountingCommand, tmp_path: Path,
                                                 cache_dir: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    cache_dir.symlink_to(real)
    note = (f"keyhelper: cache directory {cache_dir} not used: it is a symlink or not a "
            "directory; going on without a cache\n")
    get(note)
    get(note)
    assert vault.calls == 2
    assert list(real.iterdir()) == []


def test_a_cache_path_that_is_a_file_is_not_used(vault: CountingCommand,
                                                 cache_dir: Path) -> None:
    cache_dir.write_text("not a directory")
    get(f"keyhelper: cache directory {cache_dir} not used: it is a symlink or not a "
        "directory; going on without a cache\n")
    assert cache_dir.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI is root)")
def test_a_cache_directory_owned_by_another_user_is_not_used(vault: CountingCommand,
                                                             cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    os.chown(cache_dir, 65534, 65534)
    get(f"keyhelper: cache directory {cache_dir} not used: it is owned by another user; "
        "going on without a cache\n")
    assert list(cache_dir.iterdir()) == []


def planted_entry(key: str) -> bytes:
    entry = kentry.Entry(key, "vault", 1.0, 4e9, 4e9, None, [], kentry.env_digest([], {}))
    return entry.serialize()


def test_an_entry_that_is_a_symlink_is_not_followed(vault: CountingCommand, tmp_path: Path,
                                                    cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    planted = tmp_path / "planted"
    planted.write_bytes(planted_entry("sk-planted-by-someone-else"))
    planted.chmod(0o600)
    entry_path(cache_dir).symlink_to(planted)
    get()
    assert vault.calls == 1
    assert not entry_path(cache_dir).is_symlink()
    assert planted.read_bytes() == planted_entry("sk-planted-by-someone-else")
    get()
    assert vault.calls == 1


def test_a_well_formed_planted_entry_is_served_only_when_private(vault: CountingCommand,
                                                                 cache_dir: Path) -> None:
    """Checks the test's own planted entry is valid, so the refusals around it mean
    something: 0600 is served, 0644 is not."""
    cache_dir.mkdir(mode=0o700)
    path = entry_path(cache_dir)
    path.write_bytes(planted_entry("sk-planted-valid"))
    path.chmod(0o600)
    assert keyhelper("--backend", "vault").stdout == "sk-planted-valid\n"
    path.chmod(0o644)
    get()
    assert vault.calls == 1
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI is root)")
def test_an_entry_owned_by_another_user_is_a_miss(vault: CountingCommand,
                                                  cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    path = entry_path(cache_dir)
    path.write_bytes(planted_entry("sk-planted-foreign"))
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    get()
    assert vault.calls == 1


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "cut_before_last_newline": lambda data: data[:-1],
    "empty": lambda data: b"",
    "garbage": lambda data: os.urandom(64),
    "wrong_format": lambda data: data.replace(kentry.ENTRY_FORMAT.encode(), b"keyhelper-cache 9"),
    "key_with_space": lambda data: data.replace(b"\nkey ", b"\nkey a "),
    "non_ascii": lambda data: data.replace(b"\nkey ", "\nkey \u00e9".encode()),
    "bad_number": lambda data: data.replace(b"\nexpires ", b"\nexpires x"),
    "no_key": lambda data: b"\n".join(line for line in data.split(b"\n")
                                      if not line.startswith(b"key ")),
    "huge": lambda data: data + b"x" * 70000,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_entry_is_a_miss(vault: CountingCommand, cache_dir: Path,
                                   corruption: str) -> None:
    get()
    path = entry_path(cache_dir)
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()))
    get()
    assert vault.calls == 2
    assert kentry.parse_entry(path.read_bytes()) is not None  # rewritten whole
    get()
    assert vault.calls == 2


def test_a_leftover_lock_file_does_not_block(vault: CountingCommand, cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    entry_path(cache_dir).with_suffix(".lock").write_text("")
    get()
    assert vault.calls == 1


HOLD_LOCK = """\
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def hold_lock(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"  # the lock is held from here on
    return holder


def test_a_crashed_lock_holder_never_leaves_the_lock_stuck(vault: CountingCommand,
                                                           cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    holder = hold_lock(entry_path(cache_dir).with_suffix(".lock"))
    holder.kill()
    holder.wait()
    get()
    assert vault.calls == 1


def test_a_holder_that_never_finishes_makes_waiters_give_up_at_the_deadline(
        write_config, tmp_path: Path, cache_dir: Path) -> None:
    source = counting_command(tmp_path)
    write_config("deadline = 1\n" + source.toml("vault"))
    cache_dir.mkdir(mode=0o700)
    holder = hold_lock(entry_path(cache_dir).with_suffix(".lock"))
    try:
        run = keyhelper("--backend", "vault", timeout=10)
    finally:
        holder.kill()
        holder.wait()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: timed out waiting for another keyhelper process "
                          "fetching the same key\n")
    assert source.calls == 0


@pytest.mark.parametrize("obstacle", ["entry_is_a_directory", "lock_is_a_directory",
                                      "lock_is_a_symlink", "failure_record_is_a_directory"])
def test_an_odd_file_in_the_cache_never_makes_the_run_fail(vault: CountingCommand,
                                                           cache_dir: Path, tmp_path: Path,
                                                           obstacle: str) -> None:
    cache_dir.mkdir(mode=0o700)
    entry = entry_path(cache_dir)
    lock = entry.with_suffix(".lock")
    if obstacle == "entry_is_a_directory":
        entry.mkdir()
        note = (f"keyhelper: cache entry {entry} not written (Is a directory); going on "
                "without it\n")
    elif obstacle == "lock_is_a_directory":
        lock.mkdir()
        note = f"keyhelper: cache lock {lock} not usable (Is a directory); going on without it\n"
    elif obstacle == "lock_is_a_symlink":
        lock.symlink_to(tmp_path / "elsewhere")
        note = (f"keyhelper: cache lock {lock} not usable (Too many levels of symbolic links); "
                "going on without it\n")
    else:
        entry.with_suffix(".failed").mkdir()
        note = ""
    get(note)
    assert not (tmp_path / "elsewhere").exists()


def test_where_the_cache_lives(vault: CountingCommand, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    monkeypatch.delenv("KEYHELPER_CACHE_DIR")
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    get()
    assert len(list((runtime / "keyhelper").glob("*.entry"))) == 1
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    get()
    assert len(list((isolated_env / ".cache" / "keyhelper").glob("*.entry"))) == 1
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kpaths.cache_dir(os.environ) == str(isolated_env / ".cache" / "keyhelper")
    assert vault.calls == 2
