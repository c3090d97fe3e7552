"""Who is calling: the Claude Code process behind this run, if it can be told.

Claude Code runs the helper through a shell (``/bin/sh -c`` on Linux and macOS,
``%ComSpec% /d /s /c`` on Windows) and puts ``AI_AGENT=claude-code_...`` and
``CLAUDE_CODE_ENTRYPOINT`` into its environment. The caller is the nearest ancestor that is
not a shell or launcher, named by its pid and start time (pids are reused; the pair is not).

One walk over one ``lookup(pid) -> (name, parent pid, start time) | None`` per OS: Linux
reads /proc (proc_linux), macOS asks sysctl (proc_macos), Windows the process API
(proc_windows). The rules are the same everywhere: any failure, a loop, more than
MAX_DEPTH steps, or a parent started after its child (its pid was reused) give no identity,
and keyhelper falls back to the plain TTL; never a wrong identity (that would refetch).
Imports only ``sys`` and keyhelper.base.oslite until the environment check: this runs on
the cache-hit path.
"""

import sys

from keyhelper.base import oslite

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    Lookup = Callable[[int], "tuple[str, int, int] | None"]

# Shells and the programs that start the helper as their child (uvx and pipx run a tool so);
# each proc module adds its OS's own (cmd.exe and console-script launchers on Windows).
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "ash", "busybox",
                    "env", "nice", "timeout", "time", "sudo", "doas", "xargs", "tcsh", "csh",
                    "uv", "uvx", "pipx"})
MAX_DEPTH = 8


def called_by_claude_code(env: "Mapping[str, str]") -> bool:
    return env.get("AI_AGENT", "").startswith("claude-code") and "CLAUDE_CODE_ENTRYPOINT" in env


def walk(lookup: "Lookup", pid: int, skip: "frozenset[str]" = SHELLS) -> str | None:
    """``"<pid>-<start time>"`` of the nearest ancestor of ``pid`` whose name is not in
    ``skip``, or None: when a lookup fails, the walk loops or reaches pid 1 (or 0), goes
    past MAX_DEPTH ancestors, or meets a parent started after its child."""
    info = lookup(pid)
    seen = {pid}
    for _ in range(MAX_DEPTH):
        if info is None:
            return None
        _, parent, child_started = info
        if parent <= 1 or parent in seen:
            return None
        seen.add(parent)
        info = lookup(parent)
        if info is None or info[2] > child_started:  # a newer "parent" reuses a dead one's pid
            return None
        if info[0] not in skip:
            return f"{parent}-{info[2]}"
    return None


def platform_lookup() -> "tuple[Lookup, frozenset[str]] | None":
    """This OS's lookup and the launcher names it skips besides SHELLS; None elsewhere."""
    if sys.platform.startswith("linux"):
        from keyhelper.base import proc_linux as proc
    elif sys.platform == "darwin":
        from keyhelper.base import proc_macos as proc  # type: ignore[no-redef]
    elif sys.platform == "win32":
        from keyhelper.base import proc_windows as proc  # type: ignore[no-redef]
    else:
        return None
    return proc.lookup, SHELLS | proc.SKIP


def caller_id(env: "Mapping[str, str]") -> str | None:
    """``"<pid>-<start time>"`` of the Claude Code process that runs us, or None."""
    if not called_by_claude_code(env):
        return None
    found = platform_lookup()
    if found is None:
        return None
    lookup, skip = found
    return walk(lookup, oslite.native.getpid(), skip)
