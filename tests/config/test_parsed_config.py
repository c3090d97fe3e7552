"""The config's parse, kept between runs (keyhelper.configfile.load_toml): a repeat run reads
the parse of the same bytes from a private record in the state directory instead of
importing tomllib and parsing. The record is keyed by the sha256 of the bytes read and vetted,
never by a time stamp; one that is damaged, not ours, or open to others is not used (the
file is parsed as before, without a word); errors read the same on every run.

Run through the real console script; a record is forged with the module's own writer, to
see which one a run used: the file says ``var = "VAR_A"``, a forged record ``"VAR_B"``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

import pytest
from helpers import keyhelper

from keyhelper.configfile import parsed_record, parsed_record_value

KEY_A = "sk-ant-Parsed_A_0123456789"
KEY_B = "sk-ant-Parsed_B_0123456789"
KEY_C = "sk-ant-Parsed_C_0123456789"
ENV = {"VAR_A": KEY_A, "VAR_B": KEY_B, "VAR_C": KEY_C}
CONFIG = '[backends.k]\ntype = "env"\nvar = "VAR_A"\n'
FORGED = {"backends": {"k": {"type": "env", "var": "VAR_B"}}}
ARGS = ("--no-cache", "-b", "k")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def run_key(expected: str) -> None:
    run = keyhelper(*ARGS, env=ENV)
    assert (run.returncode, run.stdout, run.stderr) == (0, expected + "\n", "")


@pytest.fixture
def config(write_config, cache_dir: Path) -> Path:
    write_config(CONFIG)
    return Path(os.environ["XDG_CONFIG_HOME"]) / "keyhelper" / "config.toml"


def record(cache_dir: Path) -> Path:
    """The one record in the state directory, made by the run before."""
    (path,) = (cache_dir / "state").glob("parsed-*")
    return path


def forge(path: Path, config: Path, parsed: dict[str, object], mode: int = 0o600) -> None:
    """A valid record for the config's current bytes, holding ``parsed`` instead."""
    data = parsed_record(hashlib.sha256(config.read_bytes()).hexdigest(), parsed)
    assert data is not None
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    os.close(fd)
    os.chmod(path, mode)


def test_a_repeat_run_reads_the_record(config: Path, cache_dir: Path) -> None:
    run_key(KEY_A)
    path = record(cache_dir)
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    assert CONFIG.encode() not in path.read_bytes()  # marshal, not the text
    forge(path, config, FORGED)
    run_key(KEY_B)  # the record was used: the file was not parsed


def test_one_byte_changed_is_parsed_anew_whatever_the_time_stamp(config: Path,
                                                                 cache_dir: Path) -> None:
    run_key(KEY_A)
    before = config.stat()
    config.write_text(CONFIG.replace("VAR_A", "VAR_C"))  # same size
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))  # same time stamp
    assert (config.stat().st_size, config.stat().st_mtime_ns) == (before.st_size,
                                                                   before.st_mtime_ns)
    run_key(KEY_C)
    run_key(KEY_C)  # and the record rewritten for the new bytes
    content = hashlib.sha256(config.read_bytes()).hexdigest()
    assert parsed_record_value(record(cache_dir).read_bytes(), content) is not None


@pytest.mark.parametrize("damage", [
    lambda data: b"",
    lambda data: b"garbage\n" * 4,
    lambda data: data[:-3],  # cut short
    lambda data: data.replace(b"VAR_B", b"VAR_C"),  # a byte changed: the checksum
    lambda data: data.replace(b"keyhelper-parsed 1", b"keyhelper-parsed 9"),
    lambda data: data.replace(b"python 3.", b"python 2."),  # another Python's marshal
    lambda data: data.split(b"\n", 3)[3],  # no header
], ids=["empty", "garbage", "cut", "byte", "format", "python", "headless"])
def test_a_damaged_record_is_parsed_anew_without_a_word(config: Path, cache_dir: Path,
                                                        damage) -> None:
    run_key(KEY_A)
    path = record(cache_dir)
    good = path.read_bytes()
    forge(path, config, FORGED)
    path.write_bytes(damage(path.read_bytes()))
    run_key(KEY_A)
    assert record(cache_dir).read_bytes() == good  # rewritten


def test_a_record_of_the_wrong_type_is_not_used(config: Path, cache_dir: Path) -> None:
    """Whole and current, but holding what tomllib never returns (marshal has tuples,
    bytes, sets): the file is parsed."""
    run_key(KEY_A)
    for odd in ({"backends": {"k": {"type": "env", "var": b"VAR_B"}}},
                {"backends": {"k": ("env", "VAR_B")}}, ["backends"], {1: "x"}):
        forge(record(cache_dir), config, odd)  # type: ignore[arg-type]  # on purpose
        run_key(KEY_A)


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o604])
def test_a_record_others_can_read_or_write_is_not_used(config: Path, cache_dir: Path,
                                                        mode: int) -> None:
    run_key(KEY_A)
    forge(record(cache_dir), config, FORGED, mode)
    run_key(KEY_A)


@root_only
def test_a_record_owned_by_another_user_is_not_used(config: Path, cache_dir: Path) -> None:
    run_key(KEY_A)
    path = record(cache_dir)
    forge(path, config, FORGED)
    os.chown(path, 65534, 65534)
    run_key(KEY_A)


def test_a_state_directory_open_to_others_is_not_used(config: Path, cache_dir: Path) -> None:
    run_key(KEY_A)
    forge(record(cache_dir), config, FORGED)
    os.chmod(cache_dir / "state", 0o755)  # noqa: S103 - the point of the test
    run = keyhelper(*ARGS, env=ENV)  # the run after the config tightens it, as before
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY_A + "\n", (
        f"keyhelper: state directory {cache_dir / 'state'} had mode 755; set to 700\n"))


def test_a_symlinked_record_is_not_used(config: Path, cache_dir: Path, tmp_path: Path) -> None:
    run_key(KEY_A)
    path = record(cache_dir)
    forge(path, config, FORGED)
    elsewhere = tmp_path / "forged"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    run_key(KEY_A)


@pytest.mark.parametrize(("text", "expected"), [
    ("ttl = 0\n", "{path}: ttl: expected a positive number of seconds"),
    ("chain = [\n", "{path}: not valid TOML (Invalid value (at end of document))"),
    ('[backends.k]\ntype = "env"\nvar = 3\n',
     "{path}: backends.k.var: expected a string, got an integer"),
])
def test_errors_read_the_same_on_every_run(write_config, cache_dir: Path, text: str,
                                           expected: str) -> None:
    path = write_config(text)
    runs = [keyhelper(*ARGS, env=ENV) for _ in range(3)]
    for run in runs:
        assert (run.returncode, run.stdout) == (2, "")
        assert run.stderr == f"keyhelper: config error: {expected.format(path=path)}\n"


def test_what_marshal_cannot_keep_is_not_kept() -> None:
    """A TOML date or time (marshal has no such type): parsed on every run."""
    assert parsed_record("0" * 64, {"when": datetime.date(2026, 12, 1)}) is None
    kept = parsed_record("0" * 64, {"a": [1, 2.5, True, "x", {"b": []}]})
    assert parsed_record_value(kept, "0" * 64) == {"a": [1, 2.5, True, "x", {"b": []}]}
    assert parsed_record_value(kept, "1" * 64) is None  # other bytes


def test_a_symlinked_cache_directory_holds_no_record(config: Path, cache_dir: Path,
                                                     tmp_path: Path) -> None:
    """Neither read nor written through a link (--no-cache: no word about the cache)."""
    run_key(KEY_A)
    forge(record(cache_dir), config, FORGED)
    forged = record(cache_dir).read_bytes()
    cache_dir.rename(tmp_path / "elsewhere")
    cache_dir.symlink_to(tmp_path / "elsewhere")
    run_key(KEY_A)
    config.write_text(CONFIG + "\n")
    run_key(KEY_A)
    assert record(tmp_path / "elsewhere").read_bytes() == forged  # not rewritten
