"""The cache entry of a default run (no backend or profile chosen), and waiting for the
background refresh that holds its lock: shared by the Claude Code loop and refresh tests."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from keyhelper.base import files as kpaths
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection


def entry_path() -> Path:
    key = kentry.entry_key(Selection(), os.environ)
    return Path(kpaths.cache_dir(os.environ)) / f"{key}.entry"


def write_due_entry(path: Path | None = None) -> float:
    """An entry of "key-old" from backend "src" in its refresh-ahead window (refresh time
    past, not expired), 0600, at ``path`` (by default the default run's entry, its cache
    directory made 0700); the time it was stored."""
    now = time.time()
    entry = kentry.Entry("key-old", "src", now, now + 300, now - 1, None, [],
                         kentry.env_digest([], os.environ))
    if path is None:
        Path(kpaths.cache_dir(os.environ)).mkdir(mode=0o700)
        path = entry_path()
    path.write_bytes(entry.serialize())
    path.chmod(0o600)
    return now


def wait_for_refresh_lock() -> None:
    """Block until the background refresh releases the entry's lock (or 20 s pass)."""
    lock = entry_path().with_suffix(".lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "background refresh never finished"
                os.sched_yield()
    finally:
        os.close(fd)
