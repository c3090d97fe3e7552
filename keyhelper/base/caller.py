"""Who is calling: the Claude Code process behind this run, if it can be told.

Claude Code runs the helper through ``/bin/sh -c`` and puts ``AI_AGENT=claude-code_...`` and
``CLAUDE_CODE_ENTRYPOINT`` into its environment. The caller is the nearest ancestor that is
not a shell, named by its pid and start time (pids are reused; the pair is not).

Linux reads /proc. Elsewhere (macOS, Windows) there is no cheap way on the hit path, so
``caller_id`` returns None and keyhelper falls back to the plain TTL (documented in README).
Imports only ``os``: this runs on the cache-hit path.
"""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "ash", "busybox",
                    "env", "nice", "timeout", "time", "sudo", "doas", "xargs", "tcsh", "csh"})
MAX_DEPTH = 8


def called_by_claude_code(env: "Mapping[str, str]") -> bool:
    return env.get("AI_AGENT", "").startswith("claude-code") and "CLAUDE_CODE_ENTRYPOINT" in env


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(command name, parent pid, start time) of a process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    # The name is in parentheses and may itself contain spaces or parentheses.
    open_paren, close_paren = data.find("("), data.rfind(")")
    if open_paren < 0 or close_paren < 0:
        return None
    name = data[open_paren + 1:close_paren]
    rest = data[close_paren + 2:].split()
    try:
        return name, int(rest[1]), rest[19]  # fields 4 (ppid) and 22 (starttime)
    except (IndexError, ValueError):
        return None


def caller_id(env: "Mapping[str, str]") -> str | None:
    """``"<pid>-<start time>"`` of the Claude Code process that runs us, or None."""
    if not called_by_claude_code(env) or not os.path.isdir("/proc/self"):
        return None
    pid = os.getppid()
    for _ in range(MAX_DEPTH):
        if pid <= 1:
            return None
        info = _stat(pid)
        if info is None:
            return None
        name, parent, started = info
        if name not in SHELLS:
            return f"{pid}-{started}"
        pid = parent
    return None
