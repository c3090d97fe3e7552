"""A miss, under the cache policy's rules (keyhelper/cachepolicy/__init__.py): the entry's
lock, a re-read, the chain only when the rules say so, the new entry stored, the old one
served when every backend fails (stale-if-error), the shared failure record (backoff).
Kept apart from the rules only so that a cache hit does not load it."""

from keyhelper.base.records import (
    Entry,
    env_digest,
    fingerprint,
    marker_path,
    read_marker,
    write_marker,
)
from keyhelper.cachepolicy import (
    EXPIRY_MARGIN,
    backed_off,
    fresh,
    refetch_too_soon,
    rejected,
    retry_delay,
    stale_servable,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractContextManager

    from keyhelper.cachepolicy import Store
    from keyhelper.errors import Attempt


class Rules:
    """The settings the rules need, from the configuration (and the policy's TTL bounds)."""

    __slots__ = ("extra", "refresh_ahead", "rotation_detection", "stale_grace", "ttl")

    def __init__(self, ttl: float, refresh_ahead: float, stale_grace: float,
                 rotation_detection: bool, extra: "Mapping[str, str]"):
        self.ttl = ttl
        self.refresh_ahead = refresh_ahead
        self.stale_grace = stale_grace
        self.rotation_detection = rotation_detection
        self.extra = dict(extra)  # what the hit path must know without the config

    def make_entry(self, value: str, expires_at: float | None, backend: str,
                   env_names: "Sequence[str]", env: "Mapping[str, str]",
                   now: float) -> "Entry | None":
        """The entry for a fetched key; None when it is too close to its own expiry."""
        expires = now + self.ttl
        if expires_at is not None:
            expires = min(expires, expires_at - EXPIRY_MARGIN)
        if expires <= now:
            return None
        refresh = expires - (expires - now) * self.refresh_ahead
        extra = dict(self.extra)
        if not self.rotation_detection:
            extra["rotation"] = "off"
        return Entry(value, backend, now, expires, refresh, expires_at, env_names,
                     env_digest(env_names, env), extra)


# --- a miss -------------------------------------------------------------------------------

class Fetched:
    """What the chain gave: the key, its expiry, the backend and whether it may be cached."""

    __slots__ = ("attempts", "backend", "cacheable", "expires_at", "value")

    def __init__(self, value: str, expires_at: float | None, backend: str, cacheable: bool,
                 attempts: "list[Attempt]"):
        self.value = value
        self.expires_at = expires_at
        self.backend = backend
        self.cacheable = cacheable
        self.attempts = attempts


class Outcome:
    """A key handed out and how: ``source`` is "hit", "fetched" (and cached), "uncached",
    "stale" (every backend failed), "rotated" (fetched anew: the key was refused) or
    "refresh" (in the background)."""

    __slots__ = ("attempts", "backend", "entry", "expires_at", "source", "value", "where")

    def __init__(self, value: str, expires_at: float | None, backend: str, source: str,
                 attempts: "list[Attempt] | None" = None, entry: "Entry | None" = None,
                 where: str | None = None):
        self.value = value
        self.expires_at = expires_at
        self.backend = backend
        self.source = source
        self.attempts = attempts or []
        self.entry = entry
        self.where = where


class CachedFetcher:
    """One cache entry on a miss: serve it if another process fetched meanwhile, else run
    the chain (``fetch``) and store its key; on failure serve the old key or back off.

    ``report(level, message)`` tells the caller what was decided ("debug", "info",
    "warning"); it logs them. ``caller`` names the Claude Code process (rotation markers).
    """

    def __init__(self, store: "Store", directory: str, key: str, rules: "Rules",
                 env: "Mapping[str, str]", *, now: "Callable[[], float]",
                 lock: "Callable[[], AbstractContextManager[object]]",
                 caller: str | None, report: "Callable[[str, str], None]"):
        self.store = store
        self.directory = directory
        self.key = key
        self.rules = rules
        self.env = env
        self.now = now
        self.lock = lock
        self.caller = caller if rules.rotation_detection else None
        self.report = report

    def get(self, fetch: "Callable[[], Fetched]", env_names: "Sequence[str]") -> "Outcome":
        seen = self.served()
        entry = self.store.read(self.key)
        if fresh(entry, self.env, self.now(), env_names) and not self._rejected(entry, seen):
            assert entry is not None
            return self.serve(entry, "hit")
        from keyhelper.errors import DeadlineExceeded  # a miss only: not on the hit path

        locked = False
        try:
            with self.lock():
                locked = True
                return self._locked_get(fetch, env_names, seen)
        except DeadlineExceeded:
            if locked:
                raise
            return self._stale_while_waiting(env_names)

    def _locked_get(self, fetch: "Callable[[], Fetched]", env_names: "Sequence[str]",
                    seen: tuple[float, float] | None) -> "Outcome":
        """Under the entry's lock: re-read, and fetch only if the rules say so."""
        entry = self.store.read(self.key)  # another process may have fetched meanwhile
        source = "fetched"
        if fresh(entry, self.env, self.now(), env_names):
            assert entry is not None
            if not self._rejected(entry, seen):
                return self.serve(entry, "hit")
            if refetch_too_soon(entry, self.now()):
                self.report("info", "the refetched key was refused as well; not "
                                    "refetching yet")
                return self.serve(entry, "hit")
            self.report("info", "the calling Claude Code process asks again within its "
                                "TTL: its key was refused; fetching anew")
            source = "rotated"
        return self.fetch_and_store(fetch, entry, env_names, source)

    def _stale_while_waiting(self, env_names: "Sequence[str]") -> "Outcome":
        """The process fetching this key did not finish within our deadline (a backend
        that hangs, a cluster electing a leader): the old key if stale-if-error allows."""
        entry = self.store.read(self.key)
        from keyhelper.errors import DeadlineExceeded

        if not stale_servable(entry, env_names, self.env, self.now(), self.rules.stale_grace):
            raise DeadlineExceeded("timed out waiting for another keyhelper process fetching "
                                   "the same key")
        assert entry is not None
        self.report("warning", "another keyhelper process is still fetching the key; serving "
                               f"the cached key {fingerprint(entry.key)}")
        return self.serve(entry, "stale")

    def refresh(self, fetch: "Callable[[], Fetched]", env_names: "Sequence[str]",
                expected_stored: float) -> "Outcome | None":
        """Background refresh ahead of expiry (the lock is held by the caller); nothing if
        someone refreshed already."""
        entry = self.store.read(self.key)
        if entry is None or entry.stored != expected_stored:
            return None
        return self.fetch_and_store(fetch, entry, env_names, "refresh")

    def fetch_and_store(self, fetch: "Callable[[], Fetched]", old: "Entry | None",
                        env_names: "Sequence[str]", source: str) -> "Outcome":
        """Run the chain and cache its key; on failure, maybe serve the old key (stale)."""
        from keyhelper.base.failures import FailureLog  # a miss only: not on the hit path
        from keyhelper.errors import BackedOff, NoKeyError

        failures = FailureLog(self.directory, self.key)
        now = self.now()
        envsum = env_digest(env_names, self.env)
        try:
            remembered = failures.read()
            if (remembered is not None and remembered.envsum == envsum
                    and backed_off(remembered.failed_at, remembered.retry_at, now)):
                raise BackedOff(remembered.message, remembered.failed_at,
                                remembered.retry_at, now)
            fetched = fetch()
        except NoKeyError as exc:
            now = self.now()  # the backoff counts from the failure, not the fetch's start
            if not isinstance(exc, BackedOff) and any(a.outcome == "failed"
                                                      for a in exc.attempts):
                failures.record(exc.describe(), now, envsum, retry_delay)
            if not stale_servable(old, env_names, self.env, now, self.rules.stale_grace):
                raise
            assert old is not None
            failures.count_stale(now)
            age = now - old.expires
            from keyhelper.base.records import fingerprint

            self.report("warning", "every backend failed; serving the cached key "
                        f"{fingerprint(old.key)} ("
                        + (f"{age:.0f} s past its cache life" if age > 0 else "still fresh")
                        + ")")
            return self.serve(old, "stale")
        failures.clear()
        new_entry = None
        if fetched.cacheable:
            new_entry = self.rules.make_entry(fetched.value, fetched.expires_at,
                                              fetched.backend, env_names, self.env, self.now())
        if new_entry is None:
            return Outcome(fetched.value, fetched.expires_at, fetched.backend, "uncached",
                           fetched.attempts)
        if source == "rotated":
            new_entry.extra["rotated"] = "1"
        self.store.write(self.key, new_entry)
        self.report("debug", f"{source}: cached in {self.store.describe(self.key)} for "
                             f"{new_entry.expires - new_entry.stored:.0f} s")
        self.mark_served(new_entry)
        return Outcome(fetched.value, fetched.expires_at, fetched.backend, source,
                       fetched.attempts, new_entry, self.store.describe(self.key))

    # --- Claude Code rotation detection ---------------------------------------------------

    def served(self) -> tuple[float, float] | None:
        if self.caller is None:
            return None
        return read_marker(marker_path(self.directory, self.key, self.caller))

    def _rejected(self, entry: "Entry | None", seen: tuple[float, float] | None) -> bool:
        return entry is not None and rejected(entry, seen, self.env, self.now())

    def mark_served(self, entry: "Entry") -> None:
        if self.caller is not None:
            write_marker(marker_path(self.directory, self.key, self.caller), entry.stored,
                         self.now())

    def serve(self, entry: "Entry", source: str) -> "Outcome":
        from keyhelper.base.records import fingerprint

        self.report("debug", f"{source}: {fingerprint(entry.key)} from "
                             f"{self.store.describe(self.key)}, "
                             f"{entry.expires - self.now():.0f} s of cache life left")
        self.mark_served(entry)
        return Outcome(entry.key, entry.token_expires, entry.backend, source, [], entry,
                       self.store.describe(self.key))
