"""One format for every small file keyhelper keeps: cache entries, the route, served markers,
failure records, Vault login tokens and mount memos.

ASCII text: a header line naming the kind and its version, then one ``name value`` line per
field, in order (a name may repeat: the route's steps). A value is any text: ``%``, line
breaks, control and non-ASCII characters are ``%XX``-escaped (UTF-8), so a field is always
one line and a record is ASCII whatever names or messages it holds. Reading is strict:
anything off is ``None``, and a damaged record counts as absent.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from hashlib import sha256
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


def dump(header: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """The record's bytes. Field names are identifiers chosen by keyhelper (no spaces)."""
    lines = [header, *(f"{name} {quote(value)}" for name, value in fields), ""]
    return "\n".join(lines).encode("ascii")


def load(header: str, data: bytes) -> Fields | None:
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


def load_unique(header: str, data: bytes, required: Iterable[str] = ()) -> dict[str, str] | None:
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
