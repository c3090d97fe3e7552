"""Opt-in audit log of key issuance: one JSON line per key handed out, never the key.

``[audit]`` in the config file turns it on (README "Audit log"). Lines are built and written
by :mod:`keyhelper._audit_lean`, which the cache-hit path uses too, so every line has one
format whichever path served the key. The settings travel to the hit path in the cache
entry's extra fields (:func:`entry_extra`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyhelper import _audit_lean

log = logging.getLogger(__name__)

# Result.source -> the "cache" field: what the cache did for this issuance.
CACHE_FIELD = {"hit": "hit", "fetched": "miss", "uncached": "none"}
TAIL_BYTES = 65536
DOCTOR_LINES = 5


@dataclass(frozen=True)
class AuditSettings:
    path: str | None  # the JSON lines file, ~ expanded
    syslog_socket: str | None  # None: no syslog
    max_bytes: int
    keep: int

    def extra(self) -> dict[str, str]:
        """The cache entry's extra fields that let the hit path write the same lines."""
        fields: dict[str, str] = {}
        if self.path:
            fields[_audit_lean.EXTRA_PATH] = _audit_lean.encode_field(self.path)
            fields[_audit_lean.EXTRA_MAX_BYTES] = str(self.max_bytes)
            fields[_audit_lean.EXTRA_KEEP] = str(self.keep)
        if self.syslog_socket:
            fields[_audit_lean.EXTRA_SYSLOG] = _audit_lean.encode_field(self.syslog_socket)
        return fields


def settings(raw: Mapping[str, Any]) -> AuditSettings | None:
    """The audit settings of a validated config (see config.AUDIT_KEYS); None when off."""
    table = raw.get("audit") or {}
    path = table.get("path")
    syslog_socket = (table.get("syslog_socket") or _audit_lean.DEFAULT_SYSLOG_SOCKET
                     if table.get("syslog") else None)
    if not path and not syslog_socket:
        return None
    return AuditSettings(os.path.expanduser(path) if path else None, syslog_socket,
                         int(table.get("max_bytes", _audit_lean.DEFAULT_MAX_BYTES)),
                         int(table.get("keep", _audit_lean.DEFAULT_KEEP)))


def entry_extra(raw: Mapping[str, Any]) -> dict[str, str]:
    """Extra fields for a cache entry written under this config ({} when auditing is off)."""
    audit = settings(raw)
    return {} if audit is None else audit.extra()


def record(settings_raw: Mapping[str, Any], profile: str | None, result: Any,
           env: Mapping[str, str]) -> None:
    """Append one line for a key handed out (``result`` is a core.Result), if configured.

    A log that cannot be written gives a warning on stderr; the key is still served.
    """
    audit = settings(settings_raw)
    if audit is None:
        return
    cache = CACHE_FIELD.get(result.source, result.source)
    line = _audit_lean.format_line(_audit_lean.issuance(
        profile, result.backend, cache, result.token.value, result.token.expires_at))
    try:
        _audit_lean.write(line, audit.extra())
    except _audit_lean.NotRotated as exc:
        log.warning("audit log not rotated (%s)", exc)
    except (OSError, ValueError) as exc:
        log.warning("audit log not written (%s)", _reason(exc))


def _reason(exc: Exception) -> str:
    """An OSError's own words ("Is a directory"), or why the log was refused (Unsafe)."""
    return getattr(exc, "strerror", None) or str(exc)


def tail(path: str, count: int) -> list[dict[str, Any] | None]:
    """The last ``count`` lines of the log, parsed (None for a line that is not JSON).

    Opened as the writer opens it (no symlink, no blocking on a FIFO, this user's regular
    file in a directory others cannot write), so no one else's lines are shown as ours.
    """
    fd = _audit_lean.open_for_reading(path)
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - TAIL_BYTES), os.SEEK_SET)
        data = os.read(fd, TAIL_BYTES)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").splitlines()
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first one is probably cut
    parsed: list[dict[str, Any] | None] = []
    for line in lines[-count:]:
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        parsed.append(value if isinstance(value, dict) else None)
    return parsed


def describe(raw: Mapping[str, Any], count: int = DOCTOR_LINES) -> list[str]:
    """``keyhelper doctor``'s lines about the audit log: where it goes, the last entries."""
    audit = settings(raw)
    if audit is None:
        return []  # nothing to say: doctor's output stays as it was
    lines = []
    if audit.syslog_socket:
        lines.append(f"audit syslog: {audit.syslog_socket} (facility authpriv)")
    if not audit.path:
        return lines
    lines.append(f"audit log: {audit.path} (rotated at {audit.max_bytes} bytes, "
                 f"{audit.keep} old files kept)")
    try:
        entries = tail(audit.path, count)
    except FileNotFoundError:
        return [*lines, "  no entries yet"]
    except OSError as exc:
        return [*lines, f"  cannot read it ({_reason(exc)})"]
    if not entries:
        lines.append("  no entries yet")
    for entry in entries:
        if entry is None:
            lines.append("  (a line that is not JSON)")
            continue
        lines.append("  " + "  ".join(str(entry.get(name) or "-") for name in (
            "time", "cache", "backend", "fingerprint", "user", "host", "profile")))
    return lines
