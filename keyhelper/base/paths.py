"""Where things live and what the command line selects: the config file, the cache
directory, the administrator's policy, a file's identity; ``keyhelper [--backend NAME]...
[--profile NAME] [--config PATH] [--no-cache] [-v]`` parsed without click (a hit must not
import it). One small portable interface: Linux-only places (XDG_RUNTIME_DIR) have
documented fallbacks for macOS and Windows."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class Selection:
    """What the command line selects: the chain and where its configuration lives."""

    __slots__ = ("backends", "config", "no_cache", "profile", "verbose")

    def __init__(self, backends: Sequence[str] = (), profile: str | None = None,
                 config: str | None = None, no_cache: bool = False, verbose: bool = False):
        self.backends = tuple(backends)
        self.profile = profile
        self.config = config
        self.no_cache = no_cache
        self.verbose = verbose


_VALUE_OPTIONS = {"--backend": "backends", "-b": "backends", "--profile": "profile",
                  "-p": "profile", "--config": "config", "-c": "config"}


def parse_get_args(argv: Sequence[str]) -> Selection | None:
    """Parse a plain get (``keyhelper [selection options]``); None for anything else."""
    backends: list[str] = []
    found: dict[str, str] = {}
    flags = {"no_cache": False, "verbose": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUE_OPTIONS and name.startswith("--") and eq:
            pass
        elif arg in _VALUE_OPTIONS and i + 1 < len(argv):
            i += 1
            name, value = arg, argv[i]
        elif arg == "--no-cache":
            flags["no_cache"] = True
            i += 1
            continue
        elif arg in ("-v", "--verbose"):
            flags["verbose"] = True
            i += 1
            continue
        else:
            return None  # a subcommand, --help, a typo: the click CLI handles and reports it
        if not value or value.startswith("-"):
            return None
        field = _VALUE_OPTIONS[name]
        if field == "backends":
            backends.append(value)
        elif field in found:
            return None  # given twice: let the CLI decide
        else:
            found[field] = value
        i += 1
    return Selection(backends, found.get("profile"), found.get("config"),
                     flags["no_cache"], flags["verbose"])


APP = "keyhelper"
# The administrator's policy (keyhelper/policy.py): a fixed place, never from the environment.
if sys.platform == "darwin":
    POLICY_PATH = "/Library/Application Support/keyhelper/policy.toml"
elif os.name == "nt":
    POLICY_PATH = "C:\\ProgramData\\keyhelper\\policy.toml"
else:
    POLICY_PATH = "/etc/keyhelper/policy.toml"


def home() -> str:
    return os.path.expanduser("~")


def config_path(selection: Selection, env: Mapping[str, str]) -> tuple[str, bool]:
    """The config file to read, and whether it was named explicitly (then it must exist).

    --config, else $KEYHELPER_CONFIG, else $XDG_CONFIG_HOME/keyhelper/config.toml,
    else ~/.config/keyhelper/config.toml (on Windows %APPDATA%\\keyhelper\\config.toml).
    """
    if selection.config:
        return os.path.abspath(os.path.expanduser(selection.config)), True
    if env.get("KEYHELPER_CONFIG"):
        return os.path.abspath(os.path.expanduser(env["KEYHELPER_CONFIG"])), True
    if _absolute(env, "XDG_CONFIG_HOME"):
        base = env["XDG_CONFIG_HOME"]
    elif os.name == "nt" and _absolute(env, "APPDATA"):
        base = env["APPDATA"]
    else:
        base = os.path.join(home(), ".config")
    return os.path.join(base, APP, "config.toml"), False


def cache_dir(env: Mapping[str, str]) -> str:
    """$KEYHELPER_CACHE_DIR, else $XDG_RUNTIME_DIR/keyhelper (Linux: per-user tmpfs),
    else $XDG_CACHE_HOME/keyhelper, else the platform's user cache directory."""
    if env.get("KEYHELPER_CACHE_DIR"):
        return os.path.abspath(env["KEYHELPER_CACHE_DIR"])
    for var in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME"):
        if _absolute(env, var):
            return os.path.join(env[var], APP)
    if sys.platform == "darwin":
        return os.path.join(home(), "Library", "Caches", APP)
    if os.name == "nt" and _absolute(env, "LOCALAPPDATA"):
        return os.path.join(env["LOCALAPPDATA"], APP, "cache")
    return os.path.join(home(), ".cache", APP)


def _absolute(env: Mapping[str, str], var: str) -> bool:
    """Whether $var is set to an absolute path. The XDG base directory spec: a relative
    path "should be considered invalid and ignored" (it would mean the caller's cwd, such
    as a cloned project)."""
    return os.path.isabs(env.get(var) or "")


def file_identity(path: str) -> str:
    """Changes whenever the file is edited or replaced, or its owner or mode changes (a
    config made unsafe is then a miss, and the full path refuses it), without reading it."""
    try:
        st = os.stat(path)
    except OSError:
        return "absent"
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}:{st.st_uid}"
