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
