"""The OS keyring (macOS Keychain, Windows Credential Locker, Secret Service) behind a
deadline, for the keyring backend, the keyring cache store and ``keyhelper set``/``delete``.

python-keyring is imported only inside the calls (import plus backend discovery costs over
100 ms, which a file-cache hit never pays). Every call runs in a daemon thread with a
timeout inside the run's deadline: its D-Bus probing is known to stall for tens of seconds
(jaraco/keyring 434, 473). Failures become keyhelper errors with one line saying what to do.
"""

from __future__ import annotations

import os
import sys

from keyhelper.backend import call_with_timeout
from keyhelper.errors import BackendError, ConfigError, DeadlineExceeded, Skip, Unavailable
from keyhelper.redact import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    T = TypeVar("T")

log = get_logger(__name__)

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
        except (BackendError, Skip):  # ours already (Unavailable is a Skip)
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
            return core.load_keyring(name)  # raises with the reason when it cannot run here
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"cannot load python-keyring backend {name!r} ({exc}); "
                              "expected e.g. keyring.backends.SecretService.Keyring",
                              key=f"backends.{self.label}.keyring_backend") from None
        except Exception as exc:
            raise Unavailable(f"python-keyring backend {name} cannot run here: {exc}",
                              backend=self.label) from None

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
