"""The config file is trusted only if no one but you (or root) could have written it.

It names the commands keyhelper runs, the plugin allowlist and the audit target, so, as
OpenSSH does for its own config: a file or any directory above it that is owned by another
user, or writable by group or others, is refused with exit 2 and one line saying why (a
sticky root-owned directory such as /tmp is fine above it). Runs the real console script.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from countingcmd import counting_command
from helpers import keyhelper

from keyhelper import config, configfile
from keyhelper.errors import ConfigError

KEY = "sk-ant-Trust_0123456789"
OTHER_UID = 54321  # no such account is needed: chown takes any number
CONFIG = 'chain = ["k"]\n[backends.k]\ntype = "env"\nvar = "TRUST_KEY"\n'

pytestmark = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="needs root to chown files to another user "
                                       "(CI runs as root)")


def get(*args: str) -> tuple[int, str, str]:
    run = keyhelper(*args, env={"TRUST_KEY": KEY})
    return run.returncode, run.stdout, run.stderr


def refused(path: Path | str, why: str) -> tuple[int, str, str]:
    return 2, "", f"keyhelper: config error: {path}: {why}\n"


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620])
def test_a_config_writable_by_group_or_others_is_refused(write_config, mode: int) -> None:
    path = write_config(CONFIG)
    assert get() == (0, KEY + "\n", "")
    path.chmod(mode)
    assert get() == refused(path, f"writable by group or others (mode {mode:o}); "
                                  f"run: chmod go-w {path}")


def test_a_config_readable_by_others_is_fine(write_config) -> None:
    path = write_config(CONFIG)
    path.chmod(0o644)
    assert get() == (0, KEY + "\n", "")


def test_a_config_owned_by_another_user_is_refused(write_config) -> None:
    path = write_config(CONFIG)
    os.chown(path, OTHER_UID, -1)  # e.g. `sudo -E keyhelper` reading a user's config
    assert get() == refused(path, f"owned by uid {OTHER_UID}, not by you or root")


@pytest.mark.parametrize("level", [1, 2])  # ~/.config/keyhelper, ~/.config
def test_a_directory_above_that_others_can_write_is_refused(write_config, level: int) -> None:
    path = write_config(CONFIG)
    directory = path.parents[level - 1]
    directory.chmod(0o777)
    assert get() == refused(path, f"directory {directory} is writable by group or others "
                                  f"(mode 777); run: chmod go-w {directory}")
    directory.chmod(0o775)
    assert get() == refused(path, f"directory {directory} is writable by group or others "
                                  f"(mode 775); run: chmod go-w {directory}")


def test_a_directory_above_owned_by_another_user_is_refused(write_config,
                                                            isolated_env: Path) -> None:
    path = write_config(CONFIG)
    os.chown(isolated_env, OTHER_UID, -1)
    assert get() == refused(path, f"directory {isolated_env} is owned by uid {OTHER_UID}, "
                                  "not by you or root")


@pytest.fixture
def under_tmp() -> Iterator[Path]:
    """A private directory straight under /tmp (sticky and root-owned)."""
    assert os.stat("/tmp").st_mode & stat.S_ISVTX and os.stat("/tmp").st_uid == 0
    directory = Path(tempfile.mkdtemp(prefix="keyhelper-trust-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def test_a_sticky_root_owned_directory_above_is_fine(under_tmp: Path) -> None:
    nested = under_tmp / "config.toml"
    nested.write_text(CONFIG)
    assert get("--config", str(nested)) == (0, KEY + "\n", "")
    # Straight in /tmp too: the sticky bit keeps others from replacing a file they do not own.
    direct = Path(tempfile.mkstemp(prefix="keyhelper-trust-", suffix=".toml", dir="/tmp")[1])
    try:
        direct.write_text(CONFIG)
        direct.chmod(0o644)
        assert get("--config", str(direct)) == (0, KEY + "\n", "")
    finally:
        direct.unlink()


@pytest.mark.parametrize(("mode", "owner", "why"), [
    (0o777, 0, "is writable by group or others (mode 777); run: chmod go-w {dir}"),
    (0o1777, 0, None),  # sticky and root's (we run as root): fine
    (0o1777, OTHER_UID, f"is owned by uid {OTHER_UID}, not by you or root"),
])
def test_a_writable_directory_must_be_sticky_and_roots(under_tmp: Path, mode: int, owner: int,
                                                       why: str | None) -> None:
    shared = under_tmp / "shared"
    shared.mkdir()
    path = shared / "config.toml"
    path.write_text(CONFIG)
    shared.chmod(mode)
    os.chown(shared, owner, -1)
    expected = (0, KEY + "\n", "") if why is None else refused(
        path, f"directory {shared} " + why.format(dir=shared))
    assert get("-c", str(path)) == expected


def test_a_fifo_in_place_of_the_config_is_refused_without_hanging(write_config) -> None:
    path = write_config(CONFIG)
    path.unlink()
    os.mkfifo(path)
    started = time.monotonic()
    assert get() == refused(path, "not a regular file")
    assert time.monotonic() - started < 10  # no writer ever opens it: a blocking open hangs


def test_a_symlinked_config_is_checked_where_it_points(write_config, tmp_path: Path) -> None:
    safe = tmp_path / "dotfiles"
    safe.mkdir()
    target = safe / "keyhelper.toml"
    target.write_text(CONFIG)
    link = write_config("")
    link.unlink()
    link.symlink_to(target)  # as dotfile managers (stow, home-manager) do
    assert get() == (0, KEY + "\n", "")
    # --no-cache: the hit path notices a change of the file itself only (its identity); a
    # directory opened to others afterwards is the full path's to judge.
    safe.chmod(0o777)
    assert get("--no-cache") == refused(link, f"directory {safe} is writable by group or "
                                              f"others (mode 777); run: chmod go-w {safe}")
    safe.chmod(0o755)
    link.parent.chmod(0o777)  # others could point the link elsewhere
    assert get("--no-cache") == refused(link, f"directory {link.parent} is writable by group "
                                              f"or others (mode 777); run: chmod go-w "
                                              f"{link.parent}")


def test_a_config_made_unsafe_after_a_key_was_cached_is_refused_on_the_next_call(
        write_config, tmp_path: Path) -> None:
    source = counting_command(tmp_path)
    path = write_config('chain = ["vault"]\n' + source.toml("vault"))
    for _ in range(2):
        run = keyhelper()
        assert (run.returncode, run.stdout, run.stderr) == (0, source.key + "\n", "")
    assert source.calls == 1  # the second call was a cache hit
    path.chmod(0o666)  # the hit path sees the mode change: a miss, and the full path refuses
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == refused(
        path, f"writable by group or others (mode 666); run: chmod go-w {path}")
    path.chmod(0o644)
    os.chown(path, OTHER_UID, -1)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == refused(
        path, f"owned by uid {OTHER_UID}, not by you or root")
    assert source.calls == 1


# --- as a user other than root ----------------------------------------------------------------
# The interpreter lives under /root (mode 700) here, so a second account cannot run the console
# script: these run the same reader in-process with getuid() answering another account's uid.

@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(configfile.os, "getuid", lambda: OTHER_UID)
    return OTHER_UID


def test_as_a_user_root_owned_and_own_files_are_trusted(as_user: int, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    assert config.read_trusted(str(path)) == CONFIG.encode()  # root's
    os.chown(path, as_user, -1)
    assert config.read_trusted(str(path)) == CONFIG.encode()  # the user's own
    os.chown(path, as_user + 1, -1)
    with pytest.raises(ConfigError) as raised:
        config.read_trusted(str(path))
    assert raised.value.describe() == (f"config error: {path}: owned by uid {as_user + 1}, "
                                       "not by you or root")
    os.chown(path, as_user, -1)
    with pytest.raises(ConfigError) as raised:
        config.read_trusted(str(path), root_only=True)  # the policy file: root's alone
    assert raised.value.describe() == (f"config error: {path}: owned by uid {as_user}, "
                                       "not by root")


def test_a_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert config.read_trusted(str(tmp_path / "absent.toml")) is None
