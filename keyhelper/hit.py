"""The cache hit: a key served from the cache (or read from the route's env variable or
file) with keyhelper.base and the cache policy's rules alone.

A hit must cost about one interpreter start: this module, keyhelper.cachepolicy and
keyhelper.base import only the standard library's cheapest modules (no click, json,
logging, pathlib, tomllib, importlib.metadata or backend library; tests/project/test_layers.py and
tests/cache/test_hot_path.py hold that). It finds the entry from the selection arguments and the
config file's identity, never by parsing TOML; on any doubt it answers "miss" (None) and the
full path (keyhelper.resolver) takes over, deciding with the same rules.
"""

from __future__ import annotations

import time

from keyhelper import cachepolicy
from keyhelper.base.entry import (
    NEXT,
    entry_key,
    follow_route,
    marker_path,
    parse_entry,
    read_marker,
    write_marker,
)
from keyhelper.base.files import read_private_files
from keyhelper.base.paths import cache_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from keyhelper.base.paths import Selection


def try_hit(selection: Selection, env: Mapping[str, str],
            argv: Sequence[str] = ()) -> str | None:
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
    if entry is None or not cachepolicy.fresh(entry, env, now):
        return None
    marker = None
    if entry.extra.get("rotation") != "off" and "CLAUDE_CODE_ENTRYPOINT" in env:
        from keyhelper.base import caller  # only Claude Code's calls need to know the caller

        calling = caller.caller_id(env)
        if calling is not None:
            marker = marker_path(directory, key, calling)
            if cachepolicy.rejected(entry, read_marker(marker), env, now):
                return None
    if cachepolicy.refresh_due(entry, now):
        from keyhelper.base import spawn

        spawn.spawn_refresh(directory, key, entry.stored, argv)
    if marker is not None:
        write_marker(marker, entry.stored, now)
    if "audit" in entry.extra or "audit_syslog" in entry.extra:
        from keyhelper.base import audit

        audit.append_hit(entry, selection.profile)
    return entry.key
