"""Configuration: locate and validate the TOML file, and turn a selection into a chain.

Unknown keys, wrong types and unknown backend names are errors (exit 2) naming the file,
the key and what was expected. No file at the default location is fine: defaults apply.
A file others could have written is refused, as OpenSSH refuses its config: it names the
commands keyhelper runs. The administrator's policy (keyhelper/policy.py) is applied here,
so the rest of keyhelper sees one effective view.
"""

from __future__ import annotations

import os

from keyhelper import policy
from keyhelper.base.files import cache_dir, config_path, make_private_dirs, safe_dir
from keyhelper.cachepolicy import DEFAULT_CLAUDE_TTL, claude_ttl
from keyhelper.configfile import (
    AUDIT_KEYS,
    DEFAULT_DEADLINE,
    DEFAULT_STALE_GRACE,
    MAX_CONFIG_BYTES,
    MCP_KEYS,
    PLUGINS_KEYS,
    PROFILE_KEYS,
    SETTINGS,
    TOP_LEVEL,
    BackendSpec,
    check_audit,
    check_table,
    load_toml,
    read_trusted,
)
from keyhelper.errors import ConfigError

__all__ = ["AUDIT_KEYS", "DEFAULT_DEADLINE", "DEFAULT_STALE_GRACE", "MAX_CONFIG_BYTES",
           "PLUGINS_KEYS", "PROFILE_KEYS", "SETTINGS", "TOP_LEVEL", "BackendSpec", "Settings",
           "load", "read_trusted"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from keyhelper.base.files import Selection
    from keyhelper.policy import Policy

DEFAULT_CHAIN = ("env", "keyring")


class Settings:
    """What a run needs after the configuration was read and a selection applied. (A plain
    class: dataclasses costs ~12 ms to import here.)"""

    __slots__ = ("backends", "chain", "config_path", "origins", "policy", "profile", "raw",
                 "values")

    def __init__(self, chain: tuple[BackendSpec, ...], config_path: str | None,
                 profile: str | None, backends: Mapping[str, BackendSpec],
                 values: Mapping[str, Any] | None = None, raw: Mapping[str, Any] | None = None,
                 policy: Policy | None = None, origins: Mapping[str, str] | None = None):
        self.chain = chain
        self.config_path = config_path  # None when no file was read
        self.profile = profile
        self.backends = backends
        self.values = {} if values is None else values
        # The file's tables as in effect: the policy's [audit] and plugin allowlist applied.
        self.raw = {} if raw is None else raw
        self.policy = policy
        # Where each setting (and "plugins", "audit") came from, for doctor; absent: "default".
        self.origins = {} if origins is None else origins

    def setting(self, name: str) -> Any:
        return self.values.get(name, SETTINGS[name].default)

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")

    def ttl(self, env: Mapping[str, str]) -> tuple[float, str]:
        """A key's cache life and where it came from: the config, else Claude Code's TTL,
        else the default; then held within the policy's min_ttl and max_ttl."""
        value, origin = self.setting("ttl"), self.origin("ttl")
        if value is None:
            claude = claude_ttl(env)
            value, origin = ((claude, "$CLAUDE_CODE_API_KEY_HELPER_TTL_MS") if claude
                             else (DEFAULT_CLAUDE_TTL, "default"))
        if self.policy is None:
            return float(value), origin
        return self.policy.clamp_ttl(float(value), origin)

    def check_type(self, spec: BackendSpec) -> None:
        """ConfigError if the policy does not allow this backend's type (checked before
        the type's code is even imported)."""
        if self.policy is not None:
            self.policy.check_type(spec)

    def check_options(self, spec: BackendSpec, options: Mapping[str, Any]) -> None:
        """ConfigError if the policy does not allow what these options would run."""
        if self.policy is not None:
            self.policy.check_command(spec, options)

    def spec(self, name: str, source: str = "--backend") -> BackendSpec:
        """The spec of a configured backend, or a built-in type used with its defaults."""
        if name in self.backends:
            return self.backends[name]
        return BackendSpec(name, name, {}, source)


def load(selection: Selection, env: Mapping[str, str]) -> Settings:
    """Read the configuration and apply the selection's chain and profile, under the
    administrator's policy."""
    rules = policy.load()
    path, explicit = config_path(selection, env)
    data = read_trusted(path)
    if data is None and explicit:
        raise ConfigError("no such file", source=path)
    raw = load_toml(data, path, state_dir(env)) if data is not None else {}
    source = path if data is not None else None
    label = source or "defaults"
    top = check_table(raw, TOP_LEVEL, source=label, prefix="")
    check_table(top.get("plugins", {}), PLUGINS_KEYS, source=label, prefix="plugins.")
    check_audit(top.get("audit", {}), source=label)
    check_table(top.get("mcp", {}), MCP_KEYS, source=label, prefix="mcp.")

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
    effective, origins = policy.apply(rules, top)
    origins.update({k: "config file" for k in values})
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
            origins.update({k: f"profile {pname}" for k in checked if k in SETTINGS})

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
    settings = Settings((), source, profile, backends, values, effective, rules, origins)
    # A name not defined in the file is reported where it was written: the file and key.
    written = where if where == "--backend" else f"{label}: {where}"
    chain = tuple(settings.spec(name, written) for name in names)
    return Settings(chain, source, profile, backends, values, effective, rules, origins)


def state_dir(env: Mapping[str, str]) -> str | None:
    """keyhelper's private state directory, where the parse of the config is kept between
    runs: the cache directory's ``state``, each made 0700 if missing (as
    keyhelper.stores.FileCache does, which reports problems). None when either is not safe
    to use (a symlink, another owner, open to others): then the file is parsed anew."""
    directory = cache_dir(env)
    path = os.path.join(directory, "state")
    for each in (directory, path):
        problem = safe_dir(each)
        if problem == "missing":
            try:
                make_private_dirs(each)
            except OSError:
                return None
            problem = safe_dir(each)
        if problem is not None:
            return None
    return path
