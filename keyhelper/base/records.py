"""One format for every small file keyhelper keeps: cache entries, the route, served markers,
failure records, Vault login tokens and mount memos.

ASCII text: a header line naming the kind and its version, then one ``name value`` line per
field, in order (a name may repeat: the route's steps). A value is any text: ``%``, line
breaks, control and non-ASCII characters are ``%XX``-escaped (UTF-8), so a field is always
one line and a record is ASCII whatever names or messages it holds. Reading is strict:
anything off is ``None``, and a damaged record counts as absent.
"""

from keyhelper.base import oslite
from keyhelper.base.files import (
    MISSING,
    POLICY_PATH,
    config_path,
    file_identity,
    read_file_private,
    read_in_private_dir,
    read_user_file,
    write_private,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from hashlib import sha256

    from keyhelper.base.files import Selection
else:
    try:  # the bare primitive costs 0.4 ms to import; hashlib costs 5 ms
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - Python 3.12+ or unusual builds
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256

Fields = list[tuple[str, str]]


def quote(text: str) -> str:
    """``text`` as one printable ASCII run: "%XX" for "%", controls and non-ASCII bytes."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text  # the common case, without a per-byte loop
    data = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x25 else f"%{b:02X}" for b in data)


def unquote(text: str) -> str:
    """The inverse of :func:`quote`. ValueError on a malformed escape."""
    if "%" not in text:
        return text
    parts = text.split("%")
    data = bytearray(parts[0].encode("ascii"))
    for part in parts[1:]:
        if len(part) < 2:
            raise ValueError("a cut %XX escape")
        data.append(int(part[:2], 16))
        data += part[2:].encode("ascii")
    return data.decode("utf-8", "surrogateescape")


def dump(header: str, fields: "Iterable[tuple[str, str]]") -> bytes:
    """The record's bytes. Field names are identifiers chosen by keyhelper (no spaces)."""
    lines = [header, *(f"{name} {quote(value)}" for name, value in fields), ""]
    return "\n".join(lines).encode("ascii")


def load(header: str, data: bytes) -> "Fields | None":
    """The fields of a record of kind ``header``, in order; None if anything is off."""
    try:
        lines = data.decode("ascii").split("\n")
    except UnicodeDecodeError:
        return None
    if lines[0] != header or lines[-1] != "":
        return None
    fields: Fields = []
    for line in lines[1:-1]:
        name, space, value = line.partition(" ")
        if not name or not space:
            return None
        try:
            fields.append((name, unquote(value)))
        except (ValueError, UnicodeDecodeError):
            return None
    return fields


def load_unique(header: str, data: bytes, required: "Iterable[str]" = ()) -> dict[str, str] | None:
    """A record whose names appear once each, as a dict; None if off or a name is missing."""
    fields = load(header, data)
    if fields is None:
        return None
    table = dict(fields)
    if len(table) != len(fields) or any(name not in table for name in required):
        return None
    return table


def number(text: str) -> float:
    """A finite number from a record: inf or nan would make a time last forever."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


FINGERPRINT_DIGITS = 12


def fingerprint(secret: str) -> str:
    """First 12 hex digits of the secret's sha256: safe to show, log and compare."""
    return "sha256:" + sha256(secret.encode()).hexdigest()[:FINGERPRINT_DIGITS]


def digest(text: str) -> str:
    """A 32-hex-digit name for ``text`` (cache entry names, environment digests)."""
    return sha256(text.encode()).hexdigest()[:32]


# --- the cache entry ----------------------------------------------------------------------

# Version 2: every value is %-quoted (records). Version 3: a last ``check`` line, the sha256
# of everything before it, so an entry damaged in place is a miss. An older entry is a miss.
ENTRY_FORMAT = "keyhelper-cache 3"
CHECK = b"check "
MAX_KEY_CHARS = 16384  # the longest key Claude Code sends (as keyhelper.redact)
_TIMES = ("stored", "expires", "refresh")


class Entry:
    """One cached key and its times (epoch seconds)."""

    __slots__ = ("backend", "env_names", "envsum", "expires", "extra", "key", "refresh",
                 "stored", "token_expires")

    def __init__(self, key: str, backend: str, stored: float, expires: float, refresh: float,
                 token_expires: float | None, env_names: "Sequence[str]", envsum: str,
                 extra: "Mapping[str, str] | None" = None):
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
        body = dump(ENTRY_FORMAT, fields)
        return body + CHECK + sha256(body).hexdigest().encode() + b"\n"

    def matches_env(self, env: "Mapping[str, str]") -> bool:
        return env_digest(self.env_names, env) == self.envsum


def parse_entry(data: bytes) -> "Entry | None":
    """An entry from its bytes, or None if anything is off (a corrupt entry is a miss):
    the last line must be the checksum of the rest."""
    cut = data.rfind(b"\n" + CHECK) + 1
    if not cut or data[cut:] != CHECK + sha256(data[:cut]).hexdigest().encode() + b"\n":
        return None
    fields = load(ENTRY_FORMAT, data[:cut])
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
                         else number(table["token_expires"]))
        stored, expires, refresh = (number(table[name]) for name in _TIMES)
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
    return oslite.join(directory, key + ".entry")


def read_entry(directory: str, key: str) -> "Entry | None":
    data = read_in_private_dir(directory, key + ".entry")
    return None if data is None else parse_entry(data)


def entry_key(selection: "Selection", env: "Mapping[str, str]") -> str:
    """Names the cache entry of a selection: its arguments plus the identities of its config
    file and of the administrator's policy (a policy change takes effect on the next call).

    Derived from names and file metadata only, never from a secret.
    """
    path, _ = config_path(selection, env)
    parts = ["v1", "\x1f".join(selection.backends), selection.profile or "", path,
             file_identity(path), file_identity(POLICY_PATH)]
    return digest("\x00".join(parts))


def env_digest(names: "Sequence[str]", env: "Mapping[str, str]") -> str:
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
    return oslite.join(directory, key + ".route")


def serialize_route(steps: "Sequence[tuple[str, str]]") -> bytes:
    return dump(ROUTE_FORMAT, steps)


def parse_route(data: bytes) -> list[tuple[str, str]] | None:
    steps = load(ROUTE_FORMAT, data)
    if steps is None or any(kind not in ROUTE_KINDS or not arg for kind, arg in steps):
        return None
    return steps


def key_file_line(path: str) -> str | None:
    """As the file backend reads it: NEXT if missing, None on anything it would refuse."""
    data, why = read_user_file(oslite.expanduser(path))
    if data is None:
        return NEXT if why == MISSING else None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    return (lines[0].strip() if lines else "") or None


def follow_route(data: bytes | None, env: "Mapping[str, str]") -> str | None:
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
    return oslite.join(directory, f"{key}.{caller}.served")


def read_marker(path: str) -> tuple[float, float] | None:
    """(stored time of the entry served, when it was served) to one Claude Code process."""
    data = read_file_private(path)
    table = None if data is None else load_unique(MARKER_FORMAT, data,
                                                           ("stored", "served"))
    if table is None:
        return None
    try:
        return number(table["stored"]), number(table["served"])
    except ValueError:
        return None


def write_marker(path: str, stored: float, now: float) -> None:
    """Remember what this caller was served. Best effort (no fsync): a lost marker costs
    nothing, and a failed write leaves no temp file behind."""
    data = dump(MARKER_FORMAT, [("stored", repr(stored)), ("served", repr(now))])
    try:
        write_private(path, data, durable=False)
    except OSError:
        pass
