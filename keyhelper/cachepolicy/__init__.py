"""The cache policy: the one place that decides whether a key is served from the cache or
fetched, and what happens around a fetch.

- Freshness: an entry is served while ``stored <= now < expires`` and it was fetched under
  the same environment (:func:`fresh`).
- Refresh ahead: in the last ``refresh_ahead`` part of its life a hit is served at once and a
  background process fetches the next key (:func:`refresh_due`).
- Rotation refetch: Claude Code asks again within its own TTL only after the gateway refused
  the key, so a repeat call from the same Claude Code process is a miss (:func:`rejected`),
  fetched anew at most once per ``REFETCH_INTERVAL`` while the new key is refused too.
- Stale-if-error: when every backend fails (or the process fetching it does not finish
  within our deadline), the old key is served up to ``stale_grace``
  past its cache life, never past its own expiry (:meth:`CachedFetcher._stale`).
- Backoff: a failure is remembered for every process (2, 4 ... 30 s, each stretched by up to
  half at random so that machines' retries spread out after an outage), so a backend that
  is down is not hammered; it counts from when the fetch failed, not when it started
  (:func:`backoff`, :func:`retry_delay`).
- Times from the future are never trusted: a record written while the clock was ahead
  (more than ``CLOCK_SKEW``) is ignored, as if it did not exist (:func:`from_future`).

A cache hit is :func:`try_hit`: these rules applied to the cache without the chain, on
keyhelper.base alone, so that a hit costs about one interpreter start (no click, json,
logging, pathlib, tomllib, importlib.metadata or backend library: tests/project/test_layers.py
and tests/cache/test_hot_path.py hold that); on any doubt it answers "miss" and the full path
(keyhelper.resolver) runs :class:`CachedFetcher`, which holds the entry's lock, re-reads, and
calls the chain (a callable given in) only when these rules say so. ``CachedFetcher`` lives
in keyhelper/cachepolicy/fetcher.py, beside these rules, so that a hit does not load it.
"""

import time

from keyhelper.base import oslite
from keyhelper.base.files import cache_dir, make_private_dirs, read_private_files, safe_dir
from keyhelper.base.records import (
    NEXT,
    Entry,
    entry_key,
    follow_route,
    marker_path,
    parse_entry,
    read_marker,
    write_marker,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Protocol

    from keyhelper.base.files import Selection

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
BACKOFF_JITTER = 0.5  # a backoff lasts between 1 and 1 + this times backoff(count)
# A time recorded ahead of the clock by more than this was written while the clock was wrong
# (or the record was tampered with): it is not trusted.
CLOCK_SKEW = 5.0
# A miss that finds the entry's lock held waits on the lean path while the holder's
# announced time lasts (keyhelper.base.lock.announce); the hit path announces this much
# until the full path, having read the config, announces its deadline (~0.1 s later, or
# seconds on a loaded machine). Generous: giving up early sends every waiter into the full
# path at once, which slows the holder further; Claude Code itself waits 10 minutes.
FIRST_TURN = 30.0
ANNOUNCE_GRACE = 0.5
POLL_FIRST = 0.002
POLL_MAX = 0.02


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
    return bool(entry.extra.get("rotated")) and 0 <= now - entry.stored < REFETCH_INTERVAL


def backoff(count: int) -> float:
    """The least seconds not to retry after the ``count``-th failure in a row."""
    return float(min(BACKOFF_FIRST * 2 ** (count - 1), BACKOFF_MAX))


def retry_delay(count: int) -> float:
    """:func:`backoff` stretched at random by up to ``BACKOFF_JITTER``: every machine of a
    fleet fails at once when Vault goes down, and without jitter they would all retry at
    once when it comes back."""
    import random  # a miss only: not on the hit path

    return backoff(count) * (1 + BACKOFF_JITTER * random.random())  # noqa: S311


def from_future(recorded: float, now: float) -> bool:
    """Whether a recorded time lies ahead of the clock by more than ``CLOCK_SKEW``."""
    return recorded > now + CLOCK_SKEW


def backed_off(failed_at: float, retry_at: float, now: float) -> bool:
    """Whether a remembered failure still holds retries back: never one from the future,
    nor one that would wait longer than any backoff does."""
    longest = BACKOFF_MAX * (1 + BACKOFF_JITTER) + CLOCK_SKEW
    return not from_future(failed_at, now) and now < retry_at <= now + longest


def stale_servable(entry: "Entry | None", env_names: "Sequence[str]", env: "Mapping[str, str]",
                   now: float, grace: float) -> bool:
    """The old entry may still be served when every backend fails: same environment, within
    the grace period, and never past the key's own expiry."""
    if entry is None or list(entry.env_names) != list(env_names) or not entry.matches_env(env):
        return False
    if from_future(entry.stored, now):
        return False  # fetched while the clock was ahead: its times say nothing true
    if entry.token_expires is not None and now >= entry.token_expires:
        return False
    return now < entry.expires + grace


# --- a hit -------------------------------------------------------------------------------

def try_hit(selection: "Selection", env: "Mapping[str, str]",
            argv: "Sequence[str]" = (), context: str = "") -> str | None:
    """The key for this selection: from the route's env/file steps (read now), else from a
    fresh cache entry that is safe to serve; None hands over to the full path.

    A miss (None) also when the calling Claude Code process is asking again for the key it
    was just given: the full path then fetches anew, rate-limited, under the lock.
    ``context`` tells apart the callers within one process (an MCP server's headersHelper).
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
            marker = marker_path(directory, key, calling + context)
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


def wait_turn(selection: "Selection", env: "Mapping[str, str]",
              argv: "Sequence[str]" = ()) -> str | None:
    """After a miss, single flight on the lean path: the key another process is fetching
    for this entry, once it has stored it; None to go on to the full path, holding the
    entry's lock (handed over to it, keyhelper.base.lock.take_over) if this process came
    first.

    A burst of processes on a cold entry thus imports the full path once, not once per
    process before waiting on the lock: waiting is a hit that has not happened yet. When
    the holder stored nothing (a failure, an uncached key), the others go on to the full
    path, which decides as it always does (backoff, stale key, its own fetch).
    """
    from keyhelper.base.lock import announce, announced, hand_over, open_lock, try_lock, unlock

    directory = cache_dir(env)
    if safe_dir(directory) == "missing":
        try:
            make_private_dirs(directory)
        except OSError:
            return None
    if safe_dir(directory) is not None:
        return None  # the full path says what is wrong with it
    path = oslite.join(directory, entry_key(selection, env) + ".lock")
    fd, _ = open_lock(path)
    if fd is None:
        return None
    if try_lock(fd):
        announce(fd, time.time() + FIRST_TURN)
        hand_over(path, fd)
        return None
    began = time.monotonic()
    try:
        delay = POLL_FIRST
        unannounced = None
        while True:
            until = announced(fd)
            if until is None or time.time() >= until:
                # Not announced (yet: the holder writes it just after locking), or past
                # its time: after a short grace, the full path decides.
                unannounced = unannounced or time.monotonic() + ANNOUNCE_GRACE
                if time.monotonic() >= unannounced:
                    return None
            else:
                unannounced = None
            time.sleep(delay)  # polling: a blocking flock cannot time out
            delay = min(delay * 2, POLL_MAX)
            if try_lock(fd):
                try:
                    return try_hit(selection, env, argv)
                finally:
                    unlock(fd)
    finally:
        oslite.native.close(fd)
        # The run has one deadline: time spent here is not given again to the full path.
        selection.waited = time.monotonic() - began
