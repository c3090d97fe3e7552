"""The audit log: one JSON line per key handed out, never the key; rotation, concurrent
writers, syslog, doctor. Runs the real console script; syslog goes to a real datagram
socket bound by the test (the stand-in for /dev/log, which this machine has no daemon on)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from countingcmd import counting_command
from helpers import SITECUSTOMIZE, keyhelper
from hypothesis import given
from hypothesis import strategies as st

from keyhelper import redact
from keyhelper.base import audit, records
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

KEY = "sk-ant-Audit_0123456789abcdef"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def fp(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected(backend: str, cache: str, key: str, profile: str | None = None) -> dict[str, Any]:
    return {"user": pwd.getpwuid(os.getuid()).pw_name, "host": os.uname().nodename,
            "profile": profile, "backend": backend, "cache": cache, "fingerprint": fp(key),
            "expires": None}


def without_time_and_pid(entry: dict[str, Any]) -> dict[str, Any]:
    assert re.fullmatch(TIME, entry["time"]), entry
    assert isinstance(entry["pid"], int) and entry["pid"] > 0
    return {k: v for k, v in entry.items() if k not in ("time", "pid")}


@pytest.fixture
def counted(tmp_path: Path) -> Any:
    return counting_command(tmp_path)


# --- through the console script -------------------------------------------------------------

def test_a_fetch_writes_one_line_without_the_key(write_config, counted: Any,
                                                 tmp_path: Path) -> None:
    log = tmp_path / "logs" / "audit.jsonl"
    log.parent.mkdir()
    write_config(f'chain = ["counted"]\n[audit]\npath = "{log}"\n' + counted.toml())
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, counted.key + "\n", "")
    [entry] = lines(log)
    assert list(entry) == ["time", "user", "host", "pid", "profile", "backend", "cache",
                           "fingerprint", "expires"]
    assert without_time_and_pid(entry) == expected("counted", "miss", counted.key)
    assert counted.key not in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_cache_hit_on_the_lean_path_writes_a_hit_line(write_config, counted: Any,
                                                        tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_config(f'chain = ["counted"]\n[audit]\npath = "{log}"\n' + counted.toml())
    assert keyhelper().stdout == counted.key + "\n"
    assert keyhelper().stdout == counted.key + "\n"
    assert counted.calls == 1
    assert [without_time_and_pid(e)["cache"] for e in lines(log)] == ["miss", "hit"]
    assert without_time_and_pid(lines(log)[1]) == expected("counted", "hit", counted.key)




def test_an_audited_hit_stays_on_the_lean_path(write_config, counted: Any,
                                               tmp_path: Path) -> None:
    """Logging a hit costs no json, logging, socket or core import."""
    log = tmp_path / "audit.jsonl"
    write_config(f'chain = ["counted"]\n[audit]\npath = "{log}"\n' + counted.toml())
    assert keyhelper().stdout == counted.key + "\n"
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "modules.txt"
    run = keyhelper(env={"PYTHONPATH": str(tmp_path / "hook"), "MODULES_OUT": str(out)})
    assert (run.returncode, run.stdout, counted.calls) == (0, counted.key + "\n", 1)
    bare = tmp_path / "bare.txt"
    subprocess.run([sys.executable, "-c", "pass"], check=True, env={
        **os.environ, "PYTHONPATH": str(tmp_path / "hook"), "MODULES_OUT": str(bare)})
    # What the interpreter loads by itself (an editable install's finder loads pathlib).
    modules = set(out.read_text().split("\n")) - set(bare.read_text().split("\n"))
    assert "keyhelper.base.audit" in modules
    heavy = {"json", "logging", "socket", "hashlib", "pathlib", "click", "keyhelper.resolver",
             "keyhelper.config"}
    assert not modules & heavy, sorted(modules & heavy)
    assert len(lines(log)) == 2


def test_a_hit_line_from_the_lean_writer(write_config, counted: Any, tmp_path: Path) -> None:
    """The lean writer, fed the real entry the full path cached (its extra fields)."""
    log = tmp_path / "audit.jsonl"
    write_config(f'chain = ["counted"]\n[profiles.work]\n[audit]\npath = "{log}"\n'
                 + counted.toml())
    assert keyhelper("-p", "work").returncode == 0
    selection = Selection((), "work")
    entry = kentry.read_entry(os.environ["KEYHELPER_CACHE_DIR"],
                             kentry.entry_key(selection, os.environ))
    assert entry is not None and entry.extra["audit"] == str(log)
    audit.append_hit(entry, selection.profile)
    assert [without_time_and_pid(e) for e in lines(log)] == [
        expected("counted", "miss", counted.key, "work"),
        expected("counted", "hit", counted.key, "work")]


def test_an_uncached_backend_is_logged_as_cache_none(write_config, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_config(f'[audit]\npath = "{log}"\n')
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    assert [without_time_and_pid(e) for e in lines(log)] == [expected("env", "none", KEY)]
    assert KEY not in log.read_text()


def test_no_key_no_line(write_config, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_config(f'[audit]\npath = "{log}"\n')
    assert keyhelper("-b", "env").returncode == 1
    assert not log.exists()


def test_audit_off_writes_nothing_and_keeps_entries_plain(write_config, counted: Any,
                                                          cache_dir: Path) -> None:
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().returncode == 0
    [entry_file] = cache_dir.glob("*.entry")
    assert b"x-audit" not in entry_file.read_bytes()


def test_an_unwritable_log_warns_and_still_gives_the_key(write_config, tmp_path: Path) -> None:
    log = tmp_path / "a-directory"
    log.mkdir()
    write_config(f'[audit]\npath = "{log}"\n')
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout) == (0, KEY + "\n")
    assert run.stderr == "keyhelper: audit log not written (Is a directory)\n"


def test_a_symlinked_log_is_not_followed(write_config, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    log = tmp_path / "audit.jsonl"
    log.symlink_to(target)
    write_config(f'[audit]\npath = "{log}"\n')
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout) == (0, KEY + "\n")
    assert run.stderr == "keyhelper: audit log not written (Too many levels of symbolic links)\n"
    assert target.read_text() == ""


def test_syslog_gets_the_same_line(write_config, tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(10)
        write_config(f'[audit]\nsyslog = true\nsyslog_socket = "{address}"\n')
        run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY})
        assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
        message = server.recv(65536).decode()
    match = re.fullmatch(r"<86>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d keyhelper\[(\d+)\]: (.*)",
                         message)
    assert match, message
    entry = json.loads(match.group(2))
    assert entry["pid"] == int(match.group(1))
    assert without_time_and_pid(entry) == expected("env", "none", KEY)


def test_doctor_shows_the_last_entries(write_config, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_config(f'[audit]\npath = "{log}"\nmax_bytes = 4096\nkeep = 2\n')
    for _ in range(6):
        assert keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY}).returncode == 0
    run = keyhelper("doctor", "-b", "env", env={"KEYHELPER_API_KEY": KEY})
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    start = out.index(f"audit log: {log} (rotated at 4096 bytes, 2 old files kept)")
    user, host = pwd.getpwuid(os.getuid()).pw_name, os.uname().nodename
    rows = out[start + 1:]
    assert len(rows) == 5
    for row in rows:
        assert re.fullmatch(rf"  {TIME}  none  env  {fp(KEY)}  {user}  {re.escape(host)}  -",
                            row), row
    assert KEY not in run.stdout


@pytest.mark.parametrize(("table", "message"), [
    ('path = "audit.jsonl"', "audit.path: expected an absolute path (or one starting with ~/)"),
    ("keep = 0", "audit.keep: expected a number of files from 1 to 100"),
    ("max_bytes = 10", "audit.max_bytes: expected a size in bytes, at least 1024"),
    ("syslog = 1", "audit.syslog: expected true or false, got an integer"),
    ("file = 1", "audit.file: unknown key (expected one of: keep, max_bytes, path, syslog, "
                 "syslog_socket)"),
])
def test_audit_table_is_validated(write_config, table: str, message: str) -> None:
    path = write_config(f"[audit]\n{table}\n")
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"keyhelper: config error: {path}: {message}\n"


def test_home_relative_path(write_config, isolated_env: Path) -> None:
    write_config('[audit]\npath = "~/audit.jsonl"\n')
    assert keyhelper("-b", "env", env={"KEYHELPER_API_KEY": KEY}).returncode == 0
    assert len(lines(isolated_env / "audit.jsonl")) == 1


# --- the writer ------------------------------------------------------------------------------

def test_rotation_keeps_n_old_files(tmp_path: Path) -> None:
    tmp_path = tmp_path / "logs"
    tmp_path.mkdir()
    path = str(tmp_path / "audit.jsonl")
    line = audit.format_line(audit.issuance(None, "env", "hit", KEY, None))
    for _ in range(200):
        audit.append(path, line, max_bytes=2048, keep=2)
    names = sorted(os.listdir(tmp_path))
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]
    for name in names[:3]:
        size = os.path.getsize(tmp_path / name)
        assert size < 2048 + len(line)
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert os.path.getsize(tmp_path / "audit.jsonl.1") >= 2048


WRITER = """
import sys
from keyhelper.base import audit

path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for seq in range(count):
    fields = {"who": who, "seq": seq, "pad": "x" * 150}
    audit.append(path, audit.format_line(fields), max_bytes=16384, keep=60)
"""


def test_concurrent_writers_lose_and_tear_no_line(tmp_path: Path) -> None:
    tmp_path = tmp_path / "logs"
    tmp_path.mkdir()
    path = tmp_path / "audit.jsonl"
    writers, count = 8, 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(count)])
             for n in range(writers)]
    assert [p.wait(60) for p in procs] == [0] * writers
    seen = []
    files = [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert len(files) >= 3  # it rotated under contention (how often depends on timing)
    for file in files:
        for line in file.read_text().splitlines():
            entry = json.loads(line)  # a torn or interleaved line fails here
            seen.append((entry["who"], entry["seq"]))
    assert sorted(seen) == sorted((str(w), s) for w in range(writers) for s in range(count))


def test_append_hit_never_raises(tmp_path: Path) -> None:
    entry = kentry.Entry(KEY, "env", 1.0, 2.0, 1.5, None, [], "",
                        {"audit": str(tmp_path / "no" / "such" / "dir"), "audit_max_bytes": "x"})
    audit.append_hit(entry, None)
    entry.extra = {"audit": str(tmp_path / "a.jsonl"), "audit_max_bytes": "not a number"}
    audit.append_hit(entry, None)
    entry.extra = {"audit_syslog": str(tmp_path / "no-socket")}
    audit.append_hit(entry, None)
    assert (tmp_path / "a.jsonl").exists()  # written before the bad max_bytes stopped it
    assert not (tmp_path / "no").exists()


def test_fingerprint_matches_the_documented_recipe() -> None:
    assert audit.fingerprint(KEY) == redact.fingerprint(KEY) == fp(KEY)
    assert fp(KEY) == "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()[:12]


def test_expiry_and_time_are_utc_iso() -> None:
    fields = audit.issuance("p", "vault", "miss", KEY, 1798765432.5, now=1798765000.25)
    assert fields["time"] == "2027-01-01T00:56:40.250Z"
    assert fields["expires"] == "2027-01-01T01:03:52.500Z"


def test_entry_extra_round_trips_through_the_cache_entry(tmp_path: Path) -> None:
    odd = str(tmp_path / "dossier é %20 x" / "audit.jsonl")
    settings = audit.settings({"audit": {"path": odd, "syslog": True}})
    assert settings is not None
    entry = kentry.Entry(KEY, "env", 1.0, 2.0, 1.5, None, [], "", settings.extra())
    parsed = kentry.parse_entry(entry.serialize())
    assert parsed is not None
    assert parsed.extra["audit"] == odd  # the record quotes it (keyhelper.base.records)
    assert parsed.extra["audit_syslog"] == "/dev/log"


@given(st.dictionaries(st.text(max_size=20), st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=50)), max_size=8))
def test_lean_json_is_json(fields: dict[str, Any]) -> None:
    line = audit.format_line(fields)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == fields


@given(st.text())
def test_entry_field_encoding_round_trips(text: str) -> None:
    encoded = records.quote(text)
    assert all(" " <= ch <= "~" for ch in encoded)
    assert records.unquote(encoded) == text
