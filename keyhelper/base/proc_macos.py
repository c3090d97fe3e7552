"""A process's name, parent and start time on macOS: ``sysctl({CTL_KERN, KERN_PROC,
KERN_PROC_PID, pid})`` fills one ``struct kinfo_proc`` (no entitlement needed, and any
user's process, unlike ``proc_pidinfo``; psutil does the same).

The layout is xnu's ``bsd/sys/sysctl.h`` (``struct kinfo_proc`` = ``struct extern_proc``
then ``struct eproc``) and ``bsd/sys/proc.h`` (``struct extern_proc``), the same on x86_64
and arm64; Go's golang.org/x/sys/unix agrees (``SizeofKinfoProc = 0x288``). The offsets
are pinned in tests/base/test_proc.py. Parsing is kept apart from the call, so that it is
tested on any OS with packed buffers.
"""

from keyhelper.base.proc_linux import SKIP as SKIP

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LIBSYSTEM = "/usr/lib/libSystem.B.dylib"  # loads by this path from the dyld shared cache
CTL_KERN, KERN_PROC, KERN_PROC_PID = 1, 14, 1
KINFO_PROC_SIZE = 648
STARTTIME_SEC = 0  # kp_proc.p_un.__p_starttime.tv_sec, int64
STARTTIME_USEC = 8  # .tv_usec, int32
PID = 40  # kp_proc.p_pid, int32
COMM = 243  # kp_proc.p_comm, char[MAXCOMLEN + 1]
COMM_SIZE = 17
PPID = 560  # kp_eproc.e_ppid, int32


def _int(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], "little", signed=True)


def parse_kinfo_proc(data: bytes) -> tuple[int, str, int, int] | None:
    """(pid, command name, parent pid, start time in µs since the epoch) from a
    ``struct kinfo_proc``, or None when it is too short (sysctl returns nothing for a pid
    that does not exist)."""
    if len(data) < KINFO_PROC_SIZE:
        return None
    comm = data[COMM:COMM + COMM_SIZE].split(b"\0", 1)[0].decode("utf-8", "replace")
    started = _int(data, STARTTIME_SEC, 8) * 1_000_000 + _int(data, STARTTIME_USEC, 4)
    return _int(data, PID, 4), comm, _int(data, PPID, 4), started


_sysctl: "Any" = None


def _load() -> "Any":
    global _sysctl
    if _sysctl is None:
        from keyhelper.base import native

        libc = native.load(LIBSYSTEM)
        _sysctl = native.function(libc, "sysctl", native.Int, (
            native.VoidP, native.UInt, native.VoidP, native.VoidP, native.VoidP,
            native.SizeT))
    return _sysctl


def lookup(pid: int) -> tuple[str, int, int] | None:
    try:
        sysctl = _load()
        from keyhelper.base import native

        mib = native.array(native.Int, 4)(CTL_KERN, KERN_PROC, KERN_PROC_PID, pid)
        out = native.buffer(KINFO_PROC_SIZE)
        size = native.SizeT(KINFO_PROC_SIZE)
        if sysctl(mib, 4, out, native.byref(size), None, 0) != 0:
            return None
        info = parse_kinfo_proc(bytes(out)[:size.value])
    except (OSError, AttributeError, TypeError, ValueError):  # no such library or call
        return None
    if info is None or info[0] != pid:
        return None
    return info[1], info[2], info[3]
