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
from collections.abc import Iterator, Mapping
from typing import Protocol

from keyhelper import _lean, _platform

log = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
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
        reason = _lean.safe_dir(directory)
        if reason == "missing":
            try:
                os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass  # another process made it first; checked below
            except OSError as exc:
                raise CacheUnusable(f"cannot create {directory} ({exc.strerror})") from None
            reason = _lean.safe_dir(directory)
        if reason is not None and reason.startswith("its mode"):
            # Ours, a real directory, but too open (e.g. made by hand): tighten it.
            os.chmod(directory, 0o700, follow_symlinks=False)
            log.warning("cache directory %s had mode %s; set to 700", directory,
                        reason.split()[3].rstrip(","))
            reason = _lean.safe_dir(directory)
        if reason is not None:
            raise CacheUnusable(f"cache directory {directory} not used: {reason}")
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
        reason = _lean.safe_dir(path)
        if reason is not None:
            raise CacheUnusable(f"state directory {path} not used: {reason}")
        return path

    @contextlib.contextmanager
    def lock(self, key: str, deadline: float) -> Iterator[None]:
        """Single flight: one process per entry fetches; the others wait here, then re-read."""
        path = os.path.join(self.directory, key + _LOCK_SUFFIX)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
        except OSError as exc:  # a symlink or a directory in its place: fetch unlocked
            log.warning("cache lock %s not usable (%s); going on without it", path,
                        exc.strerror or type(exc).__name__)
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
