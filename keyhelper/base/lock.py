"""The entry lock (single flight), behind one small interface.

POSIX (Linux, macOS) uses flock(2), which the kernel releases when the holder dies, so a
crashed process never leaves a lock stuck. Windows uses msvcrt.locking on the first byte,
which Windows also releases when the process ends (so a lock is never handed to a child
there: keyhelper.base.spawn).
"""

from __future__ import annotations

import os
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LockTimeout(TimeoutError):
    """Another process held the lock past the deadline."""


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` if it is free; never waits."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True
    import msvcrt  # pragma: no cover - Windows

    try:  # pragma: no cover - Windows
        # msvcrt.locking locks from the current position: always byte 0, wherever it is.
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
    except OSError:  # pragma: no cover - Windows
        return False
    return True  # pragma: no cover - Windows


def lock(fd: int, deadline: float) -> None:
    """Take an exclusive lock on ``fd``, waiting until ``deadline`` (monotonic) at most."""
    delay = 0.002
    while not try_lock(fd):
        if time.monotonic() + delay > deadline:
            raise LockTimeout("timed out waiting for another keyhelper process fetching "
                              "the same key")
        time.sleep(delay)  # polling: a blocking flock cannot time out
        delay = min(delay * 2, 0.05)


def unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]


def open_lock(path: str) -> tuple[int | None, str]:
    """(descriptor, "") on the lock file ``path``, created 0600 if missing; (None, why not)
    when it is unusable: a symlink or directory in its place, a FIFO or device (opened
    without blocking), or another user's file (they could hold it forever)."""
    flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NONBLOCK", 0))
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return None, exc.strerror or type(exc).__name__
    if (st.st_mode & 0o170000) != 0o100000:
        why = "not a regular file"
    elif os.name == "posix" and st.st_uid != os.getuid():
        why = "owned by another user"
    else:
        return fd, ""
    os.close(fd)
    return None, why
