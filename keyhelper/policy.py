"""The administrator's policy: a system file that the user's config may narrow, never widen.

The user's config can be replaced wholesale by the environment ($KEYHELPER_CONFIG,
$XDG_CONFIG_HOME, $HOME: a project's settings can set them for the helper). The policy
lives at a fixed place no variable moves (``keyhelper.base.files.POLICY_PATH``:
/etc/keyhelper/policy.toml,
on macOS /Library/Application Support/keyhelper/policy.toml, on Windows
C:\\ProgramData\\keyhelper\\policy.toml) and must be root's: on POSIX one owned by another
user, or writable by group or others, is refused (exit 2), never ignored.

It may set the plugin allowlist (the config's and $KEYHELPER_PLUGINS_ALLOW can only take
names off it), the audit log (replacing the config's [audit]), the backend types and
commands the chain may use, and bounds on the cache life of a key.
"""

from __future__ import annotations

import os

from keyhelper.backend import Option
from keyhelper.base.files import POLICY_PATH
from keyhelper.configfile import (
    PLUGINS_KEYS,
    BackendSpec,
    check_audit,
    check_table,
    parse_toml,
    positive_seconds,
    read_trusted,
)
from keyhelper.errors import ConfigError
from keyhelper.registry import narrow

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

COMMAND_TYPE = "command"

TOP_LEVEL: dict[str, Option] = {
    "plugins": Option(dict, help="[plugins] allow: the distributions whose plugins may load"),
    "audit": Option(dict, help="[audit], as in the config; replaces the config's"),
    "backends": Option(dict, help="[backends] allowed_types: the backend types a chain may use"),
    "command": Option(dict, help="[command] allowed: the programs the command backend may run"),
    "min_ttl": positive_seconds(None, "seconds a key is cached at least"),
    "max_ttl": positive_seconds(None, "seconds a key is cached at most"),
}
BACKENDS_KEYS: dict[str, Option] = {"allowed_types": Option(list, item_type=str)}
COMMAND_KEYS: dict[str, Option] = {
    "allowed": Option(list, item_type=str, help="absolute paths, compared with argv[0] as written"),
}


class Policy:
    """What the policy file says; None for each rule it leaves to the user. (A plain class:
    dataclasses costs ~12 ms to import here.)"""

    __slots__ = ("allowed_commands", "allowed_types", "audit", "max_ttl", "min_ttl", "path",
                 "plugins_allow")

    def __init__(self, path: str, plugins_allow: tuple[str, ...] | None = None,
                 audit: Mapping[str, Any] | None = None,
                 allowed_types: tuple[str, ...] | None = None,
                 allowed_commands: tuple[str, ...] | None = None,
                 min_ttl: float | None = None, max_ttl: float | None = None):
        self.path = path
        self.plugins_allow = plugins_allow
        self.audit = audit
        self.allowed_types = allowed_types
        self.allowed_commands = allowed_commands
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl

    def check_type(self, spec: BackendSpec) -> None:
        if self.allowed_types is None or spec.type in self.allowed_types:
            return
        named = "" if spec.name == spec.type else f"backend {spec.name!r}: "
        raise ConfigError(f"{named}backend type {spec.type!r} is not allowed by {self.path} "
                          f"(allowed: {_listed(self.allowed_types)})", source=spec.source)

    def check_command(self, spec: BackendSpec, options: Mapping[str, Any]) -> None:
        if self.allowed_commands is None or spec.type != COMMAND_TYPE:
            return
        argv = options.get("command") or []
        if not argv or argv[0] in self.allowed_commands:
            return  # an empty command runs nothing: the backend reports it
        hint = "" if os.path.isabs(argv[0]) else "; name it by its absolute path"
        raise ConfigError(f"command {argv[0]!r} is not allowed by {self.path} "
                          f"(allowed: {_listed(self.allowed_commands)}){hint}",
                          source=spec.source, key=f"backends.{spec.name}.command")

    def clamp_ttl(self, ttl: float, origin: str) -> tuple[float, str]:
        """``ttl`` held within min_ttl and max_ttl, and where the result came from."""
        if self.max_ttl is not None and ttl > self.max_ttl:
            return self.max_ttl, f"clamped by policy max_ttl; {origin}: {ttl:g}"
        if self.min_ttl is not None and ttl < self.min_ttl:
            return self.min_ttl, f"clamped by policy min_ttl; {origin}: {ttl:g}"
        return ttl, origin

    def describe(self) -> list[str]:
        """doctor's lines about the rules that narrow the chain and the cache."""
        lines = []
        if self.allowed_types is not None:
            lines.append(f"policy backend types: {_listed(self.allowed_types)}")
        if self.allowed_commands is not None:
            lines.append(f"policy commands: {_listed(self.allowed_commands)}")
        if self.min_ttl is not None and self.max_ttl is not None:
            lines.append(f"policy ttl: {self.min_ttl:g} to {self.max_ttl:g} s")
        elif self.min_ttl is not None:
            lines.append(f"policy ttl: at least {self.min_ttl:g} s")
        elif self.max_ttl is not None:
            lines.append(f"policy ttl: at most {self.max_ttl:g} s")
        return lines


def load() -> Policy | None:
    """The policy at ``POLICY_PATH``, None if there is none; ConfigError (exit 2) if
    it cannot be trusted or read, or says something unknown: fail closed."""
    path = POLICY_PATH
    data = read_trusted(path, root_only=True)
    if data is None:
        return None
    # Parsed on every run, never kept like the config's parse (configfile.load_toml): that
    # record lives in the cache directory, which the environment can move ($KEYHELPER_CACHE_DIR
    # into a project's checkout), and the policy must hold whatever the environment says.
    top = check_table(parse_toml(data, path), TOP_LEVEL, source=path, prefix="")
    plugins = check_table(top.get("plugins", {}), PLUGINS_KEYS, source=path, prefix="plugins.")
    backends = check_table(top.get("backends", {}), BACKENDS_KEYS, source=path,
                           prefix="backends.")
    command = check_table(top.get("command", {}), COMMAND_KEYS, source=path, prefix="command.")
    for program in command.get("allowed", []):
        if not os.path.isabs(program) or "\x00" in program:
            raise ConfigError(f"expected absolute paths, got {program!r}", source=path,
                              key="command.allowed")
    audit = None
    if "audit" in top:
        check_audit(top["audit"], source=path)
        audit = {k: _account_home(v) if k in ("path", "syslog_socket") else v
                 for k, v in top["audit"].items()}
    bounds = _ttl_bounds(top, path)
    return Policy(path, _tuple(plugins.get("allow")), audit, _tuple(backends.get("allowed_types")),
                  _tuple(command.get("allowed")), *bounds)


def apply(policy: Policy | None,
          table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config's checked top-level ``table`` as in effect under ``policy``, and where its
    plugin allowlist and audit settings came from."""
    effective = dict(table)
    plugins = dict(table.get("plugins") or {})
    user_allow = plugins.get("allow")
    origins = {"plugins": "default" if user_allow is None else "config file",
               "audit": "config file" if "audit" in table else "default"}
    if policy is None:
        return effective, origins
    if policy.plugins_allow is not None:
        plugins["allow"] = narrow(policy.plugins_allow, user_allow)
        effective["plugins"] = plugins
        origins["plugins"] = "policy" + ("" if user_allow is None
                                         else ", narrowed by the config file")
    if policy.audit is not None:
        effective["audit"] = dict(policy.audit)
        origins["audit"] = "policy" + ("; the config file's [audit] is ignored"
                                       if "audit" in table else "")
    return effective, origins


def _ttl_bounds(top: Mapping[str, Any], path: str) -> tuple[float | None, float | None]:
    low, high = top.get("min_ttl"), top.get("max_ttl")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"greater than max_ttl ({high})", source=path, key="min_ttl")
    return (None if low is None else float(low)), (None if high is None else float(high))


def _account_home(path: str) -> str:
    """``~`` in the policy is the home of the process's account, from the password database:
    $HOME is the environment's to change."""
    if path != "~" and not path.startswith("~/"):
        return path
    try:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        home = os.path.expanduser("~")
    return home + path[1:]


def _tuple(items: list[str] | None) -> tuple[str, ...] | None:
    return None if items is None else tuple(items)


def _listed(items: tuple[str, ...]) -> str:
    return ", ".join(items) or "none"

