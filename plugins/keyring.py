"""``keyring``: the key from the OS keyring (macOS Keychain, Windows Credential Locker,
Secret Service on Linux) through python-keyring. ``keyhelper set`` / ``delete`` write it
(keyhelper.keystore).

python-keyring is imported inside the calls only (keyhelper.oskeyring), never on a cache
hit, and every keyring call has a timeout inside the run's deadline.
"""

from __future__ import annotations

from keyhelper.backend import LOGIN_VARS, Backend, Option, Token, login_name
from keyhelper.errors import ConfigError, Skip, Unavailable
from keyhelper.oskeyring import OsKeyring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, ClassVar

TYPE = "keyring"


class KeyringBackend(Backend):
    summary = "the OS keyring (Keychain, Credential Locker, Secret Service)"
    options: ClassVar = {
        "service": Option(str, "keyhelper", help="the keyring entry's service name"),
        "username": Option(str, None, help="the keyring entry's user name (default: the "
                                           "login name of the account keyhelper runs as)"),
        "keyring_backend": Option(str, None, help="force one python-keyring backend, e.g. "
                                                  '"keyring.backends.SecretService.Keyring"'),
        "timeout": Option(float, 3.0, help="seconds for each keyring call", min=0,
                          min_exclusive=True, message="expected a positive number of seconds"),
    }

    @classmethod
    def check_available(cls) -> None:
        import importlib.util  # brings contextlib, functools, warnings: only when asked

        if importlib.util.find_spec("keyring") is None:
            raise Unavailable("python-keyring is not installed: pip install keyring")

    @classmethod
    def validate(cls, options: Mapping[str, Any], *, source: str, key: str) -> dict[str, Any]:
        result = super().validate(options, source=source, key=key)
        name = result["keyring_backend"]
        if name is not None and "." not in name:
            raise ConfigError('expected a dotted class name, e.g. '
                              '"keyring.backends.SecretService.Keyring"', source=source,
                              key=f"{key}.keyring_backend")
        return result

    def watched_env(self) -> tuple[str, ...]:
        """Where the default username comes from the environment (Windows only)."""
        return LOGIN_VARS if self.config["username"] is None else ()

    @property
    def service(self) -> str:
        return str(self.config["service"])

    @property
    def username(self) -> str:
        return self.config["username"] or login_name(self.context.env) or "keyhelper"

    def where(self) -> str:
        """Names the keyring entry (never its value)."""
        return f"service {self.service}, user {self.username}"

    def keyring(self) -> OsKeyring:
        if not hasattr(self, "_keyring"):
            self._keyring = OsKeyring(
                self.context.env, lambda: self.context.timeout(self.config["timeout"]),
                backend_name=self.config["keyring_backend"], label=self.name)
        return self._keyring

    def fetch(self) -> Token:
        value = self.keyring().get(self.service, self.username)
        if value is None or not value.strip():
            raise Skip(f"no key stored for {self.where()} (store one with: "
                       f"keyhelper set --backend {self.name})")
        # secret-tool stores a piped key with its newline: trim the ends; the core still
        # refuses whitespace inside the key.
        return Token(value.strip(), metadata={"source": f"keyring {self.where()}"})

    def keyring_name(self) -> str:
        return self.keyring().describe()

    def store(self, value: str) -> None:
        self.keyring().set(self.service, self.username, value)

    def delete(self) -> bool:
        return self.keyring().delete(self.service, self.username)
