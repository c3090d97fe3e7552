"""Backend discovery through the ``keyhelper.backends`` entry-point group.

Built-in backends come through the same door as third-party plugins. Entry points are
scanned only on a cache miss or by a command that needs them, never on a hit. Each plugin
loads in its own try/except: a broken plugin is reported as unusable and never breaks the
others. An optional allowlist of distributions keeps unapproved plugins from being imported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from keyhelper.backend import Backend
from keyhelper.errors import Unavailable

GROUP = "keyhelper.backends"
BUILTIN_DISTRIBUTION = "keyhelper"
ALLOW_ENV = "KEYHELPER_PLUGINS_ALLOW"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """A backend type found in the entry-point group, and where it came from."""

    name: str
    target: str  # "module:attribute"
    distribution: str
    version: str
    allowed: bool


class Registry:
    """The backend types installed here, loaded on demand."""

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None,
                 allow: Iterable[str] | None = None):
        self._allow = None if allow is None else {_norm(d) for d in allow}
        self._entry_points: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=GROUP) if entry_points is None else entry_points:
            # keyhelper's own backends keep their names: a plugin claiming "env" earlier on
            # sys.path must not take its place. Otherwise the first claim wins.
            if ep.name not in self._entry_points or (
                    _norm(_distribution(ep)[0]) == BUILTIN_DISTRIBUTION
                    and _norm(_distribution(self._entry_points[ep.name])[0])
                    != BUILTIN_DISTRIBUTION):
                self._entry_points[ep.name] = ep
        self._loaded: dict[str, type[Backend]] = {}

    def names(self) -> list[str]:
        return sorted(self._entry_points)

    def info(self, name: str) -> PluginInfo:
        ep = self._entry_points[name]
        dist_name, version = _distribution(ep)
        return PluginInfo(name, ep.value, dist_name, version, self._allowed(dist_name))

    def _allowed(self, dist_name: str) -> bool:
        if _norm(dist_name) == BUILTIN_DISTRIBUTION or self._allow is None:
            return True
        return _norm(dist_name) in self._allow

    def load(self, name: str) -> type[Backend]:
        """The backend class for a type name; Unavailable (with the reason) if it cannot load."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entry_points:
            raise Unavailable(f"no backend type {name!r} is installed "
                              f"(installed: {', '.join(self.names()) or 'none'})")
        info = self.info(name)
        if not info.allowed:
            raise Unavailable(f"plugin distribution {info.distribution!r} is not in the "
                              "plugin allowlist; not loaded")
        try:
            cls: Any = self._entry_points[name].load()
        except (Exception, SystemExit) as exc:  # a broken plugin must not break the tool
            log.debug("loading backend plugin %s failed", name, exc_info=True)
            raise Unavailable(f"plugin {info.target} failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise Unavailable(f"plugin {info.target} is not a keyhelper Backend class")
        self._loaded[name] = cls
        return cls


def allowlist(config_plugins: Mapping[str, Any] | None, env: Mapping[str, str]) -> list[str] | None:
    """The plugin allowlist: the config's ``[plugins] allow`` and $KEYHELPER_PLUGINS_ALLOW
    (comma-separated); None when neither is set (every plugin may load).

    When both are set, a distribution must be on both: the environment (which a project's
    .claude/settings.json can set) may narrow the config's list, never widen it. The
    config's list has the administrator's policy applied already (config.Settings.raw).
    """
    from_env = None
    if env.get(ALLOW_ENV) is not None:
        from_env = [d.strip() for d in env[ALLOW_ENV].split(",") if d.strip()]
    return narrow((config_plugins or {}).get("allow"), from_env)


def narrow(outer: Sequence[str] | None, inner: Sequence[str] | None) -> list[str] | None:
    """The distributions on both allowlists, in ``outer``'s order; None (no list: every
    plugin may load) only when neither is set. A later list can only take names off."""
    if outer is None:
        return None if inner is None else list(inner)
    if inner is None:
        return list(outer)
    names = {_norm(d) for d in inner}
    return [d for d in outer if _norm(d) in names]


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version or "unknown"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
