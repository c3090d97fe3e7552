"""The entry lock (single flight), behind one small interface.

POSIX (Linux, macOS) uses flock(2), which the kernel releases when the holder dies, so a
crashed process never leaves a lock stuck. Windows uses msvcrt.locking on the first byte,
which Windows also releases when the process ends (so a lock is never handed to a child
there: keyhelper.base.spawn).
"""

from __future__ import annotations

import time

from keyhelper.base.oslite import POSIX, native

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
        native.lseek(fd, 0, 0)  # SEEK_SET
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

        native.lseek(fd, 0, 0)  # SEEK_SET
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]


def open_lock(path: str) -> tuple[int | None, str]:
    """(descriptor, "") on the lock file ``path``, created 0600 if missing; (None, why not)
    when it is unusable: a symlink or directory in its place, a FIFO or device (opened
    without blocking), or another user's file (they could hold it forever)."""
    flags = (native.O_RDWR | native.O_CREAT | getattr(native, "O_NOFOLLOW", 0)
             | getattr(native, "O_NONBLOCK", 0))
    try:
        fd = native.open(path, flags, 0o600)
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    try:
        st = native.fstat(fd)
    except OSError as exc:
        native.close(fd)
        return None, exc.strerror or type(exc).__name__
    if (st.st_mode & 0o170000) != 0o100000:
        why = "not a regular file"
    elif POSIX and st.st_uid != native.getuid():
        why = "owned by another user"
    else:
        return fd, ""
    native.close(fd)
    return None, why


# --- what the holder announces: until when the others may wait for it -------------------
# Written into the lock file by the holder (the hit path provisionally, the full path once
# it knows its deadline); a process that finds the lock held waits on the lean path only
# while the holder says it is still within its time (keyhelper.cachepolicy.wait_turn). A
# holder that announces nothing (another program, an older keyhelper) is not waited for
# there: the full path waits for it, under the config's deadline.
LOCK_FORMAT = "keyhelper-lock 1"


def _private(fd: int) -> bool:
    """Whether the lock file may carry an announcement: one name (a hard link would make the
    write land in another file too) and 0600 at most (open_lock checked the owner)."""
    try:
        st = native.fstat(fd)
    except OSError:
        return False
    return st.st_nlink == 1 and (not POSIX or not st.st_mode & 0o077)


def announce(fd: int, until: float) -> None:
    """Say in the lock file that this holder gives up at ``until`` (epoch seconds); never
    into a lock file that is not private (it is then used as a lock only)."""
    from keyhelper.base.records import dump

    if not _private(fd):
        return
    data = dump(LOCK_FORMAT, [("until", repr(until))])
    try:
        native.pwrite(fd, data, 0)
        native.ftruncate(fd, len(data))
    except (OSError, AttributeError):  # pragma: no cover - Windows (no pwrite): not waited for
        pass


def announced(fd: int) -> float | None:
    """Until when the holder of this lock file said it may hold it; None if unknown."""
    from keyhelper.base.records import load_unique, number

    if not _private(fd):
        return None
    try:
        data = native.pread(fd, 128, 0)
    except (OSError, AttributeError):  # pragma: no cover - Windows
        return None
    table = load_unique(LOCK_FORMAT, data, ("until",))
    try:
        return None if table is None else number(table["until"])
    except ValueError:
        return None


# --- a lock taken on the hit path, handed over to the full path (same process) ------------
# flock belongs to an open file: the full path must reuse the descriptor the hit path locked,
# not open the file again (that would wait for itself).
_handed: dict[str, int] = {}


def hand_over(path: str, fd: int) -> None:
    """Keep ``fd``, locked, for the full path's lock on ``path`` (:func:`take_over`)."""
    _handed[path] = fd


def take_over(path: str) -> int | None:
    """The locked descriptor the hit path handed over for ``path``, if any; the caller
    unlocks and closes it."""
    return _handed.pop(path, None)


def release_handed() -> None:
    """The full path will not use the cache: let the waiting processes go on now."""
    while _handed:
        _, fd = _handed.popitem()
        try:
            unlock(fd)
        finally:
            native.close(fd)
