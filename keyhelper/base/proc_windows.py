"""A process's name, parent and start time on Windows, through one
``OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION)`` handle (as psutil does; a toolhelp
snapshot lists every process and is ~60x slower):

- parent: ``NtQueryInformationProcess(ProcessBasicInformation)``,
  ``InheritedFromUniqueProcessId`` (kept when the parent exits: its pid may be reused, which
  the walk in keyhelper.base.caller catches by start time);
- start: ``GetProcessTimes``, the creation FILETIME (100 ns units since 1601);
- name: ``QueryFullProcessImageNameW``, the image's file name, lower case, without ``.exe``.

Parsing is kept apart from the calls, so that it is tested on any OS with packed buffers;
the offsets are pinned in tests/base/test_proc.py.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Launchers between Claude Code and us: cmd.exe runs the command (``%ComSpec% /d /s /c``),
# a console script's keyhelper.exe starts python.exe as its child, and so do py.exe and a
# virtual environment's python.exe (it starts the base interpreter). Claude Code itself is
# claude.exe or node.exe.
SKIP = frozenset({"cmd", "powershell", "pwsh", "keyhelper", "py", "pyw", "python",
                  "pythonw", "python3"})
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
PROCESS_BASIC_INFORMATION = 0  # the information class
NAME_CHARS = 1024


def basic_information_size(pointer_size: int) -> int:
    """``sizeof(PROCESS_BASIC_INFORMATION)``: six pointer-sized fields (ExitStatus and
    BasePriority are 32-bit, padded to a pointer on 64-bit)."""
    return 6 * pointer_size


def parse_basic_information(data: bytes, pointer_size: int) -> tuple[int, int] | None:
    """(UniqueProcessId, InheritedFromUniqueProcessId): the 5th and 6th fields."""
    if len(data) < basic_information_size(pointer_size):
        return None
    pid = int.from_bytes(data[4 * pointer_size:5 * pointer_size], "little")
    ppid = int.from_bytes(data[5 * pointer_size:6 * pointer_size], "little")
    return pid, ppid


def parse_filetime(data: bytes) -> int:
    """A FILETIME (dwLowDateTime, dwHighDateTime) as one 64-bit count of 100 ns."""
    return int.from_bytes(data[:8], "little")


def parse_image_name(data: bytes, chars: int) -> str:
    """The name of the executable in a full image path (UTF-16, ``chars`` long): lower
    case, without ``.exe``; what the walk compares with its launchers."""
    # "utf-16", not "utf-16-le": decoded without importing a codec module (every Windows
    # is little-endian, and a path starts with no byte-order mark).
    path = data[:2 * chars].decode("utf-16", "replace")
    name = path.rsplit("\\", 1)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


class _Api:
    def __init__(self) -> None:
        from keyhelper.base import native

        kernel32, ntdll = native.load("kernel32"), native.load("ntdll")
        handle, dword, pointer = native.VoidP, native.UInt, native.VoidP
        self.open = native.function(kernel32, "OpenProcess", handle, (dword, native.Int, dword))
        self.close = native.function(kernel32, "CloseHandle", native.Int, (handle,))
        self.query = native.function(ntdll, "NtQueryInformationProcess", native.Int,
                                     (handle, native.Int, pointer, native.UInt, pointer))
        self.times = native.function(kernel32, "GetProcessTimes", native.Int,
                                     (handle, pointer, pointer, pointer, pointer))
        self.image = native.function(kernel32, "QueryFullProcessImageNameW", native.Int,
                                     (handle, dword, pointer, pointer))
        self.native = native


_api: "_Api | None" = None


def lookup(pid: int) -> tuple[str, int, int] | None:
    global _api
    try:
        api = _api = _api or _Api()
        native: Any = api.native
        handle = api.open(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid)
        if not handle:
            return None
        try:
            size = basic_information_size(native.POINTER_SIZE)
            basic, returned = native.buffer(size), native.UInt(0)
            if api.query(handle, PROCESS_BASIC_INFORMATION, basic, size,
                         native.byref(returned)) != 0:
                return None
            created, *others = (native.buffer(8) for _ in range(4))
            if not api.times(handle, created, *others):
                return None
            name, chars = native.buffer(2 * NAME_CHARS), native.UInt(NAME_CHARS)
            if not api.image(handle, 0, name, native.byref(chars)):
                return None
        finally:
            api.close(handle)
    except (OSError, AttributeError, TypeError, ValueError):  # no such library or call
        return None
    ids = parse_basic_information(bytes(basic), native.POINTER_SIZE)
    if ids is None or ids[0] != pid:
        return None
    return parse_image_name(bytes(name), chars.value), ids[1], parse_filetime(bytes(created))
