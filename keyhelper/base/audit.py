"""The audit log, in one module: one JSON line per key handed out (never the key: its
fingerprint), appended to a file and/or sent to syslog, by the hit path and the full path
alike, and read back by ``doctor``.

``[audit]`` in the config (or the administrator policy) turns it on. A hit is served without
the config, so the settings travel in the cache entry's extra fields (:func:`entry_extra`):
an entry written without auditing has none and costs nothing. Lines are JSON built by hand
(``json`` costs 8 ms to import, more than a whole hit); ``doctor`` parses them with ``json``.

Concurrency: each line is one ``write(2)`` on an ``O_APPEND`` descriptor, so lines of
concurrent processes never interleave. Rotation (rename ``path`` to ``path.1`` ...) happens
under an ``flock`` on ``path.lock`` and only if ``path`` is still the file this process
wrote to, so two processes never rotate the same file twice. A line written through a
descriptor opened just before a rotation lands in ``path.1``: it is kept, not lost.

Trust: the log is opened without following a symlink and without blocking (a FIFO planted
at its path must not hang a hit, which has no deadline), then checked on the descriptor: a
regular file of this user with one link. Its directory must be this user's or root's and not
writable by others, unless it is root's and sticky (like /tmp), where only this user's files
are used. The lock file and the rotated names get the same checks; a refusal is ``Unsafe``.
"""

import os
import time

from keyhelper.base import files, oslite
from keyhelper.base.records import fingerprint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from keyhelper.base.records import Entry

# Names of the cache entry's extra fields that carry the audit settings.
EXTRA_PATH = "audit"
EXTRA_MAX_BYTES = "audit_max_bytes"
EXTRA_KEEP = "audit_keep"
EXTRA_SYSLOG = "audit_syslog"  # the syslog socket's path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
DEFAULT_SYSLOG_SOCKET = "/dev/log"
SYSLOG_PRIORITY = 10 * 8 + 6  # facility authpriv (10), severity info (6)
_SAFE_FLAGS = (getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | _SAFE_FLAGS
# The directory itself may be a symlink (~/.local/state to elsewhere): what it leads to is checked.
_DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))
# Names opened, checked and renamed relative to the directory's descriptor (not on Windows).
_AT = files._DIR_FD and os.stat in os.supports_dir_fd and os.rename in os.supports_dir_fd


def iso_time(epoch: float) -> str:
    """UTC, millisecond precision: 2026-11-27T04:43:04.123Z."""
    millis = int(epoch * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + (
        f".{millis % 1000:03d}Z")


def _quote(text: str) -> str:
    """A JSON string literal, ASCII only (non-ASCII and surrogates as \\u escapes)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:  # a UTF-16 surrogate pair, as JSON requires
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def _value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _quote(str(value))


def format_line(fields: "Mapping[str, object]") -> bytes:
    """One JSON object on one line, keys in a fixed order, ending with a newline."""
    body = ", ".join(f"{_quote(name)}: {_value(value)}" for name, value in fields.items())
    return ("{" + body + "}\n").encode("ascii")


def _user() -> str:
    """The account of the process's uid; the environment only where the OS has no pwd."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - Windows
        return os.environ.get("USERNAME") or "?"
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without an account (a container): the number, not $USER
        return str(os.getuid())


def _host() -> str:
    try:
        return os.uname().nodename
    except AttributeError:  # pragma: no cover - Windows
        return os.environ.get("COMPUTERNAME", "?")


def issuance(profile: str | None, backend: str, cache: str, key: str,
             expires: float | None, now: float | None = None) -> dict[str, object]:
    """The fields of one audit line. Never the key: its fingerprint."""
    return {
        "time": iso_time(time.time() if now is None else now),
        "user": _user(),
        "host": _host(),
        "pid": os.getpid(),
        "profile": profile,
        "backend": backend,
        "cache": cache,
        "fingerprint": fingerprint(key),
        "expires": None if expires is None else iso_time(expires),
    }


# --- writing ------------------------------------------------------------------------------

class Unsafe(OSError):
    """The log, its directory, its lock or a rotated file is not safe to use (says why)."""


class NotRotated(OSError):
    """The line was written, but the full log could not be rotated (says why)."""


def _dir_problem(st: "os.stat_result") -> str | None:
    if not oslite.is_dir(st.st_mode):
        return "is not a directory"
    if not files._POSIX:
        return None
    if st.st_uid not in (os.getuid(), 0):
        return f"is owned by another user: uid {st.st_uid}"
    sticky_root = bool(st.st_mode & 0o1000) and st.st_uid == 0  # like /tmp: others cannot
    if st.st_mode & 0o022 and not sticky_root:  # rename or remove this user's files
        return f"is writable by group or others: mode {st.st_mode & 0o7777:o}"
    return None


def _file_problem(st: "os.stat_result") -> str | None:
    if (st.st_mode & 0o170000) != 0o100000:
        return "is not a regular file"
    if files._POSIX and st.st_uid != os.getuid():
        return f"is owned by another user: uid {st.st_uid}"
    if st.st_nlink > 1:  # another name for it may be any file of this user's
        return f"has {st.st_nlink} hard links"
    return None


def open_dir(path: str) -> tuple[int | None, str]:
    """The checked directory of ``path`` as a descriptor to open names in, and the name.

    Where the OS has no ``openat`` (Windows) the descriptor is None and the name is ``path``.
    """
    directory, name = os.path.split(path)
    if not _AT:
        return None, path
    fd = os.open(directory or os.sep, _DIR_FLAGS)
    return _checked(fd, _dir_problem, directory), name


def _lstat(name: str, dir_fd: int | None) -> "os.stat_result | None":
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open(name: str, flags: int, dir_fd: int | None, create: bool) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    except FileExistsError:  # another process created it first
        return os.open(name, flags, dir_fd=dir_fd)
    if hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
        except BaseException:
            os.close(fd)
            raise
    return fd


def open_checked(name: str, flags: int, dir_fd: int | None, shown: str,
                 create: bool = False) -> int:
    """``name`` (in ``dir_fd``) opened with ``flags``, a regular file of this user's with
    one link (a new one is created 0600 when ``create``); Unsafe otherwise."""
    try:
        fd = _open(name, flags, dir_fd, create)
    except OSError:
        # Say why in plain words where the error does not: a FIFO without a reader gives
        # ENXIO (a symlink's ELOOP and a directory's EISDIR say it already).
        st = _lstat(name, dir_fd)
        if st is not None and (st.st_mode & 0o170000) not in (0o100000, 0o040000, 0o120000):
            raise Unsafe(f"{shown} is not a regular file") from None
        raise
    return _checked(fd, _file_problem, shown)


def _checked(fd: int, problem_of: "Callable[[os.stat_result], str | None]", shown: str) -> int:
    """``fd`` if what it opened passes ``problem_of``; else closed, and Unsafe says why."""
    try:
        problem = problem_of(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    if problem is not None:
        os.close(fd)
        raise Unsafe(f"{shown} {problem}")
    return fd


def open_for_reading(path: str) -> int:
    """The log opened for reading (``keyhelper doctor``), with the writer's checks."""
    dir_fd, name = open_dir(path)
    try:
        return open_checked(name, os.O_RDONLY | _SAFE_FLAGS, dir_fd, path)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def append(path: str, line: bytes, max_bytes: int = DEFAULT_MAX_BYTES,
           keep: int = DEFAULT_KEEP) -> None:
    """Append one line (one write), then rotate if the file reached ``max_bytes``."""
    dir_fd, name = open_dir(path)
    try:
        fd = open_checked(name, _APPEND_FLAGS, dir_fd, path, create=True)
        try:
            os.write(fd, line)
            if max_bytes > 0 and os.fstat(fd).st_size >= max_bytes:
                try:
                    rotate(dir_fd, name, path, fd, max_bytes, keep)
                except OSError as exc:
                    raise NotRotated(exc.strerror or str(exc)) from None
        finally:
            os.close(fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def rotate(dir_fd: int | None, name: str, path: str, fd: int, max_bytes: int,
           keep: int) -> None:
    """Shift path -> path.1 -> ... -> path.KEEP (the oldest goes), under a lock.

    ``name`` is ``path`` in ``dir_fd`` (the checked directory; None: ``name`` is ``path``).
    Skipped when another process holds the lock (it is rotating) or already rotated the
    file this process wrote to. A rotated name that is not this user's file stops it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rotation without the lock
        fcntl = None  # type: ignore[assignment]
    lock_fd = open_checked(name + ".lock", os.O_RDWR | _SAFE_FLAGS, dir_fd, path + ".lock",
                           create=True)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
        current = _lstat(name, dir_fd)
        if current is None:
            return
        mine = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            return  # rotated by another process since this one opened it
        if current.st_size < max_bytes:
            return
        suffixes = [f".{index}" for index in range(1, max(keep, 1) + 1)]
        names = [name + suffix for suffix in suffixes]
        for rotated, suffix in zip(names, suffixes, strict=True):
            st = _lstat(rotated, dir_fd)
            problem = None if st is None else _file_problem(st)
            if problem is not None:
                raise Unsafe(f"{path}{suffix} {problem}")
        for index in range(len(names) - 1, 0, -1):
            try:
                os.replace(names[index - 1], names[index], src_dir_fd=dir_fd,
                           dst_dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        os.replace(name, names[0], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(lock_fd)  # closing releases the flock


def send_syslog(line: bytes, address: str = DEFAULT_SYSLOG_SOCKET) -> None:
    """Send one line to the local syslog socket (RFC 3164 framing, as glibc's syslog(3)).

    Non-blocking: a full or absent syslog drops the line rather than hold the key back.
    """
    import _socket  # the C module: ``socket`` would import enum, selectors and more

    tm = time.localtime()
    stamp = time.strftime("%b", tm) + f" {tm.tm_mday:2d} " + time.strftime("%H:%M:%S", tm)
    message = f"<{SYSLOG_PRIORITY}>{stamp} keyhelper[{os.getpid()}]: ".encode() + line.rstrip(
        b"\n")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(address)
        sock.send(message)
    finally:
        sock.close()


def write(line: bytes, extra: "Mapping[str, str]") -> None:
    """Write ``line`` where the extra fields say. Raises OSError/ValueError."""
    path = extra.get(EXTRA_PATH)
    problem: Exception | None = None
    if path:
        try:
            append(path, line, _number(extra.get(EXTRA_MAX_BYTES), DEFAULT_MAX_BYTES),
                   _number(extra.get(EXTRA_KEEP), DEFAULT_KEEP))
        except (OSError, ValueError) as exc:
            problem = exc  # still try syslog
    address = extra.get(EXTRA_SYSLOG)
    if address:
        send_syslog(line, address)
    if problem is not None:
        raise problem


def _number(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


def append_hit(entry: "Entry", profile: str | None) -> None:
    """Record a cache hit served by the lean path, if the entry says auditing is on.

    Never raises: a hit must be served even when the audit log cannot be written.
    """
    try:
        extra = entry.extra
        if not (extra.get(EXTRA_PATH) or extra.get(EXTRA_SYSLOG)):
            return
        write(format_line(issuance(profile, entry.backend, "hit", entry.key,
                                   entry.token_expires)), extra)
    except Exception:  # noqa: S110 - by design: the hit path never fails on auditing
        pass


# --- settings, the full path and doctor ----------------------------------------

# Result.source -> the "cache" field: what the cache did for this issuance.
CACHE_FIELD = {"hit": "hit", "fetched": "miss", "uncached": "none"}
TAIL_BYTES = 65536
DOCTOR_LINES = 5


class AuditSettings:
    """Where lines go: a file (``path``, ~ expanded) and/or syslog (its socket)."""

    __slots__ = ("keep", "max_bytes", "path", "syslog_socket")

    def __init__(self, path: str | None, syslog_socket: str | None, max_bytes: int, keep: int):
        self.path = path
        self.syslog_socket = syslog_socket  # None: no syslog
        self.max_bytes = max_bytes
        self.keep = keep

    def extra(self) -> dict[str, str]:
        """The cache entry's extra fields that let the hit path write the same lines."""
        fields: dict[str, str] = {}
        if self.path:
            fields[EXTRA_PATH] = self.path
            fields[EXTRA_MAX_BYTES] = str(self.max_bytes)
            fields[EXTRA_KEEP] = str(self.keep)
        if self.syslog_socket:
            fields[EXTRA_SYSLOG] = self.syslog_socket
        return fields


def settings(raw: "Mapping[str, Any]") -> "AuditSettings | None":
    """The audit settings of a validated config (see config.AUDIT_KEYS); None when off."""
    table = raw.get("audit") or {}
    path = table.get("path")
    syslog_socket = (table.get("syslog_socket") or DEFAULT_SYSLOG_SOCKET
                     if table.get("syslog") else None)
    if not path and not syslog_socket:
        return None
    return AuditSettings(os.path.expanduser(path) if path else None, syslog_socket,
                         int(table.get("max_bytes", DEFAULT_MAX_BYTES)),
                         int(table.get("keep", DEFAULT_KEEP)))


def entry_extra(raw: "Mapping[str, Any]") -> dict[str, str]:
    """Extra fields for a cache entry written under this config ({} when auditing is off)."""
    audit = settings(raw)
    return {} if audit is None else audit.extra()


def record(settings_raw: "Mapping[str, Any]", profile: str | None, backend: str, source: str,
           key: str, expires: float | None) -> str | None:
    """Append one line for a key handed out by the full path (``source``: how, see
    CACHE_FIELD), if configured. Returns the warning to show when the log could not be
    written (the key is still served), else None."""
    audit = settings(settings_raw)
    if audit is None:
        return None
    line = format_line(issuance(profile, backend, CACHE_FIELD.get(source, source), key,
                                expires))
    try:
        write(line, audit.extra())
    except NotRotated as exc:
        return f"audit log not rotated ({exc})"
    except (OSError, ValueError) as exc:
        return f"audit log not written ({_reason(exc)})"
    return None


def _reason(exc: "Exception") -> str:
    """An OSError's own words ("Is a directory"), or why the log was refused (Unsafe)."""
    return getattr(exc, "strerror", None) or str(exc)


def tail(path: str, count: int) -> "list[dict[str, Any] | None]":
    """The last ``count`` lines of the log, parsed (None for a line that is not JSON).

    Opened as the writer opens it (no symlink, no blocking on a FIFO, this user's regular
    file in a directory others cannot write), so no one else's lines are shown as ours.
    """
    fd = open_for_reading(path)
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - TAIL_BYTES), os.SEEK_SET)
        data = os.read(fd, TAIL_BYTES)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").splitlines()
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first one is probably cut
    import json  # doctor only: the hit path never reads the log

    parsed: list[dict[str, Any] | None] = []
    for line in lines[-count:]:
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        parsed.append(value if isinstance(value, dict) else None)
    return parsed


def describe(raw: "Mapping[str, Any]", count: int = DOCTOR_LINES) -> list[str]:
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
