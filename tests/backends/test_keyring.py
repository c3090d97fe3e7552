"""The keyring backend, ``keyhelper set``/``delete`` and the keyring cache store, against a
real gnome-keyring Secret Service on a private D-Bus session bus
(tests/support/fixtures_keyring.py), through the real console script. Each test uses its own
service name in the shared keyring.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_keyring import SecretService
from helpers import SITECUSTOMIZE, keyhelper

from keyhelper.base import records as kentry
from keyhelper.base.files import Selection
from keyhelper.redact import fingerprint

pytestmark = pytest.mark.keyring

KEY = "sk-ant-keyring-0123456789abcdef"
USER = "alice"
LOCKED = ("the keyring is locked and cannot prompt here: unlock it (log in to the desktop "
          "session, or open your keyring app), then retry")


@pytest.fixture(autouse=True)
def no_inherited_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach the developer's own session bus: each test passes its bus explicitly."""
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)


@pytest.fixture
def service_name(tmp_path: Path) -> str:
    return f"keyhelper-test-{tmp_path.name}"


@pytest.fixture
def keyring_config(write_config: object, service_name: str) -> Path:
    return write_config(  # type: ignore[operator, no-any-return]
        f'chain = ["keyring"]\n[backends.keyring]\nservice = "{service_name}"\n'
        f'username = "{USER}"\n')


def entry_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.entry")) if cache_dir.exists() else []


def test_reads_a_secret_stored_with_secret_tool(secret_service: SecretService,
                                                keyring_config: Path, service_name: str,
                                                cache_dir: Path) -> None:
    secret_service.store(KEY + "\n", service=service_name, username=USER)  # newline trimmed
    first = keyhelper(env=secret_service.env)
    assert (first.returncode, first.stdout, first.stderr) == (0, KEY + "\n", "")
    # A keyring read is worth caching (~150 ms vs ~11 ms): the default store is a 0600 file.
    [entry] = entry_files(cache_dir)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert "backend keyring\n" in entry.read_text()
    secret_service.clear(service=service_name, username=USER)
    second = keyhelper(env=secret_service.env)
    assert (second.returncode, second.stdout) == (0, KEY + "\n")


def test_set_from_a_pipe_is_seen_by_secret_tool(secret_service: SecretService,
                                                keyring_config: Path, service_name: str) -> None:
    done = keyhelper("set", env=secret_service.env, input_text=KEY + "\n")
    assert done.returncode == 0
    assert done.stdout == ""
    assert done.stderr == (f"keyhelper: stored {fingerprint(KEY)} in keyring (service "
                           f"{service_name}, user {USER}, SecretService.Keyring); 0 entries "
                           "cleared from the cache\n")
    # The attributes python-keyring's SecretService backend writes.
    assert secret_service.lookup(service=service_name, username=USER,
                                 application="Python keyring library") == KEY
    got = keyhelper(env=secret_service.env)
    assert (got.returncode, got.stdout, got.stderr) == (0, KEY + "\n", "")


def test_set_replaces_the_old_key_and_its_cache_entry(secret_service: SecretService,
                                                      keyring_config: Path, service_name: str,
                                                      cache_dir: Path) -> None:
    secret_service.store("sk-old-key", service=service_name, username=USER)
    assert keyhelper(env=secret_service.env).stdout == "sk-old-key\n"
    assert len(entry_files(cache_dir)) == 1
    done = keyhelper("set", env=secret_service.env, input_text=KEY)
    assert done.returncode == 0
    assert done.stderr.endswith("; 1 entry cleared from the cache\n")
    assert entry_files(cache_dir) == []
    got = keyhelper(env=secret_service.env)
    assert (got.returncode, got.stdout) == (0, KEY + "\n")
    # The item secret-tool made is gone too: it would shadow the new key on reads.
    assert secret_service.lookup(service=service_name, username=USER) == KEY
    assert secret_service.search_all(service=service_name).count("secret = ") == 1


def test_set_refuses_a_bad_key_and_argv(secret_service: SecretService, keyring_config: Path,
                                        service_name: str) -> None:
    bad = keyhelper("set", env=secret_service.env, input_text="sk-two words\n")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == ("keyhelper: refused: the key contains whitespace, which Claude Code "
                          "cannot send; nothing stored\n")
    empty = keyhelper("set", env=secret_service.env, input_text="\n")
    assert (empty.returncode, empty.stderr) == (
        2, "keyhelper: refused: the key is empty; nothing stored\n")
    argv = keyhelper("set", KEY, env=secret_service.env, input_text="")
    assert (argv.returncode, argv.stdout) == (2, "")
    assert argv.stderr == ("keyhelper: set takes no key argument (ps and shell history would "
                           "show it): pipe it on stdin, or type it at the prompt\n")
    other = keyhelper("set", "--backend", "env", env=secret_service.env, input_text=KEY)
    assert (other.returncode, other.stderr) == (
        2, "keyhelper: backend 'env' is of type 'env'; keyhelper set and delete work with "
           "keyring-type backends only\n")
    assert secret_service.lookup(service=service_name, username=USER) is None


def test_delete(secret_service: SecretService, keyring_config: Path,
                service_name: str) -> None:
    assert keyhelper("set", env=secret_service.env, input_text=KEY).returncode == 0
    assert keyhelper(env=secret_service.env).stdout == KEY + "\n"
    done = keyhelper("delete", env=secret_service.env)
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr == (f"keyhelper: deleted the key of service {service_name}, user {USER} "
                           "from keyring (SecretService.Keyring); 1 entry cleared from the "
                           "cache\n")
    assert secret_service.lookup(service=service_name, username=USER) is None
    again = keyhelper("delete", env=secret_service.env)
    assert (again.returncode, again.stderr) == (
        1, f"keyhelper: keyring: no key stored for service {service_name}, user {USER}; "
           "nothing deleted (0 entries cleared from the cache)\n")
    gone = keyhelper(env=secret_service.env)
    assert (gone.returncode, gone.stdout) == (1, "")
    assert gone.stderr == (
        "keyhelper: no key from keyring\n"
        f"  keyring skipped: no key stored for service {service_name}, user {USER} "
        "(store one with: keyhelper set --backend keyring)\n")


def test_named_backend_with_forced_keyring_class(secret_service: SecretService,
                                                 write_config: object,
                                                 service_name: str) -> None:
    write_config(  # type: ignore[operator]
        'chain = ["env", "work"]\n[backends.work]\ntype = "keyring"\n'
        f'service = "{service_name}"\nusername = "bob"\n'
        'keyring_backend = "keyring.backends.SecretService.Keyring"\n')
    done = keyhelper("set", env=secret_service.env, input_text=KEY)  # first keyring-type link
    assert done.returncode == 0, done.stderr
    assert f"in work (service {service_name}, user bob," in done.stderr
    assert secret_service.lookup(service=service_name, username="bob") == KEY
    assert keyhelper(env=secret_service.env).stdout == KEY + "\n"


def test_unknown_forced_keyring_class_is_a_config_error(secret_service: SecretService,
                                                        write_config: object) -> None:
    write_config('chain = ["keyring"]\n[backends.keyring]\n'  # type: ignore[operator]
                 'keyring_backend = "keyring.backends.Nowhere.Keyring"\n')
    done = keyhelper(env=secret_service.env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("keyhelper: config error: backends.keyring.keyring_backend: "
                                  "cannot load python-keyring backend "
                                  "'keyring.backends.Nowhere.Keyring'")


def test_locked_collection(fresh_secret_service: SecretService, keyring_config: Path,
                           service_name: str) -> None:
    fresh_secret_service.store(KEY, service=service_name, username=USER)
    fresh_secret_service.lock_login()
    got = keyhelper(env=fresh_secret_service.env)
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == f"keyhelper: no key from keyring\n  keyring skipped: {LOCKED}\n"
    stored = keyhelper("set", env=fresh_secret_service.env, input_text=KEY)
    assert (stored.returncode, stored.stderr) == (1, f"keyhelper: keyring: {LOCKED}\n")


def test_no_dbus_session_moves_on_to_the_next_backend(write_config: object,
                                                      isolated_env: Path) -> None:
    key_file = isolated_env / "key.txt"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    write_config(  # type: ignore[operator]
        f'chain = ["keyring", "file"]\n[backends.file]\npath = "{key_file}"\n')
    started = time.monotonic()
    got = keyhelper()
    assert (got.returncode, got.stdout, got.stderr) == (0, KEY + "\n", "")
    alone = keyhelper("--backend", "keyring")
    assert time.monotonic() - started < 5  # no D-Bus stall: the chain moves on at once
    assert (alone.returncode, alone.stdout) == (1, "")
    assert alone.stderr == (
        "keyhelper: no key from keyring\n  keyring skipped: no OS keyring: no D-Bus session "
        "($DBUS_SESSION_BUS_ADDRESS is not set); run inside a desktop session, or start a "
        "Secret Service such as gnome-keyring-daemon --unlock under dbus-run-session\n")


def test_stale_bus_address(tmp_path: Path) -> None:
    address = f"unix:path={tmp_path}/gone"  # a session that ended: the socket is gone
    got = keyhelper("--backend", "keyring", env={"DBUS_SESSION_BUS_ADDRESS": address})
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == (
        f"keyhelper: no key from keyring\n  keyring skipped: no OS keyring: cannot connect to "
        f"the D-Bus session bus at {address} (No such file or directory); start a Secret "
        "Service (gnome-keyring-daemon, KeePassXC) in this D-Bus session, or install the "
        "gnome-keyring package\n")


def test_bus_without_a_secret_service(bare_session_bus: SecretService) -> None:
    got = keyhelper("--backend", "keyring", env=bare_session_bus.env)
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == (
        "keyhelper: no key from keyring\n  keyring skipped: no OS keyring: The Secret Service "
        "daemon is neither running nor activatable through D-Bus; start a Secret Service "
        "(gnome-keyring-daemon, KeePassXC) in this D-Bus session, or install the gnome-keyring "
        "package\n")


@pytest.fixture
def stalled_bus(tmp_path: Path) -> Iterator[str]:
    """A fake session bus that accepts connections and never answers: the stall of
    jaraco/keyring 434/473 (a real dbus-daemon cannot be made to hang on demand)."""
    path = tmp_path / "stalled-bus"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"unix:path={path}"
    server.close()
    for conn in accepted:
        conn.close()


def test_a_stalled_bus_is_cut_off_by_the_timeout(stalled_bus: str, write_config: object) -> None:
    write_config('chain = ["keyring", "env"]\n[backends.keyring]\n'  # type: ignore[operator]
                 'timeout = 0.5\n')
    started = time.monotonic()
    got = keyhelper(env={"DBUS_SESSION_BUS_ADDRESS": stalled_bus, "KEYHELPER_API_KEY": KEY})
    elapsed = time.monotonic() - started
    assert (got.returncode, got.stdout, got.stderr) == (0, KEY + "\n", "")
    assert elapsed < 4, elapsed
    alone = keyhelper("--backend", "keyring", env={"DBUS_SESSION_BUS_ADDRESS": stalled_bus})
    assert (alone.returncode, alone.stdout) == (1, "")
    assert alone.stderr == ("keyhelper: no key from keyring\n  keyring failed: the OS keyring "
                            "did not answer within 0.5 s (a stalled D-Bus Secret Service?)\n")


def test_keyring_cache_store_keeps_no_key_on_disk(secret_service: SecretService,
                                                  write_config: object, service_name: str,
                                                  cache_dir: Path) -> None:
    config = write_config(  # type: ignore[operator]
        f'cache = "keyring"\nchain = ["keyring"]\n[backends.keyring]\n'
        f'service = "{service_name}"\nusername = "{USER}"\n')
    secret_service.store(KEY, service=service_name, username=USER)
    first = keyhelper(env=secret_service.env)
    assert (first.returncode, first.stdout, first.stderr) == (0, KEY + "\n", "")
    entry_key = kentry.entry_key(Selection(), os.environ)
    cached = secret_service.lookup(service="keyhelper-cache", username=entry_key)
    assert cached is not None
    entry = kentry.parse_entry(cached.encode())
    assert entry is not None and (entry.key, entry.backend) == (KEY, "keyring")
    # Served from the keyring store once the source is gone.
    secret_service.clear(service=service_name, username=USER)
    second = keyhelper(env=secret_service.env)
    assert (second.returncode, second.stdout, second.stderr) == (0, KEY + "\n", "")
    # Nothing in the cache directory holds the key (locks and markers only).
    assert entry_files(cache_dir) == []
    for path in cache_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    # keyhelper set clears the keyring store's entry, so the new key is served at once.
    assert keyhelper("set", env=secret_service.env, input_text="sk-newer-key").returncode == 0
    assert secret_service.lookup(service="keyhelper-cache", username=entry_key) is None
    assert keyhelper(env=secret_service.env).stdout == "sk-newer-key\n"
    assert config.exists()


def test_keyring_cache_store_with_no_keyring_still_serves(write_config: object,
                                                          cache_dir: Path) -> None:
    write_config('cache = "keyring"\nchain = ["command"]\n'  # type: ignore[operator]
                 f'[backends.command]\ncommand = ["echo", "{KEY}"]\n')
    got = keyhelper()
    assert (got.returncode, got.stdout) == (0, KEY + "\n")
    assert got.stderr.startswith("keyhelper: keyring cache not used: no OS keyring: no D-Bus "
                                 "session")
    assert entry_files(cache_dir) == []


def test_a_hit_on_a_keyring_key_never_loads_keyring(secret_service: SecretService,
                                                    keyring_config: Path, service_name: str,
                                                    tmp_path: Path) -> None:
    secret_service.store(KEY, service=service_name, username=USER)
    assert keyhelper(env=secret_service.env).stdout == KEY + "\n"  # fetched, now cached
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "modules.txt"
    hit = keyhelper(env={**secret_service.env, "PYTHONPATH": str(hook),
                         "MODULES_OUT": str(out)})
    assert (hit.returncode, hit.stdout, hit.stderr) == (0, KEY + "\n", "")
    modules = set(out.read_text().split("\n"))
    assert "keyhelper.cachepolicy" in modules
    assert not {m for m in modules if m.split(".")[0] in
                ("keyring", "secretstorage", "jeepney", "keyhelper_plugins")}
    assert not {"keyhelper.oskeyring", "keyhelper.resolver"} & modules


def test_importing_the_backend_does_not_import_keyring() -> None:
    code = ("import sys, keyhelper_plugins.keyring, keyhelper.oskeyring; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('keyring', 'secretstorage', 'jeepney')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout == "[]\n"


def test_set_on_a_terminal_prompts_without_echo(secret_service: SecretService,
                                                keyring_config: Path, service_name: str) -> None:
    """A real pseudo-terminal: hidden prompt plus confirmation; the key never echoes."""
    import pty
    import select

    from helpers import SCRIPT

    leader, follower = pty.openpty()
    proc = subprocess.Popen([SCRIPT, "set"], stdin=follower, stdout=follower, stderr=follower,
                            env={**os.environ, **secret_service.env}, start_new_session=True)
    os.close(follower)
    shown = b""
    answers = [b"API key: ", b"Repeat for confirmation: "]
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if answers and shown.endswith(answers[0]):
                answers.pop(0)
                os.write(leader, KEY.encode() + b"\n")
        assert proc.wait(10) == 0, shown
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    assert answers == []
    text = shown.decode()
    assert KEY not in text
    assert f"keyhelper: stored {fingerprint(KEY)} in keyring" in text
    assert secret_service.lookup(service=service_name, username=USER) == KEY
