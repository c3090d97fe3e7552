"""The configuration's file format, shared by the user's config (keyhelper.config) and the
administrator's policy (keyhelper.policy): reading a file only its owner (or root) could
have written, as OpenSSH refuses its config otherwise; TOML with a size and nesting limit;
the tables' keys and types, checked against declared :class:`~keyhelper.backend.Option`\\ s.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys

from keyhelper.backend import Option, option_problem, type_name
from keyhelper.base import records
from keyhelper.base.files import MAX_FILE_BYTES, read_in_private_dir, write_private
from keyhelper.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from hashlib import sha256
    from typing import Any
else:
    from keyhelper.base.records import sha256  # the bare primitive: hashlib costs ~5 ms

DEFAULT_DEADLINE = 5.0  # Claude Code warns at 10 s
DEFAULT_STALE_GRACE = 3600.0
MAX_CONFIG_BYTES = 1 << 20
_POSIX = os.name == "posix"
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0))


# Settings a profile may override, and the top level may set.
def positive_seconds(default: float | None, help: str) -> Option:
    """A number of seconds above 0, said as every such setting says it."""
    return Option((int, float), default, help=help, min=0, min_exclusive=True,
                  message="expected a positive number of seconds")


SETTINGS: dict[str, Option] = {
    "ttl": positive_seconds(None, "seconds a key is cached"),
    "deadline": positive_seconds(DEFAULT_DEADLINE, "seconds for the whole run"),
    "stale_grace": positive_seconds(DEFAULT_STALE_GRACE,
                                    "seconds past its cache life a key may be served if every "
                                    "backend fails (never past the key's own expiry)"),
    "refresh_ahead": Option((int, float), 0.2, help="last fraction of a cache life in which "
                                                    "a hit triggers a background refresh",
                            min=0, max=1, max_exclusive=True,
                            message="expected a fraction from 0 to below 1"),
    "rotation_detection": Option(bool, True, help="fetch anew when Claude Code asks again "
                                                  "before its own TTL (its key was rejected)"),
    "cache": Option(str, "files", help="where keys are cached", choices=("files", "keyring")),
}


# The hooks' output shapes (keyhelper.hooks, docs/hooks.md): headers with "{key}" in them.
HEADERS = Option(dict, item_type=str, help='headers for `keyhelper headers`/`desktop`, '
                                           '"{key}" standing for the key')

TOP_LEVEL: dict[str, Option] = {
    "chain": Option(list, item_type=str),
    "headers": HEADERS,
    "mcp": Option(dict),
    "backends": Option(dict),
    "profiles": Option(dict),
    "plugins": Option(dict),
    "audit": Option(dict),
    **SETTINGS,
}


PROFILE_KEYS: dict[str, Option] = {"chain": Option(list, item_type=str), "headers": HEADERS,
                                   **SETTINGS}


MCP_KEYS: dict[str, Option] = {
    "servers": Option(dict, item_type=str, help="MCP server name -> profile"),
    "urls": Option(dict, item_type=str, help="MCP server URL prefix -> profile"),
}


PLUGINS_KEYS: dict[str, Option] = {
    "allow": Option(list, item_type=str, help="distributions whose plugins may be imported"),
}


AUDIT_KEYS: dict[str, Option] = {
    "path": Option(str, help="JSON lines file, absolute or ~/..."),
    "syslog": Option(bool, False, help="also send each line to syslog (facility authpriv)"),
    "syslog_socket": Option(str, "/dev/log", help="the local syslog socket"),
    "max_bytes": Option(int, 10 * 1024 * 1024, help="rotate the file at this size", min=1024,
                        message="expected a size in bytes, at least 1024"),
    "keep": Option(int, 5, help="rotated files kept (path.1 ... path.N)", min=1, max=100,
                   message="expected a number of files from 1 to 100"),
}


class BackendSpec:
    """One link of the chain: a configured name, its type, and its raw options. (A plain
    class: dataclasses costs ~12 ms to import here, a sixth of a miss.)"""

    __slots__ = ("name", "options", "source", "type")

    def __init__(self, name: str, type: str, options: Mapping[str, Any], source: str):
        self.name = name
        self.type = type
        self.options = options
        self.source = source  # where it was defined, for error messages

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackendSpec):
            return NotImplemented
        return (self.name, self.type, self.options, self.source) == (
            other.name, other.type, other.options, other.source)

    __hash__ = None  # type: ignore[assignment]  # options is a mapping, as with the dataclass

    def __repr__(self) -> str:
        return (f"BackendSpec(name={self.name!r}, type={self.type!r}, "
                f"options={self.options!r}, source={self.source!r})")


def read_trusted(path: str, *, root_only: bool = False) -> bytes | None:
    """The bytes of a file no one but its owner could have written; None if it is absent.

    ConfigError (naming the file) when it is not a regular file, or on POSIX when it is not
    owned by you or root (root alone with ``root_only``), or it or a directory above it is
    writable by group or others, a sticky root-owned directory such as /tmp excepted (as
    OpenSSH's safe_path). A symlink is resolved first and every directory of both the path
    and its target checked; the file is then opened without following a link or blocking
    on a FIFO, and checked on the descriptor that is read (no swap after the check).
    """
    real = os.path.realpath(path)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read it ({exc.strerror})", source=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("not a regular file", source=path)
        owners = _Owners(root_only)
        problem = _unsafe(st, owners, path, "") or _unsafe_directories(path, real, owners)
        if problem is not None:
            raise ConfigError(problem, source=path)
        return _read_at_most(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read it ({exc.strerror})", source=path) from None
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Owners:
    """Who may own a trusted file and its directories: you or root, or root alone."""

    def __init__(self, root_only: bool):
        self.uids = {0} if root_only or not _POSIX else {0, os.getuid()}
        self.described = "root" if root_only else "you or root"


def _unsafe(st: os.stat_result, owners: _Owners, path: str, what: str) -> str | None:
    """Why a file (``what`` "") or directory (``what`` "directory PATH is ") cannot be
    trusted, or None. Owner and mode exist on POSIX only; elsewhere None."""
    if not _POSIX:
        return None
    if st.st_uid not in owners.uids:
        return f"{what}owned by {_user(st.st_uid)}, not by {owners.described}"
    sticky_root = bool(what) and st.st_uid == 0 and bool(st.st_mode & stat.S_ISVTX)
    if st.st_mode & 0o022 and not sticky_root:
        import shlex  # only for this message: it imports re

        return (f"{what}writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run: chmod go-w {shlex.quote(path)}")
    return None


def _unsafe_directories(path: str, real: str, owners: _Owners) -> str | None:
    """The first directory above the file (as named, and after links) others could write."""
    if not _POSIX:
        return None
    checked: set[str] = set()
    for start in (os.path.dirname(os.path.abspath(path)), os.path.dirname(real)):
        directory = start
        while directory not in checked:  # up to "/", whose parent is itself
            checked.add(directory)
            try:
                st = os.stat(directory)
            except OSError as exc:
                return f"cannot inspect directory {directory} ({exc.strerror})"
            problem = _unsafe(st, owners, directory, f"directory {directory} is ")
            if problem is not None:
                return problem
            directory = os.path.dirname(directory)
    return None


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def parse_toml(data: bytes, source: str) -> dict[str, Any]:
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("larger than 1 MiB", source=source)
    import tomllib  # ~5 ms with its re and datetime: only when a file is parsed

    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", source=source) from None
    except RecursionError:  # tomllib recurses once per level of nested lists or tables
        raise ConfigError("not usable: lists or tables nested too deeply",
                          source=source) from None


def check_table(table: Mapping[str, Any], schema: Mapping[str, Option], *, source: str,
                prefix: str) -> dict[str, Any]:
    """Check keys, types, choices and bounds of ``table`` against ``schema`` (no defaults
    filled in)."""
    checked: dict[str, Any] = {}
    for key, value in table.items():
        spec = schema.get(key)
        where = f"{prefix}{key}"
        if spec is None:
            raise ConfigError(f"unknown key (expected one of: {', '.join(sorted(schema))})",
                              source=source, key=where)
        problem = option_problem(value, spec, type_name(value))
        if problem is not None:
            inside, message = problem
            raise ConfigError(message, source=source, key=where + inside)
        checked[key] = value
    return checked


def check_audit(table: Mapping[str, Any], *, source: str) -> None:
    checked = check_table(table, AUDIT_KEYS, source=source, prefix="audit.")
    for key in ("path", "syslog_socket"):
        value = checked.get(key)
        if value is not None and (not value or "\x00" in value
                                  or not os.path.isabs(os.path.expanduser(value))):
            raise ConfigError("expected an absolute path (or one starting with ~/)",
                              source=source, key=f"audit.{key}")


# --- the parsed file, kept between runs ---------------------------------------------------
# Importing tomllib and parsing cost ~5-15 ms here, on every miss. A repeat run reads the
# parse of the same bytes back from a private state file instead. marshal because it is
# built in (no import cost) and loads only plain values; json costs ~15 ms to import here,
# pickle can run code. The record is trusted only when it is ours (0600 in our 0700 state
# directory, keyhelper.base.files.read_in_private_dir), its header names this format, this
# marshal version and this Python, its checksum matches, it is for exactly the bytes just
# read and vetted (their sha256), and it holds only the types tomllib gives; any doubt, and
# the file is parsed as before (and the record rewritten).
PARSED_FORMAT = "keyhelper-parsed 1"
_PARSED_TYPES = (str, int, float, bool)


def load_toml(data: bytes, source: str, state_dir: str | None) -> dict[str, Any]:
    """:func:`parse_toml`, through the record of its last parse in ``state_dir`` (None:
    no record). The record is keyed by the content's sha256, never by a time stamp."""
    if state_dir is None:
        return parse_toml(data, source)
    name = "parsed-" + records.digest(source)
    content = sha256(data).hexdigest()
    kept = parsed_record_value(read_in_private_dir(state_dir, name), content)
    if kept is not None:
        return kept
    parsed = parse_toml(data, source)
    record = parsed_record(content, parsed)
    if record is not None:
        try:
            write_private(os.path.join(state_dir, name), record, durable=False)
        except OSError:
            return parsed  # a record not written: parsed again next time
    return parsed


def _parsed_header(content: str, payload: bytes) -> bytes:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return (f"{PARSED_FORMAT} marshal {marshal.version} python {version}\n{content}\n"
            f"{sha256(payload).hexdigest()}\n").encode("ascii")


def parsed_record(content: str, parsed: dict[str, Any]) -> bytes | None:
    """The record of ``parsed``, the parse of bytes whose sha256 is ``content``; None when
    it cannot be kept (a TOML date or time: marshal has no such type; too large)."""
    try:
        payload = marshal.dumps(parsed)
    except ValueError:
        return None
    record = _parsed_header(content, payload) + payload
    return record if len(record) < MAX_FILE_BYTES else None  # read_file_private's limit


def parsed_record_value(record: bytes | None, content: str) -> dict[str, Any] | None:
    """The parse a record holds, if it is whole, current and for bytes of sha256
    ``content``; else None."""
    if record is None:
        return None
    lines = record.split(b"\n", 3)
    if len(lines) != 4:
        return None
    payload = lines[3]
    if record[: len(record) - len(payload)] != _parsed_header(content, payload):
        return None
    try:
        value = marshal.loads(payload)  # noqa: S302 - ours, checked above; see PARSED_FORMAT
    except (ValueError, EOFError, TypeError):
        return None
    try:
        return value if isinstance(value, dict) and _plain(value) else None
    except RecursionError:
        return None


def _plain(value: object) -> bool:
    """Whether ``value`` holds only what tomllib returns (dates and times are not kept)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in _PARSED_TYPES
