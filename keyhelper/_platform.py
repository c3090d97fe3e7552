"""OS-specific mechanisms behind one small interface.

POSIX (Linux, macOS) uses flock(2), which the kernel releases when the holder dies, so a
crashed process never leaves a lock stuck. Windows uses msvcrt.locking on the first byte,
which Windows also releases when the process ends.
"""

from __future__ import annotations

import os
import time

from keyhelper.errors import DeadlineExceeded

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover - Windows

    try:  # pragma: no cover - Windows
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
    except OSError:  # pragma: no cover - Windows
        return False
    return True  # pragma: no cover - Windows


def lock(fd: int, deadline: float) -> None:
    """Take an exclusive lock on ``fd``, waiting until ``deadline`` (monotonic) at most."""
    delay = 0.002
    while not _try_lock(fd):
        if time.monotonic() + delay > deadline:
            raise DeadlineExceeded("timed out waiting for another keyhelper process "
                                   "fetching the same key")
        time.sleep(delay)  # polling: a blocking flock cannot time out
        delay = min(delay * 2, 0.05)


def unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
