"""``keyhelper setup claude-code``: point Claude Code's settings.json at this keyhelper.

Merges into the existing file (every other setting kept), writes atomically with a backup of
the previous version, does nothing when the file already says the same, and can show the
change without writing it.

The settings name a command Claude Code runs: whoever can write them runs code as the user.
So a missing ``.claude`` directory is created 0700 whatever the umask, and a directory or
settings file that another user owns or can write is refused, never written into.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyhelper.base.files import absolute_path, venv_site_packages, write_private
from keyhelper.errors import ConfigError

Echo = Callable[[str], None]

_POSIX = os.name == "posix"
_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))

PROJECT_WARNING = (
    "warning: a project's .claude/settings.json apiKeyHelper runs without any trust prompt "
    "in -p mode for anyone who opens the project (anthropics/claude-code issue 90236); "
    "prefer --scope user, and never commit a helper you would not run yourself.")
TOO_DEEP = "nested too deeply to be Claude Code settings; fix it or move it away first"


@dataclass(frozen=True)
class Plan:
    path: str
    before: str | None  # None: the file does not exist yet
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def installed_command() -> str:
    """The command that runs this keyhelper, ready for a shell: the site-less launcher when
    this is a regular install in a virtualenv (a hit then costs less than a bare ``python``),
    else the console script's absolute path (a shim or PATH lookup per call costs ~90 ms)."""
    launcher = lean_launcher()
    if launcher is not None:
        return shlex.join([sys.executable, *LAUNCHER_FLAGS, launcher])
    return shlex.quote(console_script())


# Isolated (no cwd, user site or PYTHON* variables on the path) and without site: the
# launcher adds its own site-packages, and site itself only on a miss.
LAUNCHER_FLAGS = ("-I", "-S")


def lean_launcher() -> str | None:
    """keyhelper/launcher.py when the launcher will trust its layout: it lies in the
    site-packages of the virtualenv whose python runs setup (pip or pipx; not an editable,
    user-site or system install, which keep the console script). Its compiled copy when
    pip wrote a current one: Python runs a .pyc as it is, and compiling the script at every
    call costs ~0.4 ms, 3 % of an interpreter's start (docs/performance.md)."""
    package = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(package, "launcher.py")
    expected = venv_site_packages(sys.executable)
    try:
        same = expected is not None and os.path.samefile(
            os.path.dirname(os.path.dirname(path)), expected)
    except OSError:
        return None
    if not (same and os.path.isfile(path)):
        return None
    return current_bytecode(path) or path


def current_bytecode(source: str) -> str | None:
    """The .pyc of ``source`` if the import system would take it: this Python's magic
    number, timestamp-checked, the source's mtime and size (the launcher's check of the
    hit's modules is the same)."""
    import importlib.util

    cached = importlib.util.cache_from_source(source)
    try:
        with open(cached, "rb") as pyc:
            head = pyc.read(16)
        st = os.stat(source)
    except OSError:
        return None
    stamp = int(st.st_mtime) & 0xFFFFFFFF | (st.st_size & 0xFFFFFFFF) << 32
    expected = importlib.util.MAGIC_NUMBER + bytes(4) + stamp.to_bytes(8, "little")
    return cached if head == expected else None


def console_script() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "keyhelper")
    for candidate in (sys.argv[0], beside, beside + ".exe"):
        if candidate and os.path.isfile(candidate) and os.path.basename(
                candidate).startswith("keyhelper"):
            return os.path.abspath(candidate)
    found = shutil.which("keyhelper")
    if found:
        return os.path.abspath(found)
    raise ConfigError("cannot find the installed keyhelper command")


def settings_path(scope: str, home: str, cwd: str) -> str:
    base = home if scope == "user" else cwd
    return os.path.join(base, ".claude", "settings.json")


def helper_command(command: str, profile: str | None, config: str | None,
                   backends: tuple[str, ...], shape: str = "") -> str:
    """``command`` (from :func:`installed_command`, shell-quoted already) and the selection;
    ``shape`` a hook's (keyhelper.base.shapes)."""
    argv: list[str] = [shape] if shape else []
    if config:
        argv += ["--config", absolute_path(config)]
    if profile:
        argv += ["--profile", profile]
    for name in backends:
        argv += ["--backend", name]
    return " ".join([command, shlex.join(argv)]) if argv else command


def unsafe(st: os.stat_result, path: str, mode: int) -> str | None:
    """Why another user could change ``path`` (owner, group or others' write), or None.
    ``mode`` is the one to suggest."""
    if not _POSIX:
        return None
    if st.st_uid != os.getuid():
        return f"owned by another user (uid {st.st_uid}); move it away, then run setup again"
    current = stat.S_IMODE(st.st_mode)
    if current & 0o022:
        who = "others" if current & 0o002 else "its group"
        return f"writable by {who} (mode {current:o}); fix with: chmod {mode:o} {path}"
    return None


def check_dir(directory: str) -> bool:
    """False when ``directory`` does not exist yet; ConfigError when others could write it."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot inspect it ({exc.strerror})", source=directory) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("not a directory", source=directory)
    problem = unsafe(st, directory, 0o700)
    if problem:
        raise ConfigError(problem, source=directory)
    return True


def make_dir(directory: str) -> None:
    """Create ``directory`` 0700 whatever the umask (an existing one is checked instead)."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create it ({exc.strerror})", source=directory) from None
    else:
        os.chmod(directory, 0o700)  # the umask may have taken bits away; never adds any
    check_dir(directory)


def read_settings(path: str) -> str | None:
    """The settings file's text (None: there is none): never through a symlink, never
    blocking on a FIFO, and only from a regular file of the user's that others cannot write."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError("a symlink, not followed: put a regular file in its place (or "
                              "edit the file it points to yourself)", source=path) from None
        raise ConfigError(f"cannot read it ({exc.strerror})", source=path) from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("not a regular file", source=path)
        problem = unsafe(st, path, 0o600)
        if problem:
            raise ConfigError(problem, source=path)
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text; fix it or move it away first", source=path) from None


def plan(path: str, helper: str, ttl_ms: int | None) -> Plan:
    def edit(settings: dict[str, Any]) -> None:
        settings["apiKeyHelper"] = helper
        if ttl_ms is not None:
            json_object(settings, "env", path)["CLAUDE_CODE_API_KEY_HELPER_TTL_MS"] = str(ttl_ms)

    return plan_edit(path, edit)


def plan_edit(path: str, edit: Callable[[dict[str, Any]], None]) -> Plan:
    """The change ``edit`` makes to a JSON settings file (merged: every other key kept)."""
    check_dir(os.path.dirname(path))
    before = read_settings(path)
    settings: dict[str, Any] = {}
    if before is not None:
        try:
            loaded = json.loads(before) if before.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc.msg} at line {exc.lineno}); "
                              "fix it or move it away first", source=path) from None
        except RecursionError:
            raise ConfigError(TOO_DEEP, source=path) from None
        if not isinstance(loaded, dict):
            raise ConfigError("expected a JSON object", source=path)
        settings = loaded
    edit(settings)
    try:
        after = json.dumps(settings, indent=2) + "\n"
    except RecursionError:
        raise ConfigError(TOO_DEEP, source=path) from None
    return Plan(path, before, after)


def json_object(parent: dict[str, Any], key: str, path: str, where: str = "") -> dict[str, Any]:
    """``parent[key]``, a JSON object (made if absent); ConfigError if it is something else."""
    value = parent.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError("expected a JSON object", source=path, key=where + key)
    return value


def apply(change: Plan, now: float | None = None) -> str | None:
    """Write the new settings; return the backup's path (None when there was no file)."""
    make_dir(os.path.dirname(change.path))
    backup = None
    if change.before is not None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        backup = f"{change.path}.bak-{stamp}"
        write_private(backup, change.before.encode())
    write_private(change.path, change.after.encode())
    return backup


def setup(*, scope: str, profile: str | None, config: str | None, backends: tuple[str, ...],
          ttl_ms: int | None, dry_run: bool, echo: Echo, warn: Echo) -> int:
    path = settings_path(scope, os.path.expanduser("~"), os.getcwd())
    helper = helper_command(installed_command(), profile, config, backends)
    change = plan(path, helper, ttl_ms)
    if scope == "project":
        warn(PROJECT_WARNING)
    return carry_out(change, f"apiKeyHelper = {helper}", dry_run, echo)


def carry_out(change: Plan, summary: str, dry_run: bool, echo: Echo) -> int:
    """Write a planned change (with a backup), or show it (dry run), or say it is there."""
    path = change.path
    if not change.changed:
        echo(f"{path}: already set up, nothing to change")
        return 0
    if dry_run:
        diff = difflib.unified_diff((change.before or "").splitlines(keepends=True),
                                    change.after.splitlines(keepends=True),
                                    fromfile=path, tofile=f"{path} (new)")
        echo("".join(diff).rstrip("\n"))
        echo("dry run: nothing written")
        return 0
    backup = apply(change)
    echo(f"{path}: {summary}")
    if backup:
        echo(f"backup of the previous file: {backup}")
    return 0
