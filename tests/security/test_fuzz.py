"""Property-based fuzzing of what keyhelper reads: the config file and the cache entries.

Malformed config: ConfigError in-process, exit 2 with a one-line message through the CLI,
never a traceback. Malformed cache entry: a miss (None), never an exception; through the
console script a corrupt entry means a re-fetch.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from countingcmd import counting_command
from helpers import keyhelper
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keyhelper import config
from keyhelper.base import audit
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection
from keyhelper.errors import ConfigError
from keyhelper.registry import Registry, allowlist

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
CLI_FUZZ = settings(max_examples=6, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
REGISTRY = Registry()

# --- TOML-ish text and TOML documents ---------------------------------------------------------

VOCABULARY = ["chain", "backends", "profiles", "plugins", "audit", "ttl", "deadline",
              "stale_grace", "refresh_ahead", "rotation_detection", "cache", "env", "file",
              "command", "type", "var", "path", "timeout", "allow", "max_bytes", "keep",
              "syslog", "syslog_socket", "work", "x"]
FRAGMENTS = [*VOCABULARY, "[", "]", "[[", "]]", "=", '"', "'", "'''", '"""', ".", "\n", "{",
             "}", ",", "#", " ", "\\", "1", "-1", "0.5", "true", "inf", "nan", "1979-05-27",
             "07:32:00", "\x00", "\r", "\t", "é", "\ufeff"]
toml_ish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)

plain_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
keys = st.one_of(st.sampled_from(VOCABULARY), plain_text)
scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), plain_text,
    st.datetimes(), st.dates(), st.times())
structures = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                           max_size=4),
    max_leaves=20)
documents = st.dictionaries(keys, structures, max_size=6)


def toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def load_everything(path: Path) -> None:
    """What a run does with a config: load, apply, validate backend options and settings."""
    settings_ = config.load(Selection(config=str(path)), os.environ)
    audit.settings(settings_.raw)
    allowlist(settings_.raw.get("plugins"), {})
    for spec in (*settings_.chain, *settings_.backends.values()):
        if spec.type in ("env", "file", "command"):
            REGISTRY.load(spec.type).validate(spec.options, source=spec.source,
                                              key=f"backends.{spec.name}")


def only_config_errors(path: Path, data: bytes) -> ConfigError | None:
    path.write_bytes(data)
    try:
        load_everything(path)
    except ConfigError as exc:
        assert "\n" not in exc.describe(), exc.describe()
        return exc
    return None


@FUZZ
@given(text=st.one_of(toml_ish, st.text(max_size=200)))
def test_config_text_gives_config_error_or_settings(text: str, tmp_path: Path) -> None:
    only_config_errors(tmp_path / "config.toml", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=200))
def test_config_bytes_give_config_error_or_settings(data: bytes, tmp_path: Path) -> None:
    only_config_errors(tmp_path / "config.toml", data)


@FUZZ
@given(doc=documents)
def test_config_structures_give_config_error_or_settings(doc: dict[str, Any],
                                                         tmp_path: Path) -> None:
    text = toml_document(doc)
    assert tomllib.loads(text).keys() == doc.keys()  # the generator writes real TOML
    only_config_errors(tmp_path / "config.toml", text.encode())


@FUZZ
@given(backends=st.dictionaries(st.sampled_from(["env", "file", "command", "a"]),
                                st.dictionaries(keys, structures, max_size=3), max_size=3),
       chain=st.lists(st.sampled_from(["env", "file", "command", "a", "b"]), max_size=3))
def test_backend_tables_give_config_error_or_settings(backends: dict[str, Any],
                                                      chain: list[str],
                                                      tmp_path: Path) -> None:
    text = toml_document({"chain": chain, "backends": backends})
    only_config_errors(tmp_path / "config.toml", text.encode())


@CLI_FUZZ
@given(doc=documents, bad=st.sampled_from(['"no-such-key" = 1', "ttl = -1", "[[chain]]",
                                           'chain = "env"', "[audit]\nkeep = 0", "= 1",
                                           'x = """']))
def test_cli_turns_a_bad_config_into_exit_2_and_one_line(doc: dict[str, Any], bad: str,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    data = (toml_document(doc) + bad + "\n").encode()
    error = only_config_errors(path, data)
    assume(error is not None)
    assert error is not None
    run = keyhelper("-c", str(path), "-b", "env", env={"KEYHELPER_API_KEY": "sk-ant-fuzz"})
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith("keyhelper: config error: ")
    assert run.stderr.count("\n") == 1 and run.stderr.endswith("\n")
    assert "Traceback" not in run.stderr
    message = "keyhelper: " + error.describe()
    assert run.stderr[:-1] == (message if len(message) <= 480 else message[:477] + "...")


# --- cache entries ------------------------------------------------------------------------------

VALID = kentry.Entry("sk-ant-Entry_0123456789", "vault", 1.0e9, 2.0e9, 1.5e9, None,
                    ["KEYHELPER_API_KEY"], "0" * 32, {"audit": "/var/log/x"}).serialize()


def check_parsed(data: bytes) -> None:
    entry = kentry.parse_entry(data)
    if entry is not None:
        assert isinstance(entry, kentry.Entry)
        assert entry.key and all("!" <= ch <= "~" for ch in entry.key)


@FUZZ
@given(data=st.binary(max_size=600))
def test_entry_parser_on_arbitrary_bytes(data: bytes) -> None:
    check_parsed(data)


@FUZZ
@given(position=st.integers(0, len(VALID)), cut=st.integers(0, 40), insert=st.binary(max_size=8))
def test_entry_parser_on_damaged_entries(position: int, cut: int, insert: bytes) -> None:
    check_parsed(VALID[:position] + insert + VALID[position + cut:])


@FUZZ
@given(lines=st.lists(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30),
                      max_size=12))
def test_entry_parser_on_entry_shaped_text(lines: list[str]) -> None:
    check_parsed("\n".join([kentry.ENTRY_FORMAT, *lines, ""]).encode())


def with_check(body: bytes) -> bytes:
    """``body`` with the checksum line a version-3 entry ends with, so that fuzzing reaches
    the field parser behind it."""
    return body + kentry.CHECK + hashlib.sha256(body).hexdigest().encode() + b"\n"


@FUZZ
@given(lines=st.lists(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30),
                      max_size=12))
def test_entry_parser_on_entry_shaped_text_behind_a_valid_checksum(lines: list[str]) -> None:
    check_parsed(with_check("\n".join([kentry.ENTRY_FORMAT, *lines, ""]).encode()))


@FUZZ
@given(position=st.integers(0, len(VALID)), cut=st.integers(0, 40), insert=st.binary(max_size=8))
def test_entry_parser_on_damaged_fields_behind_a_valid_checksum(position: int, cut: int,
                                                                insert: bytes) -> None:
    body = VALID[:VALID.rindex(kentry.CHECK)]
    check_parsed(with_check(body[:position] + insert + body[position + cut:]))


def test_a_valid_entry_round_trips() -> None:
    entry = kentry.parse_entry(VALID)
    assert entry is not None and entry.serialize() == VALID


CORRUPT = {
    "empty": b"",
    "garbage": bytes(range(256)),
    "wrong header": VALID.replace(kentry.ENTRY_FORMAT.encode(), b"keyhelper-cache 9"),
    "truncated": VALID[: len(VALID) // 2],
    "no final newline": VALID[:-1],
    "key with a space": VALID.replace(b"key sk-ant-", b"key sk ant-"),
    "times not numbers": VALID.replace(b"expires ", b"expires soon"),
    "not ascii": VALID.replace(b"backend vault", "backend vé".encode()),
    "too large": VALID + b"x" * 70000,
}


@pytest.mark.parametrize("damage", CORRUPT)
def test_console_script_turns_a_corrupt_entry_into_a_refetch(damage: str, write_config,
                                                             tmp_path: Path,
                                                             cache_dir: Path) -> None:
    counted = counting_command(tmp_path)
    write_config('chain = ["counted"]\n' + counted.toml())
    assert keyhelper().stdout == counted.key + "\n"
    entry = cache_dir / f"{kentry.entry_key(Selection(), os.environ)}.entry"
    data = entry.read_bytes()
    fresh_times = CORRUPT[damage]
    if damage not in ("empty", "garbage"):  # keep the real entry's names and fresh times
        fresh_times = data.replace(b"key " + counted.key.encode(), b"key sk-ant-Entry_0123456789")
        fresh_times = CORRUPT[damage].replace(VALID, fresh_times) if damage == "too large" \
            else _damage(fresh_times, damage)
    entry.write_bytes(fresh_times)
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, counted.key + "\n", "")
    assert counted.calls == 2
    assert kentry.parse_entry(entry.read_bytes()) is not None  # rewritten whole


def _damage(data: bytes, damage: str) -> bytes:
    if damage == "wrong header":
        return data.replace(kentry.ENTRY_FORMAT.encode(), b"keyhelper-cache 9")
    if damage == "truncated":
        return data[: len(data) // 2]
    if damage == "no final newline":
        return data[:-1]
    if damage == "key with a space":
        return data.replace(b"key sk-ant-", b"key sk ant-")
    if damage == "times not numbers":
        return data.replace(b"expires ", b"expires soon")
    return data.replace(b"backend counted", "backend cöunted".encode())
