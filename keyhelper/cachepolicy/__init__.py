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
calls the chain (a callable given in) only when these rules say so. ``CachedFetcher`` lives
in keyhelper/cachepolicy/fetcher.py, beside these rules, so that a hit does not load it.
"""

import time

from keyhelper.base.files import cache_dir, read_private_files
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
