"""Configuration: locate and validate the TOML file, and turn a selection into a chain.

Unknown keys, wrong types and unknown backend names are errors (exit 2) naming the file,
the key and what was expected. No file at the default location is fine: defaults apply.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyhelper import _lean
from keyhelper.backend import Option, option_fits
from keyhelper.errors import ConfigError

DEFAULT_CHAIN = ("env", "keyring")
DEFAULT_TTL = 300.0
DEFAULT_DEADLINE = 5.0  # Claude Code warns at 10 s
DEFAULT_STALE_GRACE = 3600.0
MAX_CONFIG_BYTES = 1 << 20

# Settings a profile may override, and the top level may set.
SETTINGS: dict[str, Option] = {
    "ttl": Option((int, float), help="seconds a key is cached"),
    "deadline": Option((int, float), DEFAULT_DEADLINE, help="seconds for the whole run"),
    "stale_grace": Option((int, float), DEFAULT_STALE_GRACE,
                          help="seconds past its cache life a key may be served if every "
                               "backend fails (never past the key's own expiry)"),
    "refresh_ahead": Option((int, float), 0.2, help="last fraction of a cache life in which "
                                                    "a hit triggers a background refresh"),
    "rotation_detection": Option(bool, True, help="fetch anew when Claude Code asks again "
                                                  "before its own TTL (its key was rejected)"),
    "cache": Option(str, "files", help='where keys are cached: "files" or "keyring"'),
}
TOP_LEVEL: dict[str, Option] = {
    "chain": Option(list, item_type=str),
    "backends": Option(dict),
    "profiles": Option(dict),
    "plugins": Option(dict),
    "audit": Option(dict),
    **SETTINGS,
}
PROFILE_KEYS: dict[str, Option] = {"chain": Option(list, item_type=str), **SETTINGS}
PLUGINS_KEYS: dict[str, Option] = {
    "allow": Option(list, item_type=str, help="distributions whose plugins may be imported"),
}
AUDIT_KEYS: dict[str, Option] = {
    "path": Option(str, help="JSON lines file, absolute or ~/..."),
    "syslog": Option(bool, False, help="also send each line to syslog (facility authpriv)"),
    "syslog_socket": Option(str, "/dev/log", help="the local syslog socket"),
    "max_bytes": Option(int, 10 * 1024 * 1024, help="rotate the file at this size"),
    "keep": Option(int, 5, help="rotated files kept (path.1 ... path.N)"),
}


@dataclass(frozen=True)
class BackendSpec:
    """One link of the chain: a configured name, its type, and its raw options."""

    name: str
    type: str
    options: Mapping[str, Any]
    source: str  # where it was defined, for error messages


@dataclass(frozen=True)
class Settings:
    """What a run needs after the configuration was read and a selection applied."""

    chain: tuple[BackendSpec, ...]
    config_path: str | None  # None when no file was read
    profile: str | None
    backends: Mapping[str, BackendSpec]
    values: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def setting(self, name: str) -> Any:
        return self.values.get(name, SETTINGS[name].default)

    def spec(self, name: str, source: str = "--backend") -> BackendSpec:
        """The spec of a configured backend, or a built-in type used with its defaults."""
        if name in self.backends:
            return self.backends[name]
        return BackendSpec(name, name, {}, source)


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read it ({exc.strerror})", source=path) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("larger than 1 MiB", source=path)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", source=path) from None


def check_table(table: Mapping[str, Any], schema: Mapping[str, Option], *, source: str,
                prefix: str) -> dict[str, Any]:
    """Check keys and types of ``table`` against ``schema`` (no defaults filled in)."""
    checked: dict[str, Any] = {}
    for key, value in table.items():
        spec = schema.get(key)
        where = f"{prefix}{key}"
        if spec is None:
            raise ConfigError(f"unknown key (expected one of: {', '.join(sorted(schema))})",
                              source=source, key=where)
        if not option_fits(value, spec):
            raise ConfigError(f"expected {spec.describe_type()}, got {_type_name(value)}",
                              source=source, key=where)
        if key in ("ttl", "deadline", "stale_grace") and value <= 0:
            raise ConfigError("expected a positive number of seconds", source=source, key=where)
        if key == "refresh_ahead" and not 0 <= value < 1:
            raise ConfigError("expected a fraction from 0 to below 1", source=source, key=where)
        if key == "cache" and value not in ("files", "keyring"):
            raise ConfigError('expected "files" or "keyring"', source=source, key=where)
        checked[key] = value
    return checked


def check_audit(table: Mapping[str, Any], *, source: str) -> None:
    checked = check_table(table, AUDIT_KEYS, source=source, prefix="audit.")
    for key in ("path", "syslog_socket"):
        value = checked.get(key)
        if value is not None and (not value or "\x00" in value
                                  or not os.path.isabs(os.path.expanduser(value))):
            raise ConfigError("expected an absolute path (or one starting with ~/)",
                              source=source, key=f"audit.{key}")
    if checked.get("max_bytes", 1024) < 1024:
        raise ConfigError("expected a size in bytes, at least 1024", source=source,
                          key="audit.max_bytes")
    if not 1 <= checked.get("keep", 1) <= 100:
        raise ConfigError("expected a number of files from 1 to 100", source=source,
                          key="audit.keep")


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def load(selection: _lean.Selection, env: Mapping[str, str]) -> Settings:
    """Read the configuration and apply the selection's chain and profile."""
    path, explicit = _lean.config_path(selection, env)
    raw: dict[str, Any] = {}
    source: str | None = None
    if os.path.exists(path) or explicit:
        if not os.path.isfile(path):
            raise ConfigError("no such file", source=path)
        raw = read_toml(path)
        source = path
    label = source or "defaults"
    top = check_table(raw, TOP_LEVEL, source=label, prefix="")
    check_table(top.get("plugins", {}), PLUGINS_KEYS, source=label, prefix="plugins.")
    check_audit(top.get("audit", {}), source=label)

    backends: dict[str, BackendSpec] = {}
    for name, table in top.get("backends", {}).items():
        if not isinstance(table, dict):
            raise ConfigError("expected a table", source=label, key=f"backends.{name}")
        options = dict(table)
        backend_type = options.pop("type", name)
        if not isinstance(backend_type, str):
            raise ConfigError("expected a string", source=label, key=f"backends.{name}.type")
        backends[name] = BackendSpec(name, backend_type, options, label)

    profiles = top.get("profiles", {})
    values = {k: v for k, v in top.items() if k in SETTINGS}
    profile = selection.profile
    if profile is not None and not isinstance(profiles.get(profile), dict):
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"unknown profile (configured: {known})", source=label,
                          key=f"profiles.{profile}")
    for pname, ptable in profiles.items():
        if not isinstance(ptable, dict):
            raise ConfigError("expected a table", source=label, key=f"profiles.{pname}")
        checked = check_table(ptable, PROFILE_KEYS, source=label, prefix=f"profiles.{pname}.")
        if pname == profile:
            values.update({k: v for k, v in checked.items() if k in SETTINGS})

    if selection.backends:
        names, where = list(selection.backends), "--backend"
    elif profile is not None and "chain" in profiles[profile]:
        names, where = profiles[profile]["chain"], f"profiles.{profile}.chain"
    elif "chain" in top:
        names, where = top["chain"], "chain"
    else:
        names, where = list(DEFAULT_CHAIN), "the default chain"
    if not names:
        raise ConfigError("the chain is empty", source=label, key=where)
    settings = Settings((), source, profile, backends, values, raw)
    # A name not defined in the file is reported where it was written: the file and key.
    written = where if where == "--backend" else f"{label}: {where}"
    chain = tuple(settings.spec(name, written) for name in names)
    return Settings(chain, source, profile, backends, values, raw)
