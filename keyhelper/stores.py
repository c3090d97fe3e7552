"""Where cache entries are stored: files in the user's private cache directory (the
default), or the OS keyring (``cache = "keyring"``: no secret on disk). A store is a plain
read/write/delete of entries; what to serve and when to fetch is keyhelper.cachepolicy's.

File entries are named by :func:`keyhelper.base.records.entry_key` (selection and config
identity, never the secret), read and written with keyhelper.base.files (no symlink, owner
and mode checked on the descriptor, atomic writes), exactly as the hit path reads them.
"""

from __future__ import annotations

import os
import time

from keyhelper.base import lock as locking
from keyhelper.base.files import cache_dir, make_private_dirs, safe_dir, write_private
from keyhelper.base.records import entry_path, parse_entry, read_entry
from keyhelper.errors import BackendError, DeadlineExceeded, Skip
from keyhelper.redact import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Protocol, TypeVar

    from keyhelper.backend import Context
    from keyhelper.base.records import Entry
    from keyhelper.oskeyring import OsKeyring

    T = TypeVar("T")

    class Store(Protocol):
        """Where entries live. Files by default; the keyring store keeps no secret on disk."""

        def read(self, key: str) -> Entry | None: ...

        def write(self, key: str, entry: Entry) -> None: ...

        def delete(self, key: str) -> bool: ...

        def describe(self, key: str) -> str: ...


log = get_logger(__name__)

_LOCK_SUFFIX = ".lock"
# Files kept beside an entry: the shared failure record, the stale-serve counter, one
# marker per Claude Code process served, and the hit path's route to env and file keys
# (keyhelper/base/failures.py, markers.py, route.py).
_SIDECARS = (".failed", ".stale", ".served", ".route")


class CacheUnusable(Exception):
    """The cache directory must not be used; keyhelper goes on without it."""


class FileCache:
    """Entries as 0600 files in a 0700 directory owned by the user."""

    def __init__(self, directory: str):
        self.directory = directory

    @classmethod
    def open(cls, env: Mapping[str, str]) -> FileCache:
        """The user's cache directory, created 0700 if needed; CacheUnusable if unsafe."""
        directory = cache_dir(env)
        if safe_dir(directory) == "missing":
            try:
                make_private_dirs(directory)
            except OSError as exc:
                raise CacheUnusable(f"cannot create {directory} ({exc.strerror})") from None
        _check_dir(directory, "cache directory")
        return cls(directory)

    def path(self, key: str) -> str:
        return entry_path(self.directory, key)

    def describe(self, key: str) -> str:
        return self.path(key)

    def read(self, key: str) -> Entry | None:
        return read_entry(self.directory, key)

    def write(self, key: str, entry: Entry) -> None:
        # The cache never makes a run fail: a key that cannot be stored is still printed.
        try:
            write_private(self.path(key), entry.serialize())
        except OSError as exc:
            log.warning("cache entry %s not written (%s); going on without it",
                        self.path(key), exc.strerror or type(exc).__name__)

    def delete(self, key: str) -> bool:
        """Remove an entry and what is remembered about it (failures, served markers)."""
        for name in os.listdir(self.directory):
            if name.startswith(key + ".") and name.endswith(_SIDECARS):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    continue
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> list[str]:
        return sorted(name[: -len(".entry")] for name in os.listdir(self.directory)
                      if name.endswith(".entry") and not name.startswith("."))

    def clear(self) -> int:
        """Remove every entry and leftover temp or lock file; returns the entries removed."""
        removed = 0
        for name in os.listdir(self.directory):
            if name.endswith((".entry", ".tmp", _LOCK_SUFFIX, *_SIDECARS)):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    continue
                removed += name.endswith(".entry")
        return removed

    def state_dir(self) -> str:
        """A private subdirectory for backend state (e.g. a Vault login token)."""
        path = os.path.join(self.directory, "state")
        make_private_dirs(path)
        try:
            _check_dir(path, "state directory")
        except CacheUnusable as exc:
            # Said here: the run goes on with the cache, only backend state is not kept.
            log.warning("%s; going on without it", exc)
            raise
        return path

    def lock(self, key: str, deadline: float) -> EntryLock:
        """Single flight: one process per entry fetches; the others wait here, then re-read."""
        return EntryLock(os.path.join(self.directory, key + _LOCK_SUFFIX), deadline)

    def lock_if_free(self, key: str) -> LockIfFree:
        """The entry's lock without waiting: True while held, False if another process
        holds it or it is unusable."""
        return LockIfFree(os.path.join(self.directory, key + _LOCK_SUFFIX))


# The two locks are context managers of their own: contextlib costs ~5 ms to import here.
class _Held:
    """An entry's lock file descriptor, unlocked and closed on leaving (None: none held)."""

    __slots__ = ("fd", "path")

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def __exit__(self, *exc_info: object) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            locking.unlock(fd)
        finally:
            os.close(fd)


class EntryLock(_Held):
    """``with``: waits for the entry's lock until ``deadline`` (DeadlineExceeded), or takes
    over the one the hit path took (cachepolicy.wait_turn); an unusable lock file is
    warned about and the body runs unlocked (fetch unlocked rather than not at all)."""

    __slots__ = ("deadline",)

    def __init__(self, path: str, deadline: float):
        super().__init__(path)
        self.deadline = deadline

    def __enter__(self) -> None:
        fd = locking.take_over(self.path)  # taken already on the hit path
        if fd is None:
            fd, problem = locking.open_lock(self.path)
            if fd is None:
                log.warning("cache lock %s not usable (%s); going on without it", self.path,
                         problem)
                return
            try:
                locking.lock(fd, self.deadline)
            except locking.LockTimeout as exc:
                os.close(fd)
                raise DeadlineExceeded(str(exc)) from None
        self.fd = fd
        locking.announce(fd, time.time() + self.deadline - time.monotonic())


class LockIfFree(_Held):
    """``with ... as taken``: the entry's lock if no other process holds it."""

    __slots__ = ()

    def __enter__(self) -> bool:
        fd, _ = locking.open_lock(self.path)
        if fd is None:
            return False
        try:
            taken = locking.try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if not taken:
            os.close(fd)
            return False
        self.fd = fd
        return True


def _check_dir(path: str, what: str) -> None:
    """CacheUnusable unless ``path`` is a private directory of ours; one of ours that is
    too open (e.g. made by hand) is tightened to 0700."""
    reason = safe_dir(path)
    if reason is not None and reason.startswith("its mode"):
        os.chmod(path, 0o700, follow_symlinks=False)
        log.warning("%s %s had mode %s; set to 700", what, path, reason.split()[3].rstrip(","))
        reason = safe_dir(path)
    if reason is not None:
        raise CacheUnusable(f"{what} {path} not used: {reason}")


CACHE_SERVICE = "keyhelper-cache"
CACHE_TIMEOUT = 3.0  # seconds per keyring call of the cache store


class KeyringStore:
    """Cache entries in the OS keyring instead of files (``cache = "keyring"``).

    A keyring that does not work makes every read a miss and every write a no-op, with one
    warning: the key is still served, just not cached.
    """

    def __init__(self, keyring: OsKeyring, service: str = CACHE_SERVICE):
        self.keyring = keyring
        self.service = service
        self.problem: str | None = None

    @classmethod
    def open(cls, context: Context) -> KeyringStore:
        from keyhelper.oskeyring import OsKeyring

        timeout = lambda: context.timeout(CACHE_TIMEOUT)  # noqa: E731
        return cls(OsKeyring(context.env, timeout, label="keyring cache"))

    def read(self, key: str) -> Entry | None:
        text = self._guarded(lambda: self.keyring.get(self.service, key))
        if not text:
            return None
        try:
            return parse_entry(text.encode("ascii"))
        except UnicodeEncodeError:
            return None  # not ours: a miss, overwritten on the next write

    def write(self, key: str, entry: Entry) -> None:
        data = entry.serialize().decode("ascii")
        self._guarded(lambda: self.keyring.set(self.service, key, data))

    def delete(self, key: str) -> bool:
        return bool(self._guarded(lambda: self.keyring.delete(self.service, key)))

    def describe(self, key: str) -> str:
        return f"OS keyring (service {self.service}, user {key})"

    def _guarded(self, call: Callable[[], T]) -> T | None:
        if self.problem is not None:
            return None  # failed once this run: do not pay another timeout
        try:
            return call()
        except Exception as exc:  # a cache must never break the run
            self.problem = (exc.message if isinstance(exc, (BackendError, Skip))
                            else f"{type(exc).__name__}: {exc}")
            log.warning("keyring cache not used: %s", self.problem)
            return None
