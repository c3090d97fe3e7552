"""Backend discovery through the ``keyhelper.backends`` entry-point group.

Built-in backends come through the same door as third-party plugins. Entry points are
scanned only on a cache miss or by a command that needs them, never on a hit. Each plugin
loads in its own try/except: a broken plugin is reported as unusable and never breaks the
others. An optional allowlist of distributions keeps unapproved plugins from being imported.

A scan through ``importlib.metadata`` costs ~3x an interpreter start, so a miss reads the
entry points from an index in keyhelper's private state directory instead (:func:`found`),
valid only for the installation it was made from: its signature covers the Python version,
the directories on ``sys.path`` that hold distributions and, in each, every distribution's
metadata directory and the identity of its ``entry_points.txt``. Installing, upgrading or
removing any distribution changes it, and the next miss scans again and rewrites the index.
The entry points stay the one source of backend types: the index is a copy of a scan, never
an addition to it.
"""

from __future__ import annotations

import os
import sys

from keyhelper.backend import Backend
from keyhelper.base import records
from keyhelper.base.files import read_file_private, write_private
from keyhelper.errors import Unavailable
from keyhelper.redact import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from importlib import metadata
    from typing import Any

GROUP = "keyhelper.backends"
BUILTIN_DISTRIBUTION = "keyhelper"
ALLOW_ENV = "KEYHELPER_PLUGINS_ALLOW"

log = get_logger(__name__)



class PluginInfo:
    """A backend type found in the entry-point group, and where it came from."""

    __slots__ = ("allowed", "distribution", "name", "target", "version")

    def __init__(self, name: str, target: str, distribution: str, version: str,
                 allowed: bool):
        self.name = name
        self.target = target  # "module:attribute"
        self.distribution = distribution
        self.version = version
        self.allowed = allowed

    def __repr__(self) -> str:
        return (f"PluginInfo(name={self.name!r}, target={self.target!r}, "
                f"distribution={self.distribution!r}, version={self.version!r}, "
                f"allowed={self.allowed!r})")


class Found:
    """One entry point of the group: its name, target and distribution."""

    __slots__ = ("distribution", "name", "value", "version")

    def __init__(self, name: str, value: str, distribution: str, version: str):
        self.name = name
        self.value = value
        self.distribution = distribution
        self.version = version

    def load(self) -> Any:
        """As importlib.metadata.EntryPoint.load: ``module:attr.attr``."""
        module, _, attrs = self.value.partition(":")
        # importlib.import_module, without importing importlib (and its warnings) for it
        name = module.strip()
        __import__(name)
        target: Any = sys.modules[name]
        for attr in attrs.split("[")[0].strip().split("."):
            if attr:
                target = getattr(target, attr)
        return target

    @classmethod
    def of(cls, ep: metadata.EntryPoint) -> Found:
        dist_name, version = _distribution(ep)
        return cls(ep.name, ep.value, dist_name, version)


class Registry:
    """The backend types installed here, loaded on demand. ``index_dir``: a private
    directory for the index of entry points (see the module's docstring)."""

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None,
                 allow: Iterable[str] | None = None, index_dir: str | None = None):
        self._allow = None if allow is None else {_norm(d) for d in allow}
        self._entry_points: dict[str, Found] = {}
        points = (found(index_dir) if entry_points is None
                  else [Found.of(ep) for ep in entry_points])
        for ep in points:
            # keyhelper's own backends keep their names: a plugin claiming "env" earlier on
            # sys.path must not take its place. Otherwise the first claim wins.
            if ep.name not in self._entry_points or (
                    _norm(ep.distribution) == BUILTIN_DISTRIBUTION
                    and _norm(self._entry_points[ep.name].distribution)
                    != BUILTIN_DISTRIBUTION):
                self._entry_points[ep.name] = ep
        self._loaded: dict[str, type[Backend]] = {}

    def names(self) -> list[str]:
        return sorted(self._entry_points)

    def info(self, name: str) -> PluginInfo:
        ep = self._entry_points[name]
        return PluginInfo(name, ep.value, ep.distribution, ep.version,
                          self._allowed(ep.distribution))

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


# --- the index of entry points ------------------------------------------------------------

INDEX_FORMAT = "keyhelper-plugins 1"
INDEX_NAME = "plugins.index"
_META_SUFFIXES = (".dist-info", ".egg-info")


def scan() -> list[Found]:
    from importlib import metadata

    return [Found.of(ep) for ep in metadata.entry_points(group=GROUP)]


def installation() -> str:
    """What the entry points of this interpreter depend on, as a digest (see the module's
    docstring); any install, upgrade or removal changes it.

    Only directories holding distributions count, in their order on ``sys.path``, and the
    interpreter by its real path: the console script (its own ``bin`` first on sys.path,
    ``bin/python3``) and the launcher (``bin/python``, no script directory) see the same
    installation, and share one index instead of scanning in turn."""
    parts = [sys.version, os.path.realpath(sys.executable)]
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue  # a zip file or a missing directory: importlib.metadata skips it too
        found = []
        for name in names:
            if name.endswith(_META_SUFFIXES):
                try:
                    st = os.stat(os.path.join(entry or ".", name, "entry_points.txt"))
                    found.append(f"{name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    found.append(name)
        if found:  # one without distributions (a script's directory) has no entry points
            parts += ["\x1e" + entry, *found]
    return records.digest("\x1f".join(parts))


def found(index_dir: str | None) -> list[Found]:
    """The group's entry points, in scan order: from the index when it was made from this
    installation, else scanned (and the index rewritten)."""
    if index_dir is None:
        return scan()
    path = os.path.join(index_dir, INDEX_NAME)
    signature = installation()
    data = read_file_private(path)
    fields = None if data is None else records.load(INDEX_FORMAT, data)
    if fields and fields[0] == ("installation", signature):
        points = [Found(*value.split("\x1f")) for name, value in fields[1:]
                  if name == "entry" and value.count("\x1f") == 3]
        if len(points) == len(fields) - 1:
            return points
    points = scan()
    data = records.dump(INDEX_FORMAT, [("installation", signature), *(
        ("entry", "\x1f".join((ep.name, ep.value, ep.distribution, ep.version)))
        for ep in points)])
    try:
        write_private(path, data, durable=False)
    except OSError:
        return points  # a lost index is only scanned again
    return points
