"""The chain: the backends of a selection, built from configuration in order, each run in
its turn under the run's deadline (botocore's provider chain). The first backend that
returns a token wins; ``Skip`` means "not mine, try the next"; anything else means "mine,
but it broke". Every backend's reason is kept for the report.

``doctor``, ``jwks`` and ``set`` use the chain alone; keyhelper.resolver puts the cache
policy around it.
"""

from __future__ import annotations

import time

from keyhelper import config, redact
from keyhelper.backend import Backend, Context, Token, call_with_timeout
from keyhelper.errors import (
    Attempt,
    BackendError,
    ConfigError,
    DeadlineExceeded,
    InvalidKey,
    NoKeyError,
    Skip,
)

log = redact.get_logger(__name__)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from keyhelper.registry import Registry

MAX_NESTING = 4
BACKSTOP_GRACE = 0.25


class Link:
    """A backend of the chain, or the error that kept it from being built."""

    __slots__ = ("backend", "error", "spec")

    def __init__(self, spec: config.BackendSpec, backend: Backend | None,
                 error: Exception | None):
        self.spec = spec
        self.backend = backend
        self.error = error


class Chain:
    """Builds and runs the backends of one run's configuration."""

    def __init__(self, settings: config.Settings, registry: Registry, context: Context):
        self.settings = settings
        self.registry = registry
        self.context = context
        self._nesting: list[str] = []

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

    def links(self) -> list[Link]:
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

    def run(self, links: Sequence[Link]) -> tuple[Token, Link, list[Attempt]]:
        attempts: list[Attempt] = []
        for link in links:
            attempt, token = self.try_link(link)
            attempts.append(attempt)
            log.debug("%s %s in %.0f ms: %s", attempt.backend, attempt.outcome,
                   attempt.seconds * 1000, attempt.reason)
            if token is not None:
                return token, link, attempts
        raise NoKeyError(attempts)


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
