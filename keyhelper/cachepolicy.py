"""The cache policy: the one place that decides whether a key is served from the cache or
fetched, and what happens around a fetch.

- Freshness: an entry is served while ``stored <= now < expires`` and it was fetched under
  the same environment (:func:`fresh`).
- Refresh ahead: in the last ``refresh_ahead`` part of its life a hit is served at once and a
  background process fetches the next key (:func:`refresh_due`).
- Rotation refetch: Claude Code asks again within its own TTL only after the gateway refused
  the key, so a repeat call from the same Claude Code process is a miss (:func:`rejected`),
  fetched anew at most once per ``REFETCH_INTERVAL`` while the new key is refused too.
- Stale-if-error: when every backend fails, the old key is served up to ``stale_grace``
  past its cache life, never past its own expiry (:meth:`CachedFetcher._stale`).
- Backoff: a failure is remembered for every process (2, 4 ... 30 s), so a backend that is
  down is not hammered; it counts from when the failure was recorded (:func:`backoff`).

A cache hit is :func:`try_hit`: these rules applied to the cache without the chain, on
keyhelper.base alone, so that a hit costs about one interpreter start (no click, json,
logging, pathlib, tomllib, importlib.metadata or backend library: tests/project/test_layers.py
and tests/cache/test_hot_path.py hold that); on any doubt it answers "miss" and the full path
(keyhelper.resolver) runs :class:`CachedFetcher`, which holds the entry's lock, re-reads, and
calls the chain (a callable given in) only when these rules say so.
"""

import time

from keyhelper.base.files import cache_dir, read_private_files
from keyhelper.base.records import (
    NEXT,
    Entry,
    entry_key,
    env_digest,
    follow_route,
    marker_path,
    parse_entry,
    read_marker,
    write_marker,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractContextManager
    from typing import Protocol

    from keyhelper.base.files import Selection
    from keyhelper.errors import Attempt

    class Store(Protocol):
        def read(self, key: str) -> "Entry | None": ...

        def write(self, key: str, entry: "Entry") -> None: ...

        def describe(self, key: str) -> str: ...

DEFAULT_CLAUDE_TTL = 300.0
# A repeat call from the same Claude Code process sooner than this share of its own TTL means
# the key it was given was refused (Claude Code re-runs the helper on 401/403).
REPEAT_WINDOW = 0.9
# A key fetched because the previous one was refused, and refused in turn, is fetched anew
# at most this often (Claude Code retries up to 10 times, ~1 to 37 s apart).
REFETCH_INTERVAL = 5.0
# A cached token is dropped this long before its own expiry: Claude Code 2.1.332 asks for a
# new JWT ~30 s before `exp`, and that call must get a fresh one.
EXPIRY_MARGIN = 60.0
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 30.0


# --- the rules ----------------------------------------------------------------------------

def claude_ttl(env: "Mapping[str, str]") -> float | None:
    """CLAUDE_CODE_API_KEY_HELPER_TTL_MS in seconds; a non-numeric value is ignored, as
    Claude Code ignores it."""
    raw = env.get("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw) / 1000
    return None


def fresh(entry: "Entry | None", env: "Mapping[str, str]", now: float,
          env_names: "Sequence[str] | None" = None) -> bool:
    """Whether ``entry`` may be served now, fetched under this environment. The full path,
    which knows the chain, also requires the same variables (``env_names``)."""
    return (entry is not None and (env_names is None or list(entry.env_names) == list(env_names))
            and entry.matches_env(env) and entry.stored <= now < entry.expires)


def refresh_due(entry: "Entry", now: float) -> bool:
    return now >= entry.refresh


def rejected(entry: "Entry", marker: tuple[float, float] | None, env: "Mapping[str, str]",
             now: float) -> bool:
    """True when this caller was already served this very entry, within its own TTL:
    Claude Code asks again that soon only after the gateway refused the key."""
    if marker is None:
        return False
    stored, served = marker
    window = REPEAT_WINDOW * (claude_ttl(env) or DEFAULT_CLAUDE_TTL)
    return stored == entry.stored and 0 <= now - served < window


def refetch_too_soon(entry: "Entry", now: float) -> bool:
    """The key fetched after the last refusal is refused too: the backend has not caught up.
    Keep a retry storm to one fetch per interval."""
    return bool(entry.extra.get("rotated")) and now - entry.stored < REFETCH_INTERVAL


def backoff(count: int) -> float:
    """Seconds not to retry after the ``count``-th failure in a row."""
    return float(min(BACKOFF_FIRST * 2 ** (count - 1), BACKOFF_MAX))


def stale_servable(entry: "Entry | None", env_names: "Sequence[str]", env: "Mapping[str, str]",
                   now: float, grace: float) -> bool:
    """The old entry may still be served when every backend fails: same environment, within
    the grace period, and never past the key's own expiry."""
    if entry is None or list(entry.env_names) != list(env_names) or not entry.matches_env(env):
        return False
    if entry.token_expires is not None and now >= entry.token_expires:
        return False
    return now < entry.expires + grace


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
        with self.lock():
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
                    and now < remembered.retry_at):
                raise BackedOff(remembered.message, remembered.failed_at,
                                remembered.retry_at, now)
            fetched = fetch()
        except NoKeyError as exc:
            if not isinstance(exc, BackedOff) and any(a.outcome == "failed"
                                                      for a in exc.attempts):
                failures.record(exc.describe(), now, envsum, backoff)
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


# --- a hit -------------------------------------------------------------------------------

def try_hit(selection: "Selection", env: "Mapping[str, str]",
            argv: "Sequence[str]" = ()) -> str | None:
    """The key for this selection: from the route's env/file steps (read now), else from a
    fresh cache entry that is safe to serve; None hands over to the full path.

    A miss (None) also when the calling Claude Code process is asking again for the key it
    was just given: the full path then fetches anew, rate-limited, under the lock.
    """
    directory = cache_dir(env)
    key = entry_key(selection, env)
    route, data = read_private_files(directory, [key + ".route", key + ".entry"])
    routed = follow_route(route, env)
    if routed != NEXT:
        return routed
    entry = parse_entry(data) if data is not None else None
    now = time.time()
    if entry is None or not fresh(entry, env, now):
        return None
    marker = None
    if entry.extra.get("rotation") != "off" and "CLAUDE_CODE_ENTRYPOINT" in env:
        from keyhelper.base import caller  # only Claude Code's calls need to know the caller

        calling = caller.caller_id(env)
        if calling is not None:
            marker = marker_path(directory, key, calling)
            if rejected(entry, read_marker(marker), env, now):
                return None
    if refresh_due(entry, now):
        from keyhelper.base import spawn

        spawn.spawn_refresh(directory, key, entry.stored, argv)
    if marker is not None:
        write_marker(marker, entry.stored, now)
    if "audit" in entry.extra or "audit_syslog" in entry.extra:
        from keyhelper.base import audit

        audit.append_hit(entry, selection.profile)
    return entry.key
