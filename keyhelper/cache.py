"""The key cache shared by every process of the user: private files, atomic writes, locks.

Entries are named by :func:`keyhelper._lean.entry_key` (selection and config identity, never
the secret) and read with the same no-symlink, owner- and mode-checking code as the hit
path. Writes go to a private temp file in the same directory, are fsynced and renamed, so a
reader sees the old entry or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from typing import Protocol

from keyhelper import _lean, _platform

log = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_LOCK_SUFFIX = ".lock"
# Files kept beside an entry: the shared failure record, the stale-serve counter, one
# marker per Claude Code process served, and the hit path's route to env and file keys
# (keyhelper/failures.py, keyhelper/_lean.py).
_SIDECARS = (".failed", ".stale", ".served", ".route")


class Store(Protocol):
    """Where entries live. Files by default; the keyring store keeps no secret on disk."""

    def read(self, key: str) -> _lean.Entry | None: ...

    def write(self, key: str, entry: _lean.Entry) -> None: ...

    def delete(self, key: str) -> bool: ...

    def describe(self, key: str) -> str: ...


class CacheUnusable(Exception):
    """The cache directory must not be used; keyhelper goes on without it."""


class FileCache:
    """Entries as 0600 files in a 0700 directory owned by the user."""

    def __init__(self, directory: str):
        self.directory = directory

    @classmethod
    def open(cls, env: Mapping[str, str]) -> FileCache:
        """The user's cache directory, created 0700 if needed; CacheUnusable if unsafe."""
        directory = _lean.cache_dir(env)
        if _lean.safe_dir(directory) == "missing":
            try:
                make_private_dirs(directory)
            except OSError as exc:
                raise CacheUnusable(f"cannot create {directory} ({exc.strerror})") from None
        _check_dir(directory, "cache directory")
        return cls(directory)

    def path(self, key: str) -> str:
        return _lean.entry_path(self.directory, key)

    def describe(self, key: str) -> str:
        return self.path(key)

    def read(self, key: str) -> _lean.Entry | None:
        return _lean.read_entry(self.directory, key)

    def write(self, key: str, entry: _lean.Entry) -> None:
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
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
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
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
                    removed += name.endswith(".entry")
        return removed

    def state_dir(self) -> str:
        """A private subdirectory for backend state (e.g. a Vault login token)."""
        path = os.path.join(self.directory, "state")
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        try:
            _check_dir(path, "state directory")
        except CacheUnusable as exc:
            # Said here: the run goes on with the cache, only backend state is not kept.
            log.warning("%s; going on without it", exc)
            raise
        return path

    @contextlib.contextmanager
    def lock(self, key: str, deadline: float) -> Iterator[None]:
        """Single flight: one process per entry fetches; the others wait here, then re-read."""
        path = os.path.join(self.directory, key + _LOCK_SUFFIX)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o600)
        except OSError as exc:  # a symlink or a directory in its place: fetch unlocked
            log.warning("cache lock %s not usable (%s); going on without it", path,
                        exc.strerror or type(exc).__name__)
            yield
            return
        problem = _lock_problem(os.fstat(fd))
        if problem:  # another user's lock could be held forever
            os.close(fd)
            log.warning("cache lock %s not usable (%s); going on without it", path, problem)
            yield
            return
        try:
            _platform.lock(fd, deadline)
            try:
                yield
            finally:
                _platform.unlock(fd)
        finally:
            os.close(fd)


def make_private_dirs(path: str) -> None:
    """Create ``path`` and each missing parent 0700: os.makedirs gives its mode to the last
    directory only, the parents get the umask's (0777 under umask 000)."""
    missing = []
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.mkdir(directory, 0o700)


def _check_dir(path: str, what: str) -> None:
    """CacheUnusable unless ``path`` is a private directory of ours; one of ours that is
    too open (e.g. made by hand) is tightened to 0700."""
    reason = _lean.safe_dir(path)
    if reason is not None and reason.startswith("its mode"):
        os.chmod(path, 0o700, follow_symlinks=False)
        log.warning("%s %s had mode %s; set to 700", what, path, reason.split()[3].rstrip(","))
        reason = _lean.safe_dir(path)
    if reason is not None:
        raise CacheUnusable(f"{what} {path} not used: {reason}")


def _lock_problem(st: os.stat_result) -> str:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if os.name == "posix" and st.st_uid != os.getuid():
        return "owned by another user"
    return ""


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically as a 0600 file, whatever the umask."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
