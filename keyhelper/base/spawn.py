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

``os.posix_spawn`` keeps ``subprocess`` off the hit path. Where it is missing (Windows),
there is no background refresh: the entry ends and the next call fetches in the foreground.
"""

import os
import sys

from keyhelper.base.lock import open_lock, try_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

CHILD_MODULE = "keyhelper.refresh"
LOCK_FD = 3
# Isolated mode: ignore the current directory, the user site and every PYTHON* variable.
CHILD_FLAGS = ("-I",)
SAFE_CWD = "/"


def absolute(argv: "Sequence[str]", env: "Mapping[str, str]") -> tuple[list[str], dict[str, str]]:
    """``argv`` and ``env`` with the config and cache paths made absolute: the child runs
    in another directory, and must name the same cache entry."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = os.path.abspath(os.path.expanduser(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + os.path.abspath(os.path.expanduser(arg[len("--config="):]))
    child_env = dict(env)
    for name in ("KEYHELPER_CONFIG", "KEYHELPER_CACHE_DIR"):
        if child_env.get(name):
            child_env[name] = os.path.abspath(os.path.expanduser(child_env[name]))
    return out, child_env


def spawn_refresh(directory: str, key: str, stored: float, argv: "Sequence[str]") -> bool:
    """Start a background refresh unless one is under way. Never raises; True if started."""
    if not hasattr(os, "posix_spawn"):
        return False
    fd, _ = open_lock(os.path.join(directory, key + ".lock"))
    if fd is None:  # another user's lock (or a FIFO) would hold refreshes back
        return False
    try:
        if not try_lock(fd):  # another process is fetching already
            return False
        devnull = os.devnull
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, LOCK_FD),
        ]
        child_argv, child_env = absolute(argv, os.environ)
        args = [sys.executable, *CHILD_FLAGS, "-m", CHILD_MODULE, repr(stored),
                "--", *child_argv]
        os.posix_spawn(sys.executable, args, child_env, file_actions=actions, setsid=True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # the child's copy keeps the lock
