"""The entry lock (single flight), behind one small interface.

POSIX (Linux, macOS) uses flock(2), which the kernel releases when the holder dies, so a
crashed process never leaves a lock stuck. Windows uses msvcrt.locking on the first byte,
which Windows also releases when the process ends.
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


def regular_and_ours(fd: int) -> str:
    """Why a lock file may not be used ("" when it may): another user's lock could be held
    forever, and a FIFO or device is not a lock."""
    st = os.fstat(fd)
    if (st.st_mode & 0o170000) != 0o100000:
        return "not a regular file"
    if os.name == "posix" and st.st_uid != os.getuid():
        return "owned by another user"
    return ""
