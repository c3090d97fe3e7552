"""The OS keyring behind a deadline, and the cache store that keeps entries in it.

python-keyring is imported only here, inside the calls (import plus backend discovery costs
over 100 ms, which a file-cache hit never pays). Every call runs in a daemon thread with a
timeout inside the run's deadline: its D-Bus probing is known to stall for tens of seconds
(jaraco/keyring 434, 473). Failures become keyhelper errors with one line saying what to do.

:class:`KeyringStore` implements :class:`keyhelper.cache.Store` for ``cache = "keyring"``:
entries live in the keyring (service ``keyhelper-cache``, user = entry key), so no secret is
written to disk. Locks stay files in the cache directory: they hold no secret.

Also here, for the same reason (keyring access, no click): ``keyhelper set`` and ``delete``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from keyhelper import _lean, redact
from keyhelper.backend import Context, call_with_timeout
from keyhelper.cache import FileCache
from keyhelper.errors import (
    EXIT_OK,
    BackendError,
    ConfigError,
    DeadlineExceeded,
    Unavailable,
    UsageError,
)

if TYPE_CHECKING:
    from keyhelper.core import Broker

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_SERVICE = "keyhelper-cache"
CACHE_TIMEOUT = 3.0  # seconds per keyring call of the cache store
MAX_DUPLICATES = 20  # items with the same service and user deleted at most, per call
LOCKED_HINT = ("the keyring is locked and cannot prompt here: unlock it (log in to the desktop "
               "session, or open your keyring app), then retry")


class OsKeyring:
    """python-keyring (one of its backends, or the one it detects) under a deadline."""

    def __init__(self, env: Mapping[str, str], timeout: Callable[[], float], *,
                 backend_name: str | None = None, label: str = "keyring"):
        self.env = env
        self.timeout = timeout  # seconds allowed for the next call, inside the run's deadline
        self.backend_name = backend_name  # e.g. "keyring.backends.SecretService.Keyring"
        self.label = label  # names the backend in error messages
        self._keyring: Any = None

    # --- the three operations -------------------------------------------------------------

    def get(self, service: str, username: str) -> str | None:
        value = self._call(lambda kr: kr.get_password(service, username))
        return value if isinstance(value, str) else None

    def set(self, service: str, username: str, value: str) -> None:
        """Store ``value`` as the one entry of (service, username): other items with the
        same attributes (e.g. one made by ``secret-tool store``) would shadow it on reads."""
        def replace(kr: Any) -> None:
            _delete_all(kr, service, username)
            kr.set_password(service, username, value)

        self._call(replace)

    def delete(self, service: str, username: str) -> bool:
        """Delete every entry of (service, username); False when there was none."""
        return self._call(lambda kr: _delete_all(kr, service, username) > 0)

    def describe(self) -> str:
        """The python-keyring backend in use (after a call), e.g. ``SecretService.Keyring``."""
        if self._keyring is None:
            return self.backend_name or "python-keyring"
        cls = type(self._keyring)
        return f"{cls.__module__.removeprefix('keyring.backends.')}.{cls.__name__}"

    # --- machinery ------------------------------------------------------------------------

    def _call(self, operation: Callable[[Any], T]) -> T:
        seconds = self.timeout()
        return call_with_timeout(lambda: self._translate(operation), seconds,
                                 lambda: self._stalled(seconds), "keyhelper-keyring")

    def _stalled(self, seconds: float) -> BackendError:
        return DeadlineExceeded(f"the OS keyring did not answer within {seconds:.1f} s "
                                "(a stalled D-Bus Secret Service?)", backend=self.label)

    def _translate(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation`` on the loaded keyring; its errors become keyhelper errors."""
        from keyring import errors

        keyring = self._load()
        try:
            return operation(keyring)
        except errors.KeyringLocked:
            raise Unavailable(LOCKED_HINT, backend=self.label) from None
        except errors.NoKeyringError:
            raise Unavailable(self._no_keyring_reason(), backend=self.label) from None
        except errors.InitError as exc:
            raise Unavailable(f"the OS keyring cannot be opened: {exc}",
                              backend=self.label) from None
        except BackendError:
            raise
        except Exception as exc:  # secretstorage/jeepney errors leak through python-keyring
            log.debug("keyring call failed", exc_info=True)
            raise BackendError(f"the OS keyring failed: {type(exc).__name__}: {exc}",
                               backend=self.label) from None

    def _load(self) -> Any:
        if self._keyring is not None:
            return self._keyring
        import keyring
        from keyring.backends import fail, null

        if self.backend_name:
            keyring_obj = self._load_named(self.backend_name)
        else:
            keyring_obj = keyring.get_keyring()  # honours PYTHON_KEYRING_BACKEND, keyringrc.cfg
        if isinstance(keyring_obj, fail.Keyring):
            raise Unavailable(self._no_keyring_reason(), backend=self.label)
        if isinstance(keyring_obj, null.Keyring):
            raise Unavailable("python-keyring is disabled here (its keyringrc.cfg names the "
                              "null backend): remove that setting, or set keyring_backend",
                              backend=self.label)
        self._keyring = keyring_obj
        return keyring_obj

    def _load_named(self, name: str) -> Any:
        from keyring import core

        try:
            cls = core._load_keyring_class(name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load python-keyring backend {name!r} ({exc}); "
                              "expected e.g. keyring.backends.SecretService.Keyring",
                              key=f"backends.{self.label}.keyring_backend") from None
        try:
            cls.priority  # noqa: B018 - raises with the reason when it cannot run here
        except Exception as exc:
            raise Unavailable(f"python-keyring backend {name} cannot run here: {exc}",
                              backend=self.label) from None
        return cls()

    def _no_keyring_reason(self) -> str:
        """One line: why python-keyring found no keyring here, and what to start."""
        if sys.platform == "darwin" or os.name == "nt":
            return ("python-keyring found no usable OS keyring (macOS Keychain / Windows "
                    "Credential Locker); run keyhelper in your desktop session")
        if not self.env.get("DBUS_SESSION_BUS_ADDRESS"):
            return ("no OS keyring: no D-Bus session ($DBUS_SESSION_BUS_ADDRESS is not set); "
                    "run inside a desktop session, or start a Secret Service such as "
                    "gnome-keyring-daemon --unlock under dbus-run-session")
        try:
            from keyring.backends import SecretService

            SecretService.Keyring.priority  # noqa: B018 - raises with the reason
            why = "python-keyring found no usable backend"
        except OSError as exc:
            why = (f"cannot connect to the D-Bus session bus at "
                   f"{self.env['DBUS_SESSION_BUS_ADDRESS']} ({exc.strerror or exc})")
        except Exception as exc:
            why = str(exc) or type(exc).__name__
        return (f"no OS keyring: {why}; start a Secret Service (gnome-keyring-daemon, "
                "KeePassXC) in this D-Bus session, or install the gnome-keyring package")


def _delete_all(keyring: Any, service: str, username: str) -> int:
    """python-keyring deletes one matching item per call: repeat until none is left."""
    from keyring.errors import PasswordDeleteError

    for count in range(MAX_DUPLICATES):
        try:
            keyring.delete_password(service, username)
        except PasswordDeleteError:
            return count
    return MAX_DUPLICATES


class KeyringStore:
    """Cache entries in the OS keyring instead of files (``cache = "keyring"``).

    A keyring that does not work makes every read a miss and every write a no-op, with one
    warning: the key is still served, just not cached.
    """

    def __init__(self, keyring: OsKeyring, service: str = CACHE_SERVICE):
        self.keyring = keyring
        self.service = service
        self.problem: str | None = None

    @classmethod
    def open(cls, context: Context) -> KeyringStore:
        timeout = lambda: context.timeout(CACHE_TIMEOUT)  # noqa: E731
        return cls(OsKeyring(context.env, timeout, label="keyring cache"))

    def read(self, key: str) -> _lean.Entry | None:
        text = self._guarded(lambda: self.keyring.get(self.service, key))
        if not text:
            return None
        try:
            return _lean.parse_entry(text.encode("ascii"))
        except UnicodeEncodeError:
            return None  # not ours: a miss, overwritten on the next write

    def write(self, key: str, entry: _lean.Entry) -> None:
        data = entry.serialize().decode("ascii")
        self._guarded(lambda: self.keyring.set(self.service, key, data))

    def delete(self, key: str) -> bool:
        return bool(self._guarded(lambda: self.keyring.delete(self.service, key)))

    def describe(self, key: str) -> str:
        return f"OS keyring (service {self.service}, user {key})"

    def _guarded(self, call: Callable[[], T]) -> T | None:
        if self.problem is not None:
            return None  # failed once this run: do not pay another timeout
        try:
            return call()
        except Exception as exc:  # a cache must never break the run
            self.problem = (exc.message if isinstance(exc, BackendError)
                            else f"{type(exc).__name__}: {exc}")
            log.warning("keyring cache not used: %s", self.problem)
            return None


# --- keyhelper set / delete ---------------------------------------------------------------

KEYRING_TYPE = "keyring"
Echo = Callable[[str], None]


@runtime_checkable
class WritableBackend(Protocol):
    """A backend that can store and delete its key (the keyring backend)."""

    name: str

    def where(self) -> str: ...

    def keyring_name(self) -> str: ...

    def store(self, value: str) -> None: ...

    def delete(self) -> bool: ...


def set_key(selection: _lean.Selection, env: Mapping[str, str], read_key: Callable[[], str],
            echo: Echo) -> int:
    """``keyhelper set``: read a key (prompt or stdin, never argv), check it, store it in the
    selected keyring backend, and drop the cache entries it replaces."""
    broker, backend = writable_backend(selection, env)
    value = read_key()
    redact.remember(value)
    reason = redact.invalid_key_reason(value)
    if reason is not None:
        raise UsageError(f"refused: {reason}; nothing stored")
    # The prompt may have taken a while: the keyring calls get the run's full deadline.
    broker.context.deadline = time.monotonic() + float(broker.settings.setting("deadline"))
    backend.store(value)
    cleared = clear_cached(broker, selection, env, backend.name)
    echo(f"keyhelper: stored {redact.fingerprint(value)} in {backend.name} ({backend.where()}, "
         f"{backend.keyring_name()}); {_entries(cleared)} cleared from the cache")
    return EXIT_OK


def delete_key(selection: _lean.Selection, env: Mapping[str, str], echo: Echo) -> int:
    """``keyhelper delete``: remove the key from the selected keyring backend."""
    broker, backend = writable_backend(selection, env)
    found = backend.delete()
    cleared = clear_cached(broker, selection, env, backend.name)
    if not found:
        raise BackendError(f"no key stored for {backend.where()}; nothing deleted "
                           f"({_entries(cleared)} cleared from the cache)", backend=backend.name)
    echo(f"keyhelper: deleted the key of {backend.where()} from {backend.name} "
         f"({backend.keyring_name()}); {_entries(cleared)} cleared from the cache")
    return EXIT_OK


def writable_backend(selection: _lean.Selection,
                     env: Mapping[str, str]) -> tuple[Broker, WritableBackend]:
    """The backend to write: ``--backend NAME``, else the chain's first keyring-type backend,
    else the built-in ``keyring`` with its configured or default options."""
    from keyhelper.core import Broker

    broker = Broker(selection, env)
    settings = broker.settings
    if len(selection.backends) > 1:
        raise UsageError("give one --backend to store in")
    if selection.backends:
        spec = settings.spec(selection.backends[0])
    else:
        spec = next((s for s in settings.chain if s.type == KEYRING_TYPE),
                    None) or settings.spec(KEYRING_TYPE)
    backend = broker.build(spec)
    if not isinstance(backend, WritableBackend):
        raise UsageError(f"backend {spec.name!r} is of type {spec.type!r}; keyhelper set and "
                         "delete work with keyring-type backends only")
    return broker, backend


def clear_cached(broker: Broker, selection: _lean.Selection, env: Mapping[str, str],
                 backend_name: str) -> int:
    """Drop cache entries that may hold the old key: this selection's, the plain chain's,
    and every file entry that came from this backend. Returns how many were removed."""
    store = broker.cache_store()
    if store is None:
        return 0
    plain = _lean.Selection((), selection.profile, selection.config)
    keys = {broker.key, _lean.entry_key(plain, env)}
    if isinstance(store, FileCache):
        for key in store.keys():  # noqa: SIM118 - a method of FileCache, not a dict
            entry = store.read(key)
            if entry is not None and entry.backend == backend_name:
                keys.add(key)
    return sum(store.delete(key) for key in sorted(keys))


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"
