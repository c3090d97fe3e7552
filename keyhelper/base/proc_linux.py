"""A process's name, parent and start time on Linux: ``/proc/PID/stat``."""

SKIP: frozenset[str] = frozenset()  # nothing beyond the shells of keyhelper.base.caller


def parse_stat(data: str) -> tuple[str, int, int] | None:
    """(command name, parent pid, start time in clock ticks since boot) from the text of
    ``/proc/PID/stat``, or None when it does not parse."""
    # The name is in parentheses and may itself contain spaces or parentheses.
    open_paren, close_paren = data.find("("), data.rfind(")")
    if open_paren < 0 or close_paren < 0:
        return None
    name = data[open_paren + 1:close_paren]
    rest = data[close_paren + 2:].split()
    try:
        return name, int(rest[1]), int(rest[19])  # fields 4 (ppid) and 22 (starttime)
    except (IndexError, ValueError):
        return None


def lookup(pid: int) -> tuple[str, int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    return parse_stat(data)
