"""The resolver: a selection to one key, through the cache policy and the chain.

``resolve(selection, env) -> Result`` is the one function the CLI calls to get a key. A
:class:`Run` holds what one invocation needs (the settings, the chain, the cache); the cache
policy (keyhelper.cachepolicy) decides whether the chain runs at all.
"""

from __future__ import annotations

import os
import time

from keyhelper import config
from keyhelper.backend import Context, Token, wall_clock
from keyhelper.base import audit
from keyhelper.base.files import read_in_private_dir, write_private
from keyhelper.base.lock import release_handed
from keyhelper.base.records import entry_key, route_path, serialize_route
from keyhelper.cachepolicy import fetcher as policy_fetcher
from keyhelper.chain import Chain
from keyhelper.redact import DEBUG, INFO, WARNING, get_logger
from keyhelper.registry import Registry, allowlist
from keyhelper.stores import CacheUnusable, FileCache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from keyhelper.base.files import Selection
    from keyhelper.base.records import Entry
    from keyhelper.chain import Link
    from keyhelper.errors import Attempt
    from keyhelper.stores import Store


log = get_logger(__name__)

_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING}


class Result:
    """A key and how it was obtained (``source``: see keyhelper.cachepolicy.fetcher.Outcome)."""

    __slots__ = ("attempts", "backend", "cache_location", "entry", "source", "token")

    def __init__(self, token: Token, backend: str, source: str,
                 attempts: list[Attempt] | None = None, entry: Entry | None = None,
                 cache_location: str | None = None):
        self.token = token
        self.backend = backend
        self.source = source
        self.attempts = [] if attempts is None else attempts
        self.entry = entry
        self.cache_location = cache_location


class Run:
    """One invocation: the settings, the chain of backends, the cache."""

    def __init__(self, selection: Selection, env: Mapping[str, str], *,
                 registry: Registry | None = None, now: Callable[[], float] = wall_clock):
        self.selection = selection
        self.env = env
        self.now = now
        self.settings = config.load(selection, env)
        # One deadline for the whole run, the lean path's wait for another process included.
        self.deadline = (time.monotonic() + float(self.settings.setting("deadline"))
                         - selection.waited)
        self.use_cache = not selection.no_cache and env.get("KEYHELPER_NO_CACHE") != "1"
        self.cache: FileCache | None = None
        self.cache_problem: str | None = None
        try:
            self.cache = FileCache.open(env)
            state_dir: str | None = self.cache.state_dir()
        except (CacheUnusable, OSError) as exc:
            self.cache_problem = str(exc)
            state_dir = None
        registry = registry or Registry(allow=allowlist(self.settings.raw.get("plugins"), env),
                                        index_dir=state_dir)
        # Claude Desktop says when a person is there to answer a prompt or a browser login.
        interactive = False
        if selection.shape:  # a hook's shape: keyhelper.base.shapes, imported for them only
            from keyhelper.base.shapes import DESKTOP, HELPER_CONTEXT

            interactive = (selection.shape == DESKTOP
                           and env.get(HELPER_CONTEXT) == "interactive")
        self.context = Context(self.settings.profile, env, self.deadline, state_dir or "",
                               now=now, interactive=interactive)
        self.chain = Chain(self.settings, registry, self.context)
        self.context.fetch_other = self.chain.fetch_named
        self.key = entry_key(selection, env)

    # --- what the cache policy needs ------------------------------------------------------

    def cache_store(self) -> Store | None:
        if not self.use_cache:
            return None
        if self.cache is None:
            log.warning("%s; going on without a cache", self.cache_problem)
            return None
        if self.settings.setting("cache") == "keyring":
            from keyhelper.stores import KeyringStore  # no secret on disk; locks stay files

            return KeyringStore.open(self.context)
        return self.cache

    def rules(self) -> policy_fetcher.Rules:
        ttl, _ = self.settings.ttl(self.env)
        extra = audit.entry_extra(self.settings.raw)
        return policy_fetcher.Rules(ttl, float(self.settings.setting("refresh_ahead")),
                                 float(self.settings.setting("stale_grace")),
                                 bool(self.settings.setting("rotation_detection")), extra)

    def fetcher(self, store: Store) -> policy_fetcher.CachedFetcher:
        assert self.cache is not None
        cache = self.cache
        caller = None
        if self.settings.setting("rotation_detection"):  # the caller walk: only for it
            from keyhelper.base.caller import caller_id

            caller = caller_id(self.env)
        if caller is not None:  # one headersHelper per MCP server (keyhelper.base.shapes)
            from keyhelper.base.shapes import marker_context

            caller += marker_context(self.env)

        return policy_fetcher.CachedFetcher(
            store, cache.directory, self.key, self.rules(), self.env, now=self.now,
            lock=lambda: cache.lock(self.key, self.deadline), caller=caller,
            report=lambda level, message: log.log(_LEVELS[level], "%s", message))

    @staticmethod
    def env_names(links: Sequence[Link]) -> list[str]:
        return sorted({n for link in links if link.backend for n in link.backend.watched_env()})

    def fetch(self, links: Sequence[Link]) -> policy_fetcher.Fetched:
        token, link, attempts = self.chain.run(links)
        cacheable = bool(link.backend and link.backend.cacheable)
        return policy_fetcher.Fetched(token.value, token.expires_at, link.spec.name, cacheable,
                                   attempts)

    # --- a key ----------------------------------------------------------------------------

    def resolve(self) -> Result:
        links = self.chain.links()
        self.save_route(links)
        cacheable = any(link.backend and link.backend.cacheable for link in links)
        store = self.cache_store() if cacheable else None
        if store is None or self.cache is None:
            release_handed()  # a lock the hit path took: the others need not wait for this
            token, link, attempts = self.chain.run(links)
            result = Result(token, link.spec.name, "uncached", attempts)
        else:
            outcome = self.fetcher(store).get(lambda: self.fetch(links),
                                              self.env_names(links))
            release_handed()  # served without the lock (e.g. a keyring-cache hit)
            result = _result(outcome)
        warning = audit.record(self.settings.raw, self.settings.profile, result.backend,
                               result.source, result.token.value, result.token.expires_at)
        if warning:
            log.warning("%s", warning)
        return result

    def refresh(self, expected_stored: float, take_lock: bool = False) -> Result | None:
        """Background refresh ahead of expiry (the lock is held by the caller, or taken
        here without waiting with ``take_lock``); nothing if someone refreshed already."""
        links = self.chain.links()
        store = self.cache_store()
        if store is None or self.cache is None:
            return None
        if take_lock:
            with self.cache.lock_if_free(self.key) as taken:
                return self._refresh(store, links, expected_stored) if taken else None
        return self._refresh(store, links, expected_stored)

    def _refresh(self, store: Store, links: Sequence[Link],
                 expected_stored: float) -> Result | None:
        outcome = self.fetcher(store).refresh(lambda: self.fetch(links), self.env_names(links),
                                              expected_stored)
        return None if outcome is None else _result(outcome)

    def save_route(self, links: Sequence[Link]) -> None:
        """Record the chain's leading env and file backends for the hit path, which then
        reads their keys itself (they are never cached). Names only, never a key."""
        if self.cache is None or not self.use_cache:
            return
        steps = []
        for link in links:
            step = route_step(link)
            if step is None:
                break
            steps.append(step)
        if audit.entry_extra(self.settings.raw):
            steps = []  # an audited issuance is logged by the full path
        path = route_path(self.cache.directory, self.key)
        data = serialize_route(steps) if steps else None
        if read_in_private_dir(self.cache.directory, self.key + ".route") == data:
            return
        try:
            if data is None:
                os.unlink(path)
            else:
                write_private(path, data)
        except OSError:
            pass


# The built-in backends whose key the hit path reads itself: the route mirrors exactly what
# these classes do (keyhelper.base.records), so no other class, however named, qualifies.
ROUTED = {"keyhelper_plugins.env.EnvBackend": ("env", "var"),
          "keyhelper_plugins.file.FileBackend": ("file", "path")}


def route_step(link: Link) -> tuple[str, str] | None:
    """("env", VAR) or ("file", PATH) for a built-in env or file backend; None otherwise."""
    backend = link.backend
    if backend is None:
        return None
    cls = type(backend)
    routed = ROUTED.get(f"{cls.__module__}.{cls.__qualname__}")
    if routed is None:
        return None
    kind, option = routed
    return (kind, backend.config[option])  # a path is expanded by the hit path, as by fetch


def _result(outcome: policy_fetcher.Outcome) -> Result:
    return Result(Token(outcome.value, outcome.expires_at), outcome.backend, outcome.source,
                  outcome.attempts, outcome.entry, outcome.where)


def resolve(selection: Selection, env: Mapping[str, str], **kwargs: object) -> Result:
    """Resolve a selection to one key: the library entry point behind ``keyhelper``."""
    return Run(selection, env, **kwargs).resolve()  # type: ignore[arg-type]
