"""Failures remembered across processes, so a backend that is down is not hammered.

When a chain fails, every keyhelper process of the user (each Claude Code session, each
subagent) would otherwise retry the broken backend on every call. The first failure is
written next to the cache entry with a retry time that backs off (2, 4, 8 ... 30 s); until
then other processes answer at once, from a stale key if one may be served, or with the
remembered reason. Any success clears it. Stale serves are counted for ``doctor``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from keyhelper import _lean
from keyhelper.cache import write_private
from keyhelper.errors import NoKeyError

BACKOFF_FIRST = 2.0
BACKOFF_MAX = 30.0
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Failure:
    failed_at: float
    retry_at: float
    count: int
    envsum: str  # the environment it failed in: fixing VAULT_ADDR, say, retries at once
    message: str


class BackedOff(NoKeyError):
    """The chain failed moments ago (maybe in another process); not retried yet."""

    def __init__(self, failure: Failure, now: float):
        self.failure = failure
        self.now = now
        super().__init__([])

    def describe(self, verbose: bool = False) -> str:
        ago = self.now - self.failure.failed_at
        wait = self.failure.retry_at - self.now
        return (f"{self.failure.message}\n  (failed {ago:.0f} s ago; retried in {wait:.0f} s; "
                "`keyhelper cache clear` retries now)")


class FailureLog:
    """The failure record and stale-serve counter of one cache entry."""

    def __init__(self, directory: str, key: str):
        self.failed_path = os.path.join(directory, key + ".failed")
        self.stale_path = os.path.join(directory, key + ".stale")

    def read(self) -> Failure | None:
        data = _lean.read_file_private(self.failed_path)
        if data is None:
            return None
        try:
            head, _, message = data.decode("utf-8").partition("\n")
            failed_at, retry_at, count, envsum = head.split()
            return Failure(float(failed_at), float(retry_at), int(count), envsum, message)
        except ValueError:
            return None

    def record(self, message: str, now: float, envsum: str) -> Failure:
        previous = self.read()
        count = previous.count + 1 if previous and previous.envsum == envsum else 1
        delay = min(BACKOFF_FIRST * 2 ** (count - 1), BACKOFF_MAX)
        failure = Failure(now, now + delay, count, envsum, message[:MAX_MESSAGE])
        head = f"{now!r} {failure.retry_at!r} {count} {envsum}"
        with contextlib.suppress(OSError):
            write_private(self.failed_path, f"{head}\n{failure.message}".encode())
        return failure

    def clear(self) -> None:
        with contextlib.suppress(OSError):  # missing, or not a file: nothing to forget
            os.unlink(self.failed_path)

    def count_stale(self, now: float) -> None:
        count, _ = self.stale_count()
        with contextlib.suppress(OSError):
            write_private(self.stale_path, f"{count + 1} {now!r}".encode())

    def stale_count(self) -> tuple[int, float | None]:
        """How many times a stale key was served, and when last."""
        data = _lean.read_file_private(self.stale_path)
        try:
            count, last = (data or b"").decode("ascii").split()
            return int(count), float(last)
        except ValueError:
            return 0, None
