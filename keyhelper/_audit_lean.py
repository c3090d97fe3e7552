"""Audit lines on the cache-hit path: ``os`` and ``time`` only (no json, no logging).

A hit is served without the core, so its audit line is built and appended here. The full
path (keyhelper.audit) uses the same functions, so both paths write one format. The
settings travel in the cache entry's ``extra`` fields, written by the full path when
``[audit]`` is configured: an entry written without auditing has none and costs nothing.

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

from __future__ import annotations

import os
import time

from keyhelper import _lean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from hashlib import sha256

    from keyhelper._lean import Entry, Selection
else:
    try:  # the bare primitive, as in _lean: hashlib costs 5 ms to import
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - Python 3.12+ or unusual builds
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256

# Names of the cache entry's extra fields that carry the audit settings.
EXTRA_PATH = "audit"
EXTRA_MAX_BYTES = "audit_max_bytes"
EXTRA_KEEP = "audit_keep"
EXTRA_SYSLOG = "audit_syslog"  # the syslog socket's path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
DEFAULT_SYSLOG_SOCKET = "/dev/log"
SYSLOG_PRIORITY = 10 * 8 + 6  # facility authpriv (10), severity info (6)
FINGERPRINT_DIGITS = 12
_SAFE_FLAGS = (getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | _SAFE_FLAGS
# The directory itself may be a symlink (~/.local/state to elsewhere): what it leads to is checked.
_DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NONBLOCK", 0)
              | getattr(os, "O_CLOEXEC", 0))
# Names opened, checked and renamed relative to the directory's descriptor (not on Windows).
_AT = _lean._DIR_FD and os.stat in os.supports_dir_fd and os.rename in os.supports_dir_fd


def fingerprint(secret: str) -> str:
    """Same as keyhelper.redact.fingerprint: "sha256:" and 12 hex digits."""
    return "sha256:" + sha256(secret.encode()).hexdigest()[:FINGERPRINT_DIGITS]


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


def format_line(fields: Mapping[str, object]) -> bytes:
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


def encode_field(text: str) -> str:
    """A path as an entry field: printable ASCII, with "%XX" for other bytes (and "%")."""
    data = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 0x21 <= b < 0x7F and b != 0x25 else f"%{b:02X}" for b in data)


def decode_field(text: str) -> str:
    parts = text.split("%")
    data = bytearray(parts[0].encode("ascii"))
    for part in parts[1:]:
        data.append(int(part[:2], 16))
        data += part[2:].encode("ascii")
    return data.decode("utf-8", "surrogateescape")


# --- writing ------------------------------------------------------------------------------

class Unsafe(OSError):
    """The log, its directory, its lock or a rotated file is not safe to use (says why)."""


class NotRotated(OSError):
    """The line was written, but the full log could not be rotated (says why)."""


def _dir_problem(st: os.stat_result) -> str | None:
    if not _lean._is_dir(st.st_mode):
        return "is not a directory"
    if not _lean._POSIX:
        return None
    if st.st_uid not in (os.getuid(), 0):
        return f"is owned by another user: uid {st.st_uid}"
    sticky_root = bool(st.st_mode & 0o1000) and st.st_uid == 0  # like /tmp: others cannot
    if st.st_mode & 0o022 and not sticky_root:  # rename or remove this user's files
        return f"is writable by group or others: mode {st.st_mode & 0o7777:o}"
    return None


def _file_problem(st: os.stat_result) -> str | None:
    if (st.st_mode & 0o170000) != 0o100000:
        return "is not a regular file"
    if _lean._POSIX and st.st_uid != os.getuid():
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
    try:
        problem = _dir_problem(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    if problem is not None:
        os.close(fd)
        raise Unsafe(f"{directory} {problem}")
    return fd, name


def _lstat(name: str, dir_fd: int | None) -> os.stat_result | None:
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
    try:
        problem = _file_problem(os.fstat(fd))
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
            try:  # noqa: SIM105 - contextlib is not imported on the hit path
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


def write(line: bytes, extra: Mapping[str, str]) -> None:
    """Write ``line`` where the (encoded) extra fields say. Raises OSError/ValueError."""
    path = decode_field(extra[EXTRA_PATH]) if extra.get(EXTRA_PATH) else None
    problem: Exception | None = None
    if path:
        try:
            append(path, line, _number(extra.get(EXTRA_MAX_BYTES), DEFAULT_MAX_BYTES),
                   _number(extra.get(EXTRA_KEEP), DEFAULT_KEEP))
        except (OSError, ValueError) as exc:
            problem = exc  # still try syslog
    address = extra.get(EXTRA_SYSLOG)
    if address:
        send_syslog(line, decode_field(address))
    if problem is not None:
        raise problem


def _number(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() else default


def append_hit(entry: Entry, selection: Selection, env: Mapping[str, str]) -> None:
    """Record a cache hit served by the lean path, if the entry says auditing is on.

    Never raises: a hit must be served even when the audit log cannot be written.
    """
    try:
        extra = entry.extra
        if not (extra.get(EXTRA_PATH) or extra.get(EXTRA_SYSLOG)):
            return
        write(format_line(issuance(selection.profile, entry.backend, "hit", entry.key,
                                   entry.token_expires)), extra)
    except Exception:  # noqa: S110 - by design: the hit path never fails on auditing
        pass
