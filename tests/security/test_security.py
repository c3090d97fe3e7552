"""The security review, one test per point (README "Security model and threat model").

The secret never shows up in child processes' argv, exception text, -v output, the audit log
or file names; cache files are private whatever the umask; entries and the cache directory
are opened without following symlinks and with owner checks, on the opened descriptor.
Runs the real console script. "Another user" is simulated by chown as root.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from countingcmd import counting_command
from helpers import SCRIPT, keyhelper
from plugin_dists import PLUGINS, make_distribution

from keyhelper import backend, errors
from keyhelper.base import audit
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

SECRET = "sk-ant-Secret_0123456789abcdefXYZ"
OTHER_UID = 54321
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root "
                               "(CI runs as root)")


def fp(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def entry_path(cache_dir: Path, *backends: str) -> Path:
    return cache_dir / f"{kentry.entry_key(Selection(backends), os.environ)}.entry"


@pytest.fixture
def counted(tmp_path: Path) -> Any:
    return counting_command(tmp_path, key=SECRET)


# --- argv -------------------------------------------------------------------------------------

ARGV_SPY = """\
import os, sys
with open(sys.argv[1], "wb") as out:
    out.write(open("/proc/self/cmdline", "rb").read() + b"\\n")
    out.write(open(f"/proc/{os.getppid()}/cmdline", "rb").read())
print(open(sys.argv[2]).read().strip())
"""


def test_no_secret_in_the_argv_of_keyhelper_or_its_children(write_config,
                                                             tmp_path: Path) -> None:
    (tmp_path / "spy.py").write_text(ARGV_SPY)
    key_file = tmp_path / "key.txt"
    key_file.write_text(SECRET + "\n")
    seen = tmp_path / "argv.bin"
    write_config('chain = ["env", "spy"]\n[backends.spy]\ntype = "command"\n'
                 f'command = ["python3", "{tmp_path / "spy.py"}", "{seen}", "{key_file}"]\n')
    other = "sk-ant-FromTheEnvironment_987654321"
    # doctor runs every backend: the command runs after a key (from env) was seen.
    run = keyhelper("doctor", env={"KEYHELPER_API_KEY": other})
    assert run.returncode == 0, run.stderr
    child, parent = seen.read_bytes().split(b"\n", 1)
    assert child.split(b"\0")[1:3] == [str(tmp_path / "spy.py").encode(), str(seen).encode()]
    assert parent.split(b"\0")[1:3] == [SCRIPT.encode(), b"doctor"]  # keyhelper's own argv
    for secret in (SECRET, other):
        assert secret.encode() not in child + parent
        assert secret not in run.stdout + run.stderr


# --- exception text and -v output -------------------------------------------------------------

@pytest.fixture
def leaky_env(tmp_path_factory: pytest.TempPathFactory, write_config) -> dict[str, str]:
    root = tmp_path_factory.mktemp("leaky-site")
    version, eps, source = PLUGINS["leakyplug"]
    make_distribution(root, "leakyplug", version, eps, source)
    write_config('[backends.source]\ntype = "env"\nvar = "SOURCE_KEY"\n'
                 '[backends.fallback]\ntype = "env"\nvar = "FALLBACK_KEY"\n')
    return {"PYTHONPATH": str(root), "SOURCE_KEY": SECRET}


def test_verbose_output_after_a_secret_was_seen_is_scrubbed(leaky_env: dict[str, str]) -> None:
    """A plugin fetches a key through context.resolve, logs it at debug level and puts it in
    its exception: -v prints the log line and the traceback, with the fingerprint instead."""
    fallback = "sk-ant-Fallback_0123456789"
    run = keyhelper("-v", "-b", "leaky", "-b", "fallback",
                    env={**leaky_env, "FALLBACK_KEY": fallback})
    assert (run.returncode, run.stdout) == (0, fallback + "\n")
    assert SECRET not in run.stderr
    assert f"resolved <{fp(SECRET)}>" in run.stderr
    assert f"WARNING leakyplug: using <{fp(SECRET)}>" in run.stderr
    assert f"RuntimeError: the store refused <{fp(SECRET)}>" in run.stderr
    assert "Traceback (most recent call last)" in run.stderr


def test_exception_text_in_the_no_key_report_is_scrubbed(leaky_env: dict[str, str]) -> None:
    run = keyhelper("-b", "leaky", env=leaky_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (f"keyhelper: using <{fp(SECRET)}>\n"  # the plugin's own logger
                          "keyhelper: no key from leaky\n  leaky failed: RuntimeError: the "
                          f"store refused <{fp(SECRET)}>\n")


def test_a_refused_key_is_not_shown() -> None:
    run = keyhelper("-v", "-b", "env", env={"KEYHELPER_API_KEY": "sk-ant-with space-0123"})
    assert (run.returncode, run.stdout) == (1, "")
    assert "sk-ant-with space-0123" not in run.stderr
    assert "env failed: refused: the key contains whitespace" in run.stderr


def test_token_context_and_errors_never_render_the_value() -> None:
    token = backend.Token(SECRET, 1.0, {"source": "x"})
    context = backend.Context(None, {"KEYHELPER_API_KEY": SECRET}, 0.0, "")
    texts = [repr(token), str(token), repr(context), str(errors.NoKeyError([]))]
    assert all(SECRET not in text for text in texts)
    assert fp(SECRET) in repr(token)


# --- audit log and file names -----------------------------------------------------------------

def test_no_secret_in_the_audit_log_or_in_any_file_name(write_config, counted: Any,
                                                        tmp_path: Path, cache_dir: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_config(f'chain = ["counted"]\n[profiles.p]\n[audit]\npath = "{log}"\n'
                 + counted.toml())
    for args in ((), (), ("-p", "p"), ("-b", "counted")):
        run = keyhelper(*args)
        assert (run.returncode, run.stdout) == (0, SECRET + "\n")
    assert keyhelper("cache", "status").returncode == 0
    text = log.read_text()
    assert SECRET not in text and text.count(fp(SECRET)) == len(text.splitlines()) >= 3
    names = [p.name for p in cache_dir.rglob("*")] + [p.name for p in tmp_path.rglob("*")]
    assert names and not [n for n in names if SECRET in n or fp(SECRET)[7:] in n]


def test_reports_show_fingerprints_never_the_key(write_config, counted: Any) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == SECRET + "\n"
    for args in (("cache", "status"), ("doctor",), ("backends",)):
        run = keyhelper(*args)
        assert SECRET not in run.stdout + run.stderr, args
    assert fp(SECRET) in keyhelper("cache", "status").stdout


# --- modes whatever the umask -----------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_files_are_private_whatever_the_umask(write_config, counted: Any, tmp_path: Path,
                                              cache_dir: Path, umask: int) -> None:
    log = tmp_path / "audit.jsonl"
    write_config(f'chain = ["counted"]\n[audit]\npath = "{log}"\n' + counted.toml())
    for _ in range(2):
        run = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(umask))
        assert (run.returncode, run.stdout, run.stderr) == (0, SECRET + "\n", "")
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    found = list(cache_dir.rglob("*"))
    assert entry_path(cache_dir) in found
    for path in found:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


# --- symlinks ---------------------------------------------------------------------------------

def test_a_symlinked_entry_is_a_miss_and_is_not_followed(write_config, counted: Any,
                                                         tmp_path: Path,
                                                         cache_dir: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == SECRET + "\n"
    entry = entry_path(cache_dir)
    planted = tmp_path / "planted.entry"
    planted.write_bytes(entry.read_bytes().replace(SECRET.encode(), b"sk-ant-Planted_000000"))
    planted.chmod(0o600)
    entry.unlink()
    entry.symlink_to(planted)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, SECRET + "\n", "")
    assert counted.calls == 2  # a miss: fetched again
    assert not entry.is_symlink() and SECRET.encode() in entry.read_bytes()  # link replaced
    assert b"sk-ant-Planted_000000" in planted.read_bytes()  # target untouched


def test_a_symlinked_cache_directory_is_refused(counted: Any, write_config,
                                                tmp_path: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    real = tmp_path / "real-cache"
    real.mkdir(mode=0o700)
    link = tmp_path / "link-cache"
    link.symlink_to(real)
    for _ in range(2):
        run = keyhelper(env={"KEYHELPER_CACHE_DIR": str(link)})
        assert (run.returncode, run.stdout) == (0, SECRET + "\n")
        assert run.stderr == (f"keyhelper: cache directory {link} not used: it is a symlink "
                              "or not a directory; going on without a cache\n")
    assert counted.calls == 2
    assert list(real.iterdir()) == []


# --- owners and modes of what is read -----------------------------------------------------

@root_only
def test_a_cache_directory_of_another_user_is_refused(counted: Any, write_config,
                                                      cache_dir: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == SECRET + "\n"
    os.chown(cache_dir, OTHER_UID, OTHER_UID)
    run = keyhelper()
    assert (run.returncode, run.stdout) == (0, SECRET + "\n")
    assert run.stderr == (f"keyhelper: cache directory {cache_dir} not used: it is owned by "
                          "another user; going on without a cache\n")
    assert counted.calls == 2


@root_only
def test_an_entry_of_another_user_is_a_miss(counted: Any, write_config,
                                            cache_dir: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == SECRET + "\n"
    entry = entry_path(cache_dir)
    os.chown(entry, OTHER_UID, OTHER_UID)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, SECRET + "\n", "")
    assert counted.calls == 2
    assert entry.stat().st_uid == os.getuid()  # replaced by our own


def test_an_entry_readable_by_others_is_a_miss(counted: Any, write_config,
                                               cache_dir: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == SECRET + "\n"
    entry = entry_path(cache_dir)
    entry.chmod(0o644)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, SECRET + "\n", "")
    assert counted.calls == 2
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_a_fifo_in_place_of_an_entry_is_a_miss_without_blocking(counted: Any, write_config,
                                                                 cache_dir: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == SECRET + "\n"
    entry = entry_path(cache_dir)
    entry.unlink()
    os.mkfifo(entry, 0o600)
    run = keyhelper(timeout=20)
    assert (run.returncode, run.stdout, run.stderr) == (0, SECRET + "\n", "")
    assert counted.calls == 2


# --- no time-of-check/time-of-use gap ---------------------------------------------------------

def test_entry_checks_are_made_on_the_open_descriptor(monkeypatch: pytest.MonkeyPatch,
                                                      cache_dir: Path) -> None:
    """The reader opens with O_NOFOLLOW, then checks type, owner and mode with fstat on that
    descriptor: no path-based stat that a swap between check and use could fool."""
    cache_dir.mkdir(mode=0o700)
    entry = kentry.Entry(SECRET, "x", 1.0, 2.0, 1.5, None, [], "")
    path = cache_dir / "k.entry"
    path.write_bytes(entry.serialize())
    path.chmod(0o600)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("path-based check")

    for name in ("stat", "lstat", "access"):
        monkeypatch.setattr(os, name, forbidden)
    for name in ("exists", "isfile", "islink", "getsize"):
        monkeypatch.setattr(os.path, name, forbidden)
    got = kentry.read_entry(str(cache_dir), "k")
    assert got is not None and got.key == SECRET
    monkeypatch.undo()
    path.chmod(0o640)
    assert kentry.read_entry(str(cache_dir), "k") is None


def test_audit_settings_never_carry_the_key(tmp_path: Path) -> None:
    extra = audit.entry_extra({"audit": {"path": str(tmp_path / "a.jsonl"), "syslog": True}})
    assert sorted(extra) == ["audit", "audit_keep", "audit_max_bytes", "audit_syslog"]
    assert SECRET not in "".join(extra.values())
