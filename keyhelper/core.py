"""The library core: resolve a selection to one key, through the cache and the chain.

``resolve(selection, env) -> Result`` is the one function the CLI calls to get a key.
The chain is built explicitly from configuration (botocore's provider chain): the first
backend that returns a token wins; ``Skip`` means "not mine, try the next"; any other
exception means "mine, but it broke". Every backend's reason is kept for the report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from keyhelper import _lean, config, redact
from keyhelper.backend import Backend, Context, Token, wall_clock
from keyhelper.cache import CacheUnusable, FileCache, Store
from keyhelper.errors import (
    Attempt,
    BackendError,
    ConfigError,
    DeadlineExceeded,
    InvalidKey,
    NoKeyError,
    Skip,
)
from keyhelper.registry import Registry, allowlist

log = logging.getLogger(__name__)

DEFAULT_TTL = 300.0
# A cached token is dropped this long before its own expiry: Claude Code 2.1.332 asks for a
# new JWT ~30 s before `exp`, and that call must get a fresh one.
EXPIRY_MARGIN = 60.0
MAX_NESTING = 4


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
    source: str  # "hit" (cache), "fetched" (stored in the cache), "uncached", "stale"
    attempts: list[Attempt] = field(default_factory=list)
    entry: _lean.Entry | None = None
    cache_location: str | None = None


def claude_ttl(env: Mapping[str, str]) -> float | None:
    """CLAUDE_CODE_API_KEY_HELPER_TTL_MS in seconds; a non-numeric value is ignored, as
    Claude Code ignores it."""
    raw = env.get("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw) / 1000
    return None


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
        cls = self.backend_class(spec)
        options = cls.validate(spec.options, source=spec.source, key=f"backends.{spec.name}")
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

    def run_chain(self, links: Sequence[Link]) -> tuple[Token, str, list[Attempt]]:
        attempts: list[Attempt] = []
        for link in links:
            name = link.spec.name
            started = time.monotonic()
            try:
                if link.backend is None:
                    raise link.error or Skip("could not be built")
                token = self.fetch_one(link.backend)
            except ConfigError:
                raise
            except Skip as exc:
                attempts.append(_attempt(name, "skipped", exc.message, started))
                continue
            except BackendError as exc:
                attempts.append(_attempt(name, "failed", exc.message, started))
                continue
            except Exception as exc:  # a plugin's own error: report it, keep going
                log.debug("backend %s raised", name, exc_info=True)
                attempts.append(_attempt(name, "failed", f"{type(exc).__name__}: {exc}",
                                         started))
                continue
            attempts.append(_attempt(name, "ok", token.fingerprint, started))
            return token, name, attempts
        raise NoKeyError(attempts)

    # --- caching --------------------------------------------------------------------------

    def cache_store(self) -> Store | None:
        if not self.use_cache:
            return None
        if self.cache is None:
            log.warning("%s; going on without a cache", self.cache_problem)
            return None
        return self.cache

    def env_names(self, links: Sequence[Link]) -> list[str]:
        return sorted({n for link in links if link.backend for n in link.backend.watched_env()})

    def fresh(self, entry: _lean.Entry | None, env_names: Sequence[str]) -> bool:
        return (entry is not None and list(entry.env_names) == list(env_names)
                and entry.matches_env(self.env) and entry.stored <= self.now() < entry.expires)

    def make_entry(self, token: Token, backend: str,
                   env_names: Sequence[str]) -> _lean.Entry | None:
        now = self.now()
        ttl = self.settings.setting("ttl") or claude_ttl(self.env) or DEFAULT_TTL
        expires = now + float(ttl)
        if token.expires_at is not None:
            expires = min(expires, token.expires_at - EXPIRY_MARGIN)
        if expires <= now:
            return None  # too close to its own expiry to be worth keeping
        refresh = expires - (expires - now) * float(self.settings.setting("refresh_ahead"))
        return _lean.Entry(token.value, backend, now, expires, refresh, token.expires_at,
                           env_names, _lean.env_digest(env_names, self.env))

    def resolve(self) -> Result:
        links = self.build_chain()
        cacheable = {link.spec.name for link in links if link.backend and link.backend.cacheable}
        store = self.cache_store() if cacheable else None
        if store is None or self.cache is None:
            token, name, attempts = self.run_chain(links)
            return Result(token, name, "uncached", attempts)
        env_names = self.env_names(links)
        entry = store.read(self.key)
        if self.fresh(entry, env_names):
            assert entry is not None
            return self.hit(entry, store)
        with self.cache.lock(self.key, self.deadline):
            entry = store.read(self.key)  # another process may have fetched while we waited
            if self.fresh(entry, env_names):
                assert entry is not None
                return self.hit(entry, store)
            token, name, attempts = self.run_chain(links)
            source = "uncached"
            new_entry = None
            if name in cacheable:
                new_entry = self.make_entry(token, name, env_names)
                if new_entry is not None:
                    store.write(self.key, new_entry)
                    source = "fetched"
        return Result(token, name, source, attempts, new_entry, store.describe(self.key))

    def hit(self, entry: _lean.Entry, store: Store) -> Result:
        redact.remember(entry.key)
        token = Token(entry.key, entry.token_expires)
        return Result(token, entry.backend, "hit", [], entry, store.describe(self.key))


def resolve(selection: _lean.Selection, env: Mapping[str, str], **kwargs: object) -> Result:
    """Resolve a selection to one key: the library entry point behind ``keyhelper``."""
    return Broker(selection, env, **kwargs).resolve()  # type: ignore[arg-type]


def _attempt(backend: str, outcome: str, reason: str, started: float) -> Attempt:
    return Attempt(backend, outcome, redact.redact(reason), time.monotonic() - started)


def _call_with_deadline(fn: Callable[[], Token], seconds: float) -> Token:
    """Run ``fn`` in a daemon thread; give up after ``seconds`` even if it never returns.

    Backends set their own timeouts; this is the backstop for one that hangs anyway
    (a stalled D-Bus call, a plugin without timeouts), so the run still ends in time.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["token"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="keyhelper-backend", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DeadlineExceeded(f"no answer within the run's deadline ({seconds:.1f} s left)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("token")  # type: ignore[return-value]
