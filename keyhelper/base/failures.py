"""Failures remembered across processes, beside the cache entry: the last failure (when,
until when not to retry, how many in a row, the environment it failed in, the reasons) and
how often a stale key was served. The backoff rule itself is keyhelper.cachepolicy's."""

from __future__ import annotations

import os

from keyhelper.base import records
from keyhelper.base.files import read_file_private, write_private

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

FAILURE_FORMAT = "keyhelper-failed 1"
STALE_FORMAT = "keyhelper-stale 1"
MAX_MESSAGE = 2000


class Failure:
    """The last failure of a chain, as every process of the user sees it."""

    __slots__ = ("count", "envsum", "failed_at", "message", "retry_at")

    def __init__(self, failed_at: float, retry_at: float, count: int, envsum: str,
                 message: str):
        self.failed_at = failed_at
        self.retry_at = retry_at
        self.count = count
        self.envsum = envsum  # the environment it failed in: fixing VAULT_ADDR retries at once
        self.message = message


class FailureLog:
    """The failure record and stale-serve counter of one cache entry."""

    def __init__(self, directory: str, key: str):
        self.failed_path = os.path.join(directory, key + ".failed")
        self.stale_path = os.path.join(directory, key + ".stale")

    def read(self) -> Failure | None:
        data = read_file_private(self.failed_path)
        table = None if data is None else records.load_unique(
            FAILURE_FORMAT, data, ("failed_at", "retry_at", "count", "envsum", "message"))
        if table is None:
            return None
        try:
            return Failure(records.number(table["failed_at"]),
                           records.number(table["retry_at"]), int(table["count"]),
                           table["envsum"], table["message"])
        except ValueError:
            return None

    def record(self, message: str, now: float, envsum: str,
               delay: Callable[[int], float]) -> Failure:
        """Remember a failure; ``delay(count)`` says how long not to retry after the
        ``count``-th failure in a row in the same environment."""
        previous = self.read()
        count = previous.count + 1 if (previous and previous.envsum == envsum
                                       and previous.failed_at <= now) else 1
        failure = Failure(now, now + delay(count), count, envsum, message[:MAX_MESSAGE])
        data = records.dump(FAILURE_FORMAT, [
            ("failed_at", repr(failure.failed_at)), ("retry_at", repr(failure.retry_at)),
            ("count", str(count)), ("envsum", envsum), ("message", failure.message)])
        try:
            write_private(self.failed_path, data)
        except OSError:
            pass
        return failure

    def clear(self) -> None:
        try:
            os.unlink(self.failed_path)
        except OSError:  # missing, or not a file: nothing to forget
            pass

    def count_stale(self, now: float) -> None:
        count, _ = self.stale_count()
        data = records.dump(STALE_FORMAT, [("count", str(count + 1)), ("last", repr(now))])
        try:
            write_private(self.stale_path, data)
        except OSError:
            pass

    def stale_count(self) -> tuple[int, float | None]:
        """How many times a stale key was served, and when last."""
        data = read_file_private(self.stale_path)
        table = None if data is None else records.load_unique(STALE_FORMAT, data,
                                                               ("count", "last"))
        if table is None:
            return 0, None
        try:
            return int(table["count"]), records.number(table["last"])
        except ValueError:
            return 0, None
