"""Refresh ahead: a hit in the last part of an entry's life is served at once, and a detached
process (keyhelper.refresh) fetches the next key.

The hit takes the entry's lock without waiting (so a burst of hits starts one refresh) and
hands the locked descriptor to the child as fd 3; the kernel keeps the flock while the child
holds it, and the child's exit releases it, whatever happens. The child inherits neither
stdout nor stderr (Claude Code waits for those to close) and leaves the session (setsid).

The child runs isolated (``python -I``: no current directory, user site or ``PYTHON*``
variables on its path) and moves to ``/`` before importing anything of its own: Claude Code
runs the helper inside checkouts, and a ``keyhelper/``, ``json.py`` or ``*.dist-info`` there
must never be imported. The selection is passed on with its config path made absolute.

``os.posix_spawn`` keeps ``subprocess`` off the hit path. On Windows ``_winapi.CreateProcess``
does (what subprocess calls there): the child is detached from the console, in a process
group of its own and out of Claude Code's job where the job allows it (else in it), with
stdin/stdout/stderr on the null device and no other handle inherited. Windows drops a lock
when the process that took it exits, so there the hit only checks that no refresh is under
way, and the child takes the lock itself (``--take-lock``). Elsewhere (no posix_spawn)
there is no background refresh: the entry ends and the next call fetches.
"""

import sys

from keyhelper.base import oslite
from keyhelper.base.files import PATH_VARIABLES, absolute_path, safe_cwd
from keyhelper.base.lock import open_lock, try_lock, unlock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

CHILD_MODULE = "keyhelper.refresh"
LOCK_FD = 3
# Isolated mode: ignore the current directory, the user site and every PYTHON* variable.
CHILD_FLAGS = ("-I",)
SAFE_CWD = "/"
TAKE_LOCK = "--take-lock"  # Windows: the child locks the entry itself
# Windows process creation flags (winbase.h) and the error that asks to retry.
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
ERROR_ACCESS_DENIED = 5
STARTF_USESTDHANDLES = 0x00000100


def absolute(argv: "Sequence[str]", env: "Mapping[str, str]") -> tuple[list[str], dict[str, str]]:
    """``argv`` and ``env`` with the config and cache paths made absolute: the child runs
    in another directory, and must name the same cache entry."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = absolute_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + absolute_path(arg[len("--config="):])
    child_env = dict(env)
    for name in PATH_VARIABLES:
        if child_env.get(name):
            child_env[name] = absolute_path(child_env[name])
    return out, child_env


def spawn_refresh(directory: str, key: str, stored: float, argv: "Sequence[str]") -> bool:
    """Start a background refresh unless one is under way. Never raises; True if started."""
    if sys.platform == "win32":
        return _spawn_windows(directory, key, stored, argv)
    native = oslite.native
    if not hasattr(native, "posix_spawn"):
        return False
    fd, _ = open_lock(oslite.join(directory, key + ".lock"))
    if fd is None:  # another user's lock (or a FIFO) would hold refreshes back
        return False
    try:
        if not try_lock(fd):  # another process is fetching already
            return False
        devnull = "/dev/null"  # os.devnull on POSIX
        actions = [
            (native.POSIX_SPAWN_OPEN, 0, devnull, native.O_RDONLY, 0),
            (native.POSIX_SPAWN_OPEN, 1, devnull, native.O_WRONLY, 0),
            (native.POSIX_SPAWN_OPEN, 2, devnull, native.O_WRONLY, 0),
            (native.POSIX_SPAWN_DUP2, fd, LOCK_FD),
        ]
        child_argv, child_env = absolute(argv, oslite.environ())
        args = [sys.executable, *CHILD_FLAGS, "-m", CHILD_MODULE, repr(stored),
                "--", *child_argv]
        native.posix_spawn(sys.executable, args, child_env, file_actions=actions, setsid=True)
        return True
    except OSError:
        return False
    finally:
        native.close(fd)  # the child's copy keeps the lock


def quote_windows(args: "Sequence[str]") -> str:
    """One command line from ``args``, as the Microsoft C runtime splits it again (what
    subprocess.list2cmdline does; subprocess is kept off the hit path)."""
    out = []
    for arg in args:
        if arg and not any(c in arg for c in ' \t\n"'):
            out.append(arg)
            continue
        quoted, backslashes = ['"'], 0
        for c in arg:
            if c == "\\":
                backslashes += 1
                continue
            # Backslashes are literal unless a quote follows: then each one is doubled.
            quoted.append("\\" * (backslashes * 2 + 1 if c == '"' else backslashes) + c)
            backslashes = 0
        quoted.append("\\" * (backslashes * 2) + '"')
        out.append("".join(quoted))
    return " ".join(out)


class _StartupInfo:
    """What _winapi.CreateProcess reads (subprocess.STARTUPINFO's fields)."""

    def __init__(self, null: int):
        self.dwFlags = STARTF_USESTDHANDLES
        self.hStdInput = self.hStdOutput = self.hStdError = null
        self.wShowWindow = 0
        self.lpAttributeList = {"handle_list": [null]}  # inherit this handle and no other


def _spawn_windows(directory: str, key: str, stored: float,
                   argv: "Sequence[str]") -> bool:  # pragma: no cover - Windows (wine tests)
    if sys.platform != "win32":  # for mypy: what follows is Windows-only
        return False
    import os  # not the hit's own path: once per refresh
    fd, _ = open_lock(os.path.join(directory, key + ".lock"))
    if fd is None:
        return False
    try:
        if not try_lock(fd):  # a refresh or a fetch is under way
            return False
        unlock(fd)  # the child takes its own: ours would go when this process exits
    except OSError:
        return False
    finally:
        os.close(fd)
    import _winapi
    import msvcrt

    child_argv, child_env = absolute(argv, os.environ)
    command = quote_windows([sys.executable, *CHILD_FLAGS, "-m", CHILD_MODULE, TAKE_LOCK,
                             repr(stored), "--", *child_argv])
    cwd = safe_cwd()  # not the caller's directory
    null = os.open(os.devnull, os.O_RDWR)
    try:
        me = _winapi.GetCurrentProcess()
        handle = _winapi.DuplicateHandle(me, msvcrt.get_osfhandle(null), me, 0, True,
                                         _winapi.DUPLICATE_SAME_ACCESS)
        try:
            flags = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_BREAKAWAY_FROM_JOB
            for attempt in (flags, flags & ~CREATE_BREAKAWAY_FROM_JOB):
                try:
                    process, thread, _, _ = _winapi.CreateProcess(
                        sys.executable, command, None, None, True, attempt, child_env, cwd,
                        _StartupInfo(handle))
                except OSError as exc:  # a job that forbids breaking away: stay in it
                    if attempt & CREATE_BREAKAWAY_FROM_JOB and getattr(
                            exc, "winerror", None) == ERROR_ACCESS_DENIED:
                        continue
                    return False
                _winapi.CloseHandle(thread)
                _winapi.CloseHandle(process)
                return True
            return False
        finally:
            _winapi.CloseHandle(handle)
    except OSError:
        return False
    finally:
        os.close(null)
