"""One error hierarchy. Each error knows its exit code and how to describe itself.

The CLI catches :class:`KeyhelperError` in one place, prints ``describe()`` on stderr
and exits with ``exit_code``. Messages never carry a secret: they name backends, files,
options and fingerprints only.
"""

from __future__ import annotations

from keyhelper.redact import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_NO_KEY = 1
EXIT_USAGE = 2


class KeyhelperError(Exception):
    """Base of every error keyhelper reports to people."""

    exit_code = EXIT_NO_KEY

    def describe(self, verbose: bool = False) -> str:
        return str(self)


class UsageError(KeyhelperError):
    """Bad command line."""

    exit_code = EXIT_USAGE


class ConfigError(KeyhelperError):
    """A configuration file, or a backend's options, that cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.message = message
        self.source = source
        self.key = key
        super().__init__(self.describe())

    def describe(self, verbose: bool = False) -> str:
        # Keys come from the file: a line break or escape sequence in one must not reach
        # the terminal or split the one-line message.
        where = ": ".join(printable(part, newlines=False)
                          for part in (self.source, self.key) if part)
        message = printable(self.message, newlines=False)
        return f"config error: {where}: {message}" if where else f"config error: {message}"


class _BackendOutcome(KeyhelperError):
    """What a backend says when it gives no key: a message and the backend's name."""

    def __init__(self, message: str, *, backend: str | None = None):
        self.message = message
        self.backend = backend
        super().__init__(self.describe())

    def describe(self, verbose: bool = False) -> str:
        return f"{self.backend}: {self.message}" if self.backend else self.message


class BackendError(_BackendOutcome):
    """A backend that is configured here but failed ("mine, but it broke")."""


class Skip(_BackendOutcome):
    """Not configured here: try the next backend. The message says why.

    A sibling of :class:`BackendError`, not a kind of it: ``except BackendError`` never
    swallows a skip, so handlers need not be written in a particular order.
    """


class Unavailable(Skip):
    """The backend cannot run on this machine (missing library, no OS service)."""


class InvalidKey(BackendError):
    """A backend returned a value that Claude Code cannot send as an API key."""


class DeadlineExceeded(BackendError):
    """The run's deadline passed before the backend answered."""


class Attempt:
    """What one backend of the chain did, for the final report and ``doctor``.
    Immutable, compared by value (a plain class: dataclasses costs ~12 ms to import)."""

    __slots__ = ("backend", "outcome", "reason", "seconds")
    backend: str
    outcome: str  # "ok", "skipped" or "failed"
    reason: str
    seconds: float

    def __init__(self, backend: str, outcome: str, reason: str, seconds: float):
        for name, value in zip(self.__slots__, (backend, outcome, reason, seconds), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def _values(self) -> tuple[str, str, str, float]:
        return self.backend, self.outcome, self.reason, self.seconds

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type, tuple[str, str, str, float]]:
        return type(self), self._values()  # copy and pickle: __setattr__ refuses

    def __repr__(self) -> str:
        return ("Attempt(backend={!r}, outcome={!r}, reason={!r}, seconds={!r})"
                .format(*self._values()))


class NoKeyError(KeyhelperError):
    """Every backend of the chain skipped or failed."""

    exit_code = EXIT_NO_KEY

    def __init__(self, attempts: Sequence[Attempt]):
        self.attempts = list(attempts)
        super().__init__(self.describe())

    def describe(self, verbose: bool = False) -> str:
        if not self.attempts:
            return "keyhelper: no key: the chain is empty"
        lines = ["keyhelper: no key from " + ", ".join(a.backend for a in self.attempts)]
        lines += [f"  {a.backend} {a.outcome}: {a.reason}" for a in self.attempts]
        return "\n".join(lines)


class BackedOff(NoKeyError):
    """The chain failed moments ago (maybe in another process); not retried yet."""

    def __init__(self, message: str, failed_at: float, retry_at: float, now: float):
        self.message = message
        self.failed_at = failed_at
        self.retry_at = retry_at
        self.now = now
        super().__init__([])

    def describe(self, verbose: bool = False) -> str:
        ago = max(0.0, self.now - self.failed_at)
        wait = self.retry_at - self.now
        return (f"{self.message}\n  (failed {ago:.0f} s ago; retried in {wait:.0f} s; "
                "`keyhelper cache clear` retries now)")
