"""The command line as Claude Code and people use it: the real console script, run as a
subprocess with stdin an open pipe that is never written or closed (as Claude Code does).

Every test asserts exact stdout, exit codes and stderr wording.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest
from countingcmd import counting_command
from helpers import keyhelper

import keyhelper as keyhelper_package
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

KEY = "sk-ant-Test_0123456789abcdef"


def fp(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def assert_ttl_left(shown: int, started: float) -> None:
    """The default 300 s TTL, less no more than the time this test has taken (a loaded
    machine may take seconds between writing the entry and reporting it)."""
    elapsed = time.monotonic() - started
    assert 300 - elapsed - 1 <= shown <= 300, (shown, elapsed)


def entry_file(cache: Path, *backends: str, profile: str | None = None) -> Path:
    key = kentry.entry_key(Selection(backends, profile), os.environ)
    return cache / f"{key}.entry"


# --- the get path ---------------------------------------------------------------------------

def test_prints_exactly_the_key_and_a_newline() -> None:
    run = keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


def test_default_chain_uses_env_first() -> None:
    run = keyhelper(env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


def test_surrounding_whitespace_of_the_source_is_trimmed() -> None:
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": f"  {KEY}\n"})
    assert (run.returncode, run.stdout) == (0, KEY + "\n")


def test_equals_form_of_options() -> None:
    run = keyhelper("--backend=env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout) == (0, KEY + "\n")


def test_no_key_exit_1_lists_every_backend_and_why() -> None:
    run = keyhelper("--backend", "env")
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == ("keyhelper: no key from env\n"
                          "  env skipped: $KEYHELPER_API_KEY is not set\n")


def test_backend_repetition_is_the_chain_order(write_config) -> None:
    write_config('[backends.a]\ntype = "env"\nvar = "KEY_A"\n\n'
                 '[backends.b]\ntype = "env"\nvar = "KEY_B"\n')
    both = {"KEY_A": "key-from-a", "KEY_B": "key-from-b"}
    assert keyhelper("-b", "a", "-b", "b", env=both).stdout == "key-from-a\n"
    assert keyhelper("-b", "b", "-b", "a", env=both).stdout == "key-from-b\n"
    only_b = keyhelper("--backend", "a", "--backend", "b", env={"KEY_B": "key-from-b"})
    assert (only_b.returncode, only_b.stdout, only_b.stderr) == (0, "key-from-b\n", "")
    none = keyhelper("--backend", "b", "--backend", "a")
    assert (none.returncode, none.stdout) == (1, "")
    assert none.stderr == ("keyhelper: no key from b, a\n"
                           "  b skipped: $KEY_B is not set\n"
                           "  a skipped: $KEY_A is not set\n")


def test_config_chain_and_a_failing_backend_before_a_working_one(write_config,
                                                                 tmp_path: Path) -> None:
    write_config('chain = ["broken", "env"]\n\n'
                 f'[backends.broken]\ntype = "file"\npath = "{tmp_path}/open-key"\n')
    (tmp_path / "open-key").write_text("leaked-key\n")
    (tmp_path / "open-key").chmod(0o644)
    run = keyhelper(env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "keyhelper: no key from broken, env\n"
        f"  broken failed: {tmp_path}/open-key is readable by group or others (mode 644); "
        f"run: chmod 600 {tmp_path}/open-key\n"
        "  env skipped: $KEYHELPER_API_KEY is not set\n")


def test_a_long_report_is_cut_to_what_claude_code_shows(write_config) -> None:
    tables = "".join(f'[backends.b{i}]\ntype = "env"\nvar = "UNSET_VARIABLE_NUMBER_{i}"\n'
                     for i in range(20))
    write_config(f"chain = {[f'b{i}' for i in range(20)]!r}\n".replace("'", '"') + tables)
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert len(run.stderr) <= 500
    assert run.stderr.startswith("keyhelper: no key from b0, b1, b2")
    assert run.stderr.endswith("...\n")


@pytest.mark.parametrize(("value", "kind"), [
    ("sk-ant abc", "whitespace"),
    ("sk-ant\tabc", "whitespace"),
    ("sk-ant\nabc", "whitespace"),
    ("sk-ant\x01abc", "a control character"),
    ("sk-ant\x7fabc", "a control character"),
    ("sk-ant-\u00e9abc", "a non-ASCII character"),
    ("sk-ant-\u200babc", "a non-ASCII character"),
])
def test_refuses_a_key_claude_code_cannot_send(value: str, kind: str) -> None:
    run = keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": value})
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from env\n"
                          f"  env failed: refused: the key contains {kind}, which Claude Code "
                          "cannot send\n")


def test_refused_key_from_a_command_names_that_backend(write_config) -> None:
    write_config('[backends.vaultish]\ntype = "command"\n'
                 'command = ["printf", "sk-ant-\\\\tinner tab"]\n')
    run = keyhelper("--backend", "vaultish")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from vaultish\n"
                          "  vaultish failed: refused: the key contains whitespace, which "
                          "Claude Code cannot send\n")
    assert "inner" not in run.stderr


def test_a_command_backend_does_not_inherit_the_open_stdin(write_config) -> None:
    """Claude Code never closes the helper's stdin; a backend command that reads stdin must
    get end-of-file, not that pipe (else it would wait forever)."""
    write_config('[backends.reader]\ntype = "command"\ncommand = ["cat"]\ntimeout = 20\n')
    run = keyhelper("--backend", "reader", timeout=10)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == "keyhelper: no key from reader\n  reader failed: cat printed nothing\n"


def test_a_5000_character_key_is_printed_whole() -> None:
    long_key = "sk-" + "A" * 4997
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": long_key})
    assert (run.returncode, run.stdout) == (0, long_key + "\n")


@pytest.mark.parametrize("args", [("--bogus",), ("--backend",), ("--profile",),
                                  ("--backend", "env", "extra-argument")])
def test_usage_errors_exit_2_with_nothing_on_stdout(args: tuple[str, ...]) -> None:
    run = keyhelper(*args, env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout) == (2, "")
    assert "Error:" in run.stderr
    assert "Traceback" not in run.stderr


def test_version() -> None:
    run = keyhelper("--version")
    assert (run.returncode, run.stdout, run.stderr) == (
        0, f"keyhelper, version {keyhelper_package.__version__}\n", "")


def test_help_names_the_exit_codes() -> None:
    run = keyhelper("--help")
    assert run.returncode == 0
    assert "Exit codes: 0 key printed; 1 no key; 2 usage or configuration error." in run.stdout


# --- the cache from the command line --------------------------------------------------------

def test_second_call_is_served_from_the_cache(write_config, tmp_path: Path,
                                              cache_dir: Path) -> None:
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    first = keyhelper("--backend", "vault")
    second = keyhelper("--backend", "vault")
    assert (first.returncode, first.stdout, first.stderr) == (0, source.key + "\n", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, source.key + "\n", "")
    assert source.calls == 1
    assert entry_file(cache_dir, "vault").is_file()


def test_env_and_file_keys_are_not_copied_to_the_cache(cache_dir: Path, tmp_path: Path,
                                                        write_config) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    write_config(f'[backends.f]\ntype = "file"\npath = "{key_file}"\n')
    assert keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY}).stdout == KEY + "\n"
    assert keyhelper("-b", "f").stdout == KEY + "\n"
    entries = list(cache_dir.glob("*.entry")) if cache_dir.exists() else []
    assert entries == []
    for path in cache_dir.rglob("*") if cache_dir.exists() else []:
        if path.is_file():
            assert KEY not in path.read_text(errors="replace")


@pytest.mark.parametrize("bypass", ["flag", "env"])
def test_no_cache_neither_reads_nor_writes(bypass: str, write_config, tmp_path: Path,
                                          cache_dir: Path) -> None:
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    args = ["--backend", "vault"] + (["--no-cache"] if bypass == "flag" else [])
    env = {"KEYHELPER_NO_CACHE": "1"} if bypass == "env" else {}
    for _ in range(2):
        run = keyhelper(*args, env=env)
        assert (run.returncode, run.stdout, run.stderr) == (0, source.key + "\n", "")
    assert source.calls == 2
    assert not entry_file(cache_dir, "vault").exists()
    # A warm entry is not read either.
    assert keyhelper("--backend", "vault").stdout == source.key + "\n"
    assert source.calls == 3
    assert keyhelper(*args, env=env).stdout == source.key + "\n"
    assert source.calls == 4


def test_cache_status_lists_entries_by_fingerprint(write_config, tmp_path: Path,
                                                  cache_dir: Path) -> None:
    empty = keyhelper("cache", "status")
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        0, f"cache directory: {cache_dir}\nno entries\n", "")
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    started = time.monotonic()
    keyhelper("--backend", "vault")
    run = keyhelper("cache", "status")
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    assert lines[0] == f"cache directory: {cache_dir}"
    name = entry_file(cache_dir, "vault").stem
    left = re.fullmatch(rf"{name}  vault  {fp(source.key)}  (\d+) s left", lines[1])
    assert left, lines
    assert_ttl_left(int(left[1]), started)
    assert len(lines) == 2
    assert source.key not in run.stdout + run.stderr


def test_cache_status_reports_an_unreadable_entry(cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    (cache_dir / ("0" * 32 + ".entry")).write_bytes(b"garbage")
    (cache_dir / ("0" * 32 + ".entry")).chmod(0o600)
    run = keyhelper("cache", "status")
    assert run.stdout.splitlines()[1] == "0" * 32 + "  unreadable (treated as a miss)"


def test_cache_clear_selection_and_all(write_config, tmp_path: Path, cache_dir: Path) -> None:
    source = counting_command(tmp_path)
    write_config(source.toml("one") + source.toml("two"))
    keyhelper("-b", "one")
    keyhelper("-b", "two")
    assert source.calls == 2
    run = keyhelper("cache", "clear", "--backend", "one")
    assert (run.returncode, run.stdout, run.stderr) == (0, "removed 1 entry\n", "")
    assert not entry_file(cache_dir, "one").exists()
    assert entry_file(cache_dir, "two").exists()
    run = keyhelper("cache", "clear", "--backend", "one")
    assert (run.returncode, run.stdout) == (0, "no entry to remove\n")
    keyhelper("-b", "one")
    keyhelper("-b", "two")
    assert source.calls == 3  # "one" fetched anew, "two" still cached
    run = keyhelper("cache", "clear", "--all")
    assert (run.returncode, run.stdout, run.stderr) == (0, "removed 2 entries\n", "")
    assert list(cache_dir.glob("*.entry")) == []
    keyhelper("-b", "two")
    assert source.calls == 4


# --- doctor and backends --------------------------------------------------------------------

def test_doctor_reports_fingerprints_paths_and_time_left(write_config, tmp_path: Path,
                                                        cache_dir: Path) -> None:
    source = counting_command(tmp_path)
    config = write_config('chain = ["env", "vault"]\n' + source.toml("vault"))
    started = time.monotonic()
    assert keyhelper("-b", "vault").returncode == 0
    run = keyhelper("doctor", env={"KEYHELPER_API_KEY": KEY})
    assert run.returncode == 0, run.stderr
    assert KEY not in run.stdout + run.stderr
    assert source.key not in run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[:3] == [f"config file: {config}", "profile: none",
                         "chain: env (env) -> vault (command)"]
    assert re.fullmatch(rf"  env: ok: {fp(KEY)} \(used\) \[\d+ ms\]", lines[3]), lines
    assert re.fullmatch(rf"  vault: ok: {fp(source.key)} \[\d+ ms\]", lines[4]), lines
    assert lines[5] == f"cache entry: {entry_file(cache_dir)}"
    assert lines[6] == "cache entry state: none"  # env is not cached

    run = keyhelper("doctor", "--backend", "vault")
    lines = run.stdout.splitlines()
    assert lines[2] == "chain: vault (command)"
    assert lines[4] == f"cache entry: {entry_file(cache_dir, 'vault')}"
    left = re.fullmatch(rf"cache entry state: vault {fp(source.key)}, (\d+) s left", lines[5])
    assert left, lines
    assert_ttl_left(int(left[1]), started)


def test_doctor_without_any_key_exits_1(write_config) -> None:
    run = keyhelper("doctor", "--backend", "env")
    assert (run.returncode, run.stderr) == (1, "")
    assert run.stdout.splitlines()[:4] == [
        "config file: none (built-in defaults)", "profile: none", "chain: env (env)",
        run.stdout.splitlines()[3]]
    assert re.fullmatch(r"  env: skipped: \$KEYHELPER_API_KEY is not set \[\d+ ms\]",
                        run.stdout.splitlines()[3])


def test_backends_lists_the_built_ins() -> None:
    run = keyhelper("backends")
    assert run.returncode == 0
    lines = {line.split()[0]: line for line in run.stdout.splitlines()}
    version = keyhelper_package.__version__
    for name, summary in [("env", "an environment variable"),
                          ("file", "the first line of a file readable by its owner only"),
                          ("command", "the first line a command prints (argv list, no shell)")]:
        assert lines[name] == f"{name:10} {'keyhelper ' + version:24} usable  {summary}"
    assert {"env", "file", "command", "vault", "jwt", "keyring"} <= set(lines)


def test_internal_error_traceback_only_with_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug of keyhelper's own: one line without -v; with -v also the traceback."""
    from keyhelper import redact
    from keyhelper.app import guarded

    redact.remember("sk-ant-Internal_0123456789")

    def broken() -> int:
        raise ValueError("bad state near sk-ant-Internal_0123456789")

    assert guarded(False, broken) == 1
    quiet = capsys.readouterr()
    assert (quiet.out, quiet.err) == ("", "keyhelper: internal error: ValueError: bad state "
                                      f"near <{fp('sk-ant-Internal_0123456789')}> "
                                      "(run with -v for details)\n")
    assert guarded(True, broken) == 1
    loud = capsys.readouterr().err
    assert loud.startswith("Traceback (most recent call last):\n")
    assert "sk-ant-Internal_0123456789" not in loud
    assert loud.endswith("(run with -v for details)\n")
