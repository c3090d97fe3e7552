"""The library core: resolve a selection to one key, through the cache and the chain.

``resolve(selection, env) -> Result`` is the one function the CLI calls to get a key.
The chain is built explicitly from configuration (botocore's provider chain): the first
backend that returns a token wins; ``Skip`` means "not mine, try the next"; any other
exception means "mine, but it broke". Every backend's reason is kept for the report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from keyhelper import _caller, _lean, audit, config, redact
from keyhelper.backend import Backend, Context, Token, call_with_timeout, wall_clock
from keyhelper.cache import CacheUnusable, FileCache, Store, write_private
from keyhelper.errors import (
    Attempt,
    BackendError,
    ConfigError,
    DeadlineExceeded,
    InvalidKey,
    NoKeyError,
    Skip,
)
from keyhelper.failures import BackedOff, FailureLog
from keyhelper.registry import Registry, allowlist

log = logging.getLogger(__name__)

DEFAULT_TTL = 300.0
# A cached token is dropped this long before its own expiry: Claude Code 2.1.332 asks for a
# new JWT ~30 s before `exp`, and that call must get a fresh one.
EXPIRY_MARGIN = 60.0
MAX_NESTING = 4
BACKSTOP_GRACE = 0.25
# A key fetched because the previous one was refused, and refused in turn, is fetched anew
# at most this often (Claude Code retries up to 10 times, ~1 to 37 s apart).
REFETCH_INTERVAL = 5.0


@dataclass(frozen=True)
class Link:
    """A backend of the chain, or the error that kept it from being built."""

    spec: config.BackendSpec
    backend: Backend | None
    error: Exception | None


@dataclass
class Result:
    """A key and how it was obtained."""

    token: Token
    backend: str
    # "hit" (cache), "fetched" (stored in the cache), "uncached", "stale" (served after every
    # backend failed), "rotated" (fetched anew: the caller's key was refused), "refresh"
    source: str
    attempts: list[Attempt] = field(default_factory=list)
    entry: _lean.Entry | None = None
    cache_location: str | None = None


class Broker:
    """One run: the settings, the backends of the chain, the cache."""

    def __init__(self, selection: _lean.Selection, env: Mapping[str, str], *,
                 registry: Registry | None = None, now: Callable[[], float] = wall_clock):
        self.selection = selection
        self.env = env
        self.now = now
        self.settings = config.load(selection, env)
        self.deadline = time.monotonic() + float(self.settings.setting("deadline"))
        self.registry = registry or Registry(
            allow=allowlist(self.settings.raw.get("plugins"), env))
        self.use_cache = not selection.no_cache and env.get("KEYHELPER_NO_CACHE") != "1"
        self.cache: FileCache | None = None
        self.cache_problem: str | None = None
        try:
            self.cache = FileCache.open(env)
            state_dir: str | None = self.cache.state_dir()
        except (CacheUnusable, OSError) as exc:
            self.cache_problem = str(exc)
            state_dir = None
        self.context = Context(self.settings.profile, env, self.deadline, state_dir or "",
                               resolve=self.fetch_named, now=now)
        self._nesting: list[str] = []
        self.key = _lean.entry_key(selection, env)

    # --- building backends ----------------------------------------------------------------

    def backend_class(self, spec: config.BackendSpec) -> type[Backend]:
        if spec.type not in self.registry.names():
            configured = ", ".join(sorted(self.settings.backends)) or "none"
            raise ConfigError(
                f"unknown backend {spec.name!r} (configured: {configured}; "
                f"types: {', '.join(self.registry.names())})", source=spec.source)
        cls = self.registry.load(spec.type)  # Unavailable: the plugin is broken or barred
        cls.check_available()
        return cls

    def build(self, spec: config.BackendSpec) -> Backend:
        self.settings.check_type(spec)  # the policy's, before the type's code is imported
        cls = self.backend_class(spec)
        options = cls.validate(spec.options, source=spec.source, key=f"backends.{spec.name}")
        self.settings.check_options(spec, options)
        return cls(spec.name, options, self.context)

    def fetch_named(self, name: str) -> Token:
        """Fetch from another configured backend (a signing key kept in Vault, say)."""
        if name in self._nesting or len(self._nesting) >= MAX_NESTING:
            raise ConfigError(f"backend {name!r} refers back to itself",
                              source=self.settings.config_path)
        self._nesting.append(name)
        try:
            spec = self.settings.spec(name, source=self.settings.config_path or "defaults")
            return self.fetch_one(self.build(spec), as_api_key=False)
        finally:
            self._nesting.pop()

    def fetch_one(self, backend: Backend, *, as_api_key: bool = True) -> Token:
        """Run one backend's fetch under the run's deadline, and check what it returned.

        ``as_api_key=False`` for a value another backend consumes (a PEM signing key may
        hold line breaks; only what Claude Code receives must be a single clean token).
        """
        token = _call_with_deadline(backend.fetch, self.context.remaining())
        if not isinstance(token, Token):
            raise Skip("returned no key")
        redact.remember(token.value)
        reason = redact.invalid_key_reason(token.value) if as_api_key else None
        if reason is not None:
            raise InvalidKey(f"refused: {reason}")
        return token

    # --- the chain ------------------------------------------------------------------------

    def build_chain(self) -> list[Link]:
        """Build each backend of the chain once. A broken one is kept with its error, to be
        reported in its turn; a configuration error stops the run (exit 2)."""
        links = []
        for spec in self.settings.chain:
            try:
                links.append(Link(spec, self.build(spec), None))
            except ConfigError:
                raise
            except Exception as exc:
                links.append(Link(spec, None, exc))
        return links

    def try_link(self, link: Link) -> tuple[Attempt, Token | None]:
        """One backend's turn: its token, or why it gave none (skip versus fail).
        A configuration error stops the run; anything else a plugin raises is its failure."""
        name = link.spec.name
        started = time.monotonic()
        try:
            if link.backend is None:
                raise link.error or Skip("could not be built")
            token = self.fetch_one(link.backend)
        except ConfigError:
            raise
        except Skip as exc:
            return _attempt(name, "skipped", exc.message, started), None
        except BackendError as exc:
            return _attempt(name, "failed", exc.message, started), None
        except Exception as exc:  # a plugin's own error: report it, keep going
            log.debug("backend %s raised", name, exc_info=True)
            return _attempt(name, "failed", f"{type(exc).__name__}: {exc}", started), None
        return _attempt(name, "ok", token.fingerprint, started), token

    def run_chain(self, links: Sequence[Link]) -> tuple[Token, str, list[Attempt]]:
        attempts: list[Attempt] = []
        for link in links:
            attempt, token = self.try_link(link)
            attempts.append(attempt)
            log.debug("%s %s in %.0f ms: %s", attempt.backend, attempt.outcome,
                      attempt.seconds * 1000, attempt.reason)
            if token is not None:
                return token, link.spec.name, attempts
        raise NoKeyError(attempts)

    # --- caching --------------------------------------------------------------------------

    def cache_store(self) -> Store | None:
        if not self.use_cache:
            return None
        if self.cache is None:
            log.warning("%s; going on without a cache", self.cache_problem)
            return None
        if self.settings.setting("cache") == "keyring":
            from keyhelper.keyring_store import KeyringStore  # no secret on disk; locks stay files

            return KeyringStore.open(self.context)
        return self.cache

    def env_names(self, links: Sequence[Link]) -> list[str]:
        return sorted({n for link in links if link.backend for n in link.backend.watched_env()})

    def fresh(self, entry: _lean.Entry | None, env_names: Sequence[str]) -> bool:
        return (entry is not None and list(entry.env_names) == list(env_names)
                and entry.matches_env(self.env) and entry.stored <= self.now() < entry.expires)

    def make_entry(self, token: Token, backend: str,
                   env_names: Sequence[str]) -> _lean.Entry | None:
        now = self.now()
        ttl, _ = self.settings.ttl(self.env)
        expires = now + ttl
        if token.expires_at is not None:
            expires = min(expires, token.expires_at - EXPIRY_MARGIN)
        if expires <= now:
            return None  # too close to its own expiry to be worth keeping
        refresh = expires - (expires - now) * float(self.settings.setting("refresh_ahead"))
        return _lean.Entry(token.value, backend, now, expires, refresh, token.expires_at,
                           env_names, _lean.env_digest(env_names, self.env), self.entry_extra())

    def entry_extra(self) -> dict[str, str]:
        """Settings the hit path must know without reading the configuration."""
        extra = {}
        if not self.settings.setting("rotation_detection"):
            extra["rotation"] = "off"
        extra.update(audit.entry_extra(self.settings.raw))
        return extra

    def resolve(self) -> Result:
        result = self._resolve()
        audit.record(self.settings.raw, self.settings.profile, result, self.env)
        return result

    def save_route(self, links: Sequence[Link]) -> None:
        """Record the chain's leading env and file backends for the hit path, which then
        reads their keys itself (they are never cached). Names only, never a key."""
        if self.cache is None or not self.use_cache:
            return
        steps = []
        for link in links:
            step = link.backend.hit_path_step() if link.backend else None
            if step is None:
                break
            steps.append(step)
        if any(name.startswith("audit") for name in self.entry_extra()):
            steps = []  # an audited issuance is logged by the full path
        path = _lean.route_path(self.cache.directory, self.key)
        data = _lean.serialize_route(steps) if steps else None
        if _lean.read_in_private_dir(self.cache.directory, self.key + ".route") == data:
            return
        with contextlib.suppress(OSError):
            if data is None:
                os.unlink(path)
            else:
                write_private(path, data)

    def _resolve(self) -> Result:
        links = self.build_chain()
        self.save_route(links)
        cacheable = {link.spec.name for link in links if link.backend and link.backend.cacheable}
        store = self.cache_store() if cacheable else None
        if store is None or self.cache is None:
            token, name, attempts = self.run_chain(links)
            return Result(token, name, "uncached", attempts)
        env_names = self.env_names(links)
        caller = self.caller()
        seen = self.served(caller)
        entry = store.read(self.key)
        if self.fresh(entry, env_names) and not self.rejected(entry, seen):
            assert entry is not None
            return self.serve(entry, store, caller, "hit")
        with self.cache.lock(self.key, self.deadline):
            entry = store.read(self.key)  # another process may have fetched while we waited
            source = "fetched"
            if self.fresh(entry, env_names):
                assert entry is not None
                if not self.rejected(entry, seen):
                    return self.serve(entry, store, caller, "hit")
                if entry.extra.get("rotated") and self.now() - entry.stored < REFETCH_INTERVAL:
                    # The key fetched after the last refusal is refused too: the backend
                    # has not caught up. Keep a retry storm to one fetch per interval.
                    log.info("the refetched key was refused as well; not refetching yet")
                    return self.serve(entry, store, caller, "hit")
                log.info("the calling Claude Code process asks again within its TTL: its key "
                         "was refused; fetching anew")
                source = "rotated"
            return self.fetch_and_store(links, store, entry, env_names, caller, source)

    def refresh(self, expected_stored: float, *, lock_held: bool) -> Result | None:
        """Background refresh ahead of expiry; does nothing if someone refreshed already."""
        links = self.build_chain()
        store = self.cache_store()
        if store is None or self.cache is None:
            return None
        lock = contextlib.nullcontext() if lock_held else self.cache.lock(self.key, self.deadline)
        with lock:
            entry = store.read(self.key)
            if entry is None or entry.stored != expected_stored:
                return None
            return self.fetch_and_store(links, store, entry, self.env_names(links), None,
                                        "refresh")

    def fetch_and_store(self, links: Sequence[Link], store: Store, old: _lean.Entry | None,
                        env_names: Sequence[str], caller: str | None, source: str) -> Result:
        """Run the chain and cache its key; on failure, maybe serve the old key (stale)."""
        assert self.cache is not None
        failures = FailureLog(self.cache.directory, self.key)
        now = self.now()
        envsum = _lean.env_digest(env_names, self.env)
        try:
            remembered = failures.read()
            if (remembered is not None and remembered.envsum == envsum
                    and now < remembered.retry_at):
                raise BackedOff(remembered, now)
            token, name, attempts = self.run_chain(links)
        except NoKeyError as exc:
            if not isinstance(exc, BackedOff) and any(a.outcome == "failed"
                                                      for a in exc.attempts):
                failures.record(exc.describe(), now, envsum)
            stale = self.stale(old, env_names)
            if stale is None:
                raise
            failures.count_stale(now)
            age = now - stale.expires
            log.warning("every backend failed; serving the cached key %s (%s)",
                        redact.fingerprint(stale.key),
                        f"{age:.0f} s past its cache life" if age > 0 else "still fresh")
            return self.serve(stale, store, caller, "stale")
        failures.clear()
        new_entry = None
        if any(link.spec.name == name and link.backend and link.backend.cacheable
               for link in links):
            new_entry = self.make_entry(token, name, env_names)
        if new_entry is not None and source == "rotated":
            new_entry.extra["rotated"] = "1"
        if new_entry is None:
            return Result(token, name, "uncached", attempts)
        store.write(self.key, new_entry)
        log.debug("%s: cached in %s for %.0f s", source, store.describe(self.key),
                  new_entry.expires - new_entry.stored)
        self.mark_served(caller, new_entry)
        return Result(token, name, source, attempts, new_entry, store.describe(self.key))

    def stale(self, entry: _lean.Entry | None, env_names: Sequence[str]) -> _lean.Entry | None:
        """The old entry if it may still be served when every backend fails: same
        environment, within the grace period, and never past the key's own expiry."""
        if entry is None or list(entry.env_names) != list(env_names):
            return None
        if not entry.matches_env(self.env):
            return None
        now = self.now()
        if entry.token_expires is not None and now >= entry.token_expires:
            return None
        if now >= entry.expires + float(self.settings.setting("stale_grace")):
            return None
        return entry

    # --- Claude Code rotation detection ---------------------------------------------------

    def caller(self) -> str | None:
        if not self.settings.setting("rotation_detection"):
            return None
        return _caller.caller_id(self.env)

    def served(self, caller: str | None) -> tuple[float, float] | None:
        if caller is None or self.cache is None:
            return None
        return _lean.read_marker(_lean.marker_path(self.cache.directory, self.key, caller))

    def rejected(self, entry: _lean.Entry | None, seen: tuple[float, float] | None) -> bool:
        return entry is not None and _lean.rejected(entry, seen, self.env, self.now())

    def mark_served(self, caller: str | None, entry: _lean.Entry) -> None:
        if caller is not None and self.cache is not None:
            path = _lean.marker_path(self.cache.directory, self.key, caller)
            _lean.write_marker(path, entry.stored, self.now())

    def serve(self, entry: _lean.Entry, store: Store, caller: str | None, source: str) -> Result:
        log.debug("%s: %s from %s, %.0f s of cache life left", source,
                  redact.fingerprint(entry.key), store.describe(self.key),
                  entry.expires - self.now())
        self.mark_served(caller, entry)
        redact.remember(entry.key)
        token = Token(entry.key, entry.token_expires)
        return Result(token, entry.backend, source, [], entry, store.describe(self.key))


def resolve(selection: _lean.Selection, env: Mapping[str, str], **kwargs: object) -> Result:
    """Resolve a selection to one key: the library entry point behind ``keyhelper``."""
    return Broker(selection, env, **kwargs).resolve()  # type: ignore[arg-type]


def _attempt(backend: str, outcome: str, reason: str, started: float) -> Attempt:
    # One line, whatever the backend said: a reason must not forge the report's other lines.
    return Attempt(backend, outcome, redact.printable(redact.redact(reason), newlines=False),
                   time.monotonic() - started)


def _call_with_deadline(fn: Callable[[], Token], seconds: float) -> Token:
    """Run a backend's fetch, giving up when the run's deadline passes even if it never
    returns (the backstop for a backend that ignores its timeouts)."""
    # A little grace, so that a backend honouring context.timeout() reports its own
    # precise error (and reaps its child processes) before the backstop fires.
    try:
        return call_with_timeout(fn, seconds + BACKSTOP_GRACE, lambda: DeadlineExceeded(
            f"no answer within the run's deadline ({seconds:.1f} s)"), "keyhelper-backend")
    except SystemExit as exc:  # a plugin calling sys.exit must not end the run
        raise BackendError(f"called sys.exit({exc.code!r})") from None
