"""The cache directory's records: the entry (one cached key, its times and what it was
fetched under, named by the selection and the identity of its config, never by the secret),
the route (the chain's leading env and file steps, which the hit path reads itself), and
the served markers (which entry one Claude Code process was handed, and when). Each is one
record (keyhelper.base.records), read and written with keyhelper.base.files."""

from __future__ import annotations

import os

from keyhelper.base import records
from keyhelper.base.files import (
    MISSING,
    read_file_private,
    read_in_private_dir,
    read_user_file,
    write_private,
)
from keyhelper.base.paths import POLICY_PATH, config_path, file_identity
from keyhelper.base.records import digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from keyhelper.base.paths import Selection

# Version 2: every value is %-quoted (records); a version-1 entry is a miss.
ENTRY_FORMAT = "keyhelper-cache 2"
MAX_KEY_CHARS = 16384  # the longest key Claude Code sends (as keyhelper.redact)
_TIMES = ("stored", "expires", "refresh")


class Entry:
    """One cached key and its times (epoch seconds)."""

    __slots__ = ("backend", "env_names", "envsum", "expires", "extra", "key", "refresh",
                 "stored", "token_expires")

    def __init__(self, key: str, backend: str, stored: float, expires: float, refresh: float,
                 token_expires: float | None, env_names: Sequence[str], envsum: str,
                 extra: Mapping[str, str] | None = None):
        self.key = key
        self.backend = backend
        self.stored = stored
        self.expires = expires
        self.refresh = refresh
        self.token_expires = token_expires
        self.env_names = tuple(env_names)
        self.envsum = envsum
        # Settings the hit path must know without the config, e.g. the audit log's target.
        self.extra = dict(extra or {})

    def serialize(self) -> bytes:
        token_expires = "-" if self.token_expires is None else repr(self.token_expires)
        fields = [("backend", self.backend), ("stored", repr(self.stored)),
                  ("expires", repr(self.expires)), ("refresh", repr(self.refresh)),
                  ("token_expires", token_expires),
                  *(("env_name", name) for name in self.env_names), ("envsum", self.envsum),
                  *((f"x-{name}", value) for name, value in sorted(self.extra.items())),
                  ("key", self.key)]
        return records.dump(ENTRY_FORMAT, fields)

    def matches_env(self, env: Mapping[str, str]) -> bool:
        return env_digest(self.env_names, env) == self.envsum


def parse_entry(data: bytes) -> Entry | None:
    """An entry from its bytes, or None if anything is off (a corrupt entry is a miss)."""
    fields = records.load(ENTRY_FORMAT, data)
    if fields is None:
        return None
    table = dict(fields)
    try:
        key = table["key"]
        if not sendable(key):
            return None
        names = [value for name, value in fields if name == "env_name"]
        unique = [name for name, _ in fields if name != "env_name"]
        if len(unique) != len(set(unique)):
            return None  # a field given twice: not written by keyhelper
        token_expires = (None if table["token_expires"] == "-"
                         else records.number(table["token_expires"]))
        stored, expires, refresh = (records.number(table[name]) for name in _TIMES)
        extra = {name[2:]: value for name, value in fields if name.startswith("x-")}
        return Entry(key, table["backend"], stored, expires, refresh, token_expires, names,
                     table["envsum"], extra)
    except (KeyError, ValueError):
        return None


def sendable(key: str) -> bool:
    """Printable ASCII without spaces, 16,384 characters at most: what Claude Code can send
    as a key (keyhelper.redact.invalid_key_reason says why not)."""
    return 0 < len(key) <= MAX_KEY_CHARS and all("!" <= ch <= "~" for ch in key)


def entry_path(directory: str, key: str) -> str:
    return os.path.join(directory, key + ".entry")


def read_entry(directory: str, key: str) -> Entry | None:
    data = read_in_private_dir(directory, key + ".entry")
    return None if data is None else parse_entry(data)


def entry_key(selection: Selection, env: Mapping[str, str]) -> str:
    """Names the cache entry of a selection: its arguments plus the identities of its config
    file and of the administrator's policy (a policy change takes effect on the next call).

    Derived from names and file metadata only, never from a secret.
    """
    path, _ = config_path(selection, env)
    parts = ["v1", "\x1f".join(selection.backends), selection.profile or "", path,
             file_identity(path), file_identity(POLICY_PATH)]
    return digest("\x00".join(parts))


def env_digest(names: Sequence[str], env: Mapping[str, str]) -> str:
    text = "\x00".join(f"{name}={env.get(name, chr(0))}" for name in names)
    return digest(text)


# --- the route: env and file keys read on the hit path, never cached ---------------------
# A chain that starts with env or file backends has its key read straight from there. The
# full path records those first steps (names of variables and files, never a key) in a route
# record; the hit path follows it and hands over to the full path on any doubt, which then
# decides and reports exactly as it would have.

ROUTE_FORMAT = "keyhelper-route 2"
ROUTE_KINDS = ("env", "file")
NEXT = ""  # a step that found nothing: go on (the backend would have skipped)


def route_path(directory: str, key: str) -> str:
    return os.path.join(directory, key + ".route")


def serialize_route(steps: Sequence[tuple[str, str]]) -> bytes:
    return records.dump(ROUTE_FORMAT, steps)


def parse_route(data: bytes) -> list[tuple[str, str]] | None:
    steps = records.load(ROUTE_FORMAT, data)
    if steps is None or any(kind not in ROUTE_KINDS or not arg for kind, arg in steps):
        return None
    return steps


def key_file_line(path: str) -> str | None:
    """As the file backend reads it: NEXT if missing, None on anything it would refuse."""
    data, why = read_user_file(os.path.expanduser(path))
    if data is None:
        return NEXT if why == MISSING else None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    return (lines[0].strip() if lines else "") or None


def follow_route(data: bytes | None, env: Mapping[str, str]) -> str | None:
    """The key from the route's steps (``data``: the route file, None if there is none);
    NEXT when they found none; None when the full path must decide (a value it would
    refuse, an unreadable file)."""
    steps = parse_route(data) if data is not None else []
    if steps is None:
        return None
    for kind, arg in steps:
        raw = env.get(arg) if kind == "env" else None
        value = (raw.strip() if raw else NEXT) if kind == "env" else key_file_line(arg)
        if value is None:
            return None
        if value != NEXT:
            return value if sendable(value) else None
    return NEXT


# --- served markers: rotation detection's memory (keyhelper.cachepolicy.rejected) ---------

MARKER_FORMAT = "keyhelper-served 1"


def marker_path(directory: str, key: str, caller: str) -> str:
    return os.path.join(directory, f"{key}.{caller}.served")


def read_marker(path: str) -> tuple[float, float] | None:
    """(stored time of the entry served, when it was served) to one Claude Code process."""
    data = read_file_private(path)
    table = None if data is None else records.load_unique(MARKER_FORMAT, data,
                                                           ("stored", "served"))
    if table is None:
        return None
    try:
        return records.number(table["stored"]), records.number(table["served"])
    except ValueError:
        return None


def write_marker(path: str, stored: float, now: float) -> None:
    """Remember what this caller was served. Best effort (no fsync): a lost marker costs
    nothing, and a failed write leaves no temp file behind."""
    data = records.dump(MARKER_FORMAT, [("stored", repr(stored)), ("served", repr(now))])
    try:
        write_private(path, data, durable=False)
    except OSError:
        pass
