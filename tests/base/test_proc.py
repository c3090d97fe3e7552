"""The per-OS process lookups behind the caller walk: the structures macOS and Windows
return, parsed from buffers packed at the documented offsets (these run on any OS), the
offsets pinned with their source, and the ``_ctypes``-only binding exercised on this OS's C
library. The real calls: Linux here, Windows under wine (tests/portability); macOS cannot
run here (docs/portability.md).
"""

from __future__ import annotations

import ast
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from keyhelper.base import native, proc_macos, proc_windows

ROOT = Path(__file__).resolve().parents[2]


def test_kinfo_proc_offsets_are_pinned_with_their_source() -> None:
    """xnu bsd/sys/sysctl.h (struct kinfo_proc = struct extern_proc kp_proc, struct eproc
    kp_eproc) and bsd/sys/proc.h (struct extern_proc), LP64 on x86_64 and arm64:
    p_un.__p_starttime (struct timeval: int64 tv_sec, int32 tv_usec) at 0, p_pid at 40,
    p_comm[MAXCOMLEN + 1 = 17] at 243, eproc at 296 with e_ppid at 560; 648 bytes in all,
    as golang.org/x/sys/unix ztypes_darwin_{amd64,arm64}.go: SizeofKinfoProc = 0x288."""
    assert (proc_macos.KINFO_PROC_SIZE, proc_macos.STARTTIME_SEC, proc_macos.STARTTIME_USEC,
            proc_macos.PID, proc_macos.COMM, proc_macos.COMM_SIZE, proc_macos.PPID) == (
            0x288, 0, 8, 40, 243, 17, 560)
    assert (proc_macos.CTL_KERN, proc_macos.KERN_PROC, proc_macos.KERN_PROC_PID) == (1, 14, 1)


def test_windows_offsets_are_pinned_with_their_source() -> None:
    """winternl.h PROCESS_BASIC_INFORMATION: ExitStatus, PebBaseAddress, AffinityMask,
    BasePriority, UniqueProcessId, InheritedFromUniqueProcessId, each pointer-sized (48
    bytes on 64-bit, 24 on 32-bit); winnt.h PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
    ProcessBasicInformation = 0; FILETIME = {DWORD low, DWORD high}."""
    assert proc_windows.basic_information_size(8) == 48
    assert proc_windows.basic_information_size(4) == 24
    assert proc_windows.PROCESS_QUERY_LIMITED_INFORMATION == 0x1000
    assert proc_windows.PROCESS_BASIC_INFORMATION == 0


def kinfo_proc(pid: int, comm: bytes, ppid: int, sec: int, usec: int) -> bytes:
    data = bytearray(b"\xa5" * 648)  # junk everywhere else
    struct.pack_into("<qi", data, 0, sec, usec)
    struct.pack_into("<i", data, 40, pid)
    struct.pack_into("17s", data, 243, comm)
    struct.pack_into("<i", data, 560, ppid)
    return bytes(data)


def test_kinfo_proc_parsing() -> None:
    data = kinfo_proc(4242, b"claude", 1, 1_764_550_000, 123_456)
    assert proc_macos.parse_kinfo_proc(data) == (4242, "claude", 1, 1_764_550_000_123_456)
    full = kinfo_proc(7, b"x" * 16, 6, 1, 2)  # MAXCOMLEN characters: no NUL in the field
    assert proc_macos.parse_kinfo_proc(full) == (7, "x" * 16, 6, 1_000_002)
    assert proc_macos.parse_kinfo_proc(data[:647]) is None  # sysctl: no such process
    assert proc_macos.parse_kinfo_proc(b"") is None


@pytest.mark.parametrize("pointer_size", [8, 4])
def test_process_basic_information_parsing(pointer_size: int) -> None:
    fmt = "<iiQQiiQQ" if pointer_size == 8 else "<6I"
    fields = (0x103, 0, 0x7FF0000, 0xF, 8, 0, 4242, 1000) if pointer_size == 8 else (
        0x103, 0x7FF0000, 0xF, 8, 4242, 1000)
    data = struct.pack(fmt, *fields)
    assert len(data) == proc_windows.basic_information_size(pointer_size)
    assert proc_windows.parse_basic_information(data, pointer_size) == (4242, 1000)
    assert proc_windows.parse_basic_information(data[:-1], pointer_size) is None


def test_filetime_and_image_name_parsing() -> None:
    assert proc_windows.parse_filetime(struct.pack("<II", 0x89ABCDEF, 0x01DC5A2B)) == (
        0x01DC5A2B89ABCDEF)
    path = "C:\\Program Files\\Claude\\Claude.EXE"
    raw = path.encode("utf-16-le") + b"\0\0" * 10
    assert proc_windows.parse_image_name(raw, len(path)) == "claude"
    assert proc_windows.parse_image_name("C:\\Windows\\cmd.exe".encode("utf-16-le"), 18) == "cmd"
    assert proc_windows.parse_image_name("node".encode("utf-16-le"), 4) == "node"


def test_the_binding_calls_this_systems_c_library() -> None:
    """The same declarations proc_macos and proc_windows use (a char buffer, an int array,
    a size_t by reference), on this OS's C library: memcpy fills the buffer through them."""
    if sys.platform == "win32":  # pragma: no cover - covered under wine instead
        pytest.skip("tests/portability runs the Windows calls")
    libc = native.load(None)
    memcpy = native.function(libc, "memcpy", native.VoidP,
                             (native.VoidP, native.VoidP, native.SizeT))
    out = native.buffer(16)
    words = native.array(native.Int, 4)(1, 14, 1, 4242)
    memcpy(out, words, 16)
    assert struct.unpack("<4i", bytes(out)) == (1, 14, 1, 4242)
    size = native.SizeT(648)
    memcpy(out, native.byref(size), native.sizeof(size))
    assert int.from_bytes(bytes(out)[:native.POINTER_SIZE], sys.byteorder) == 648
    with pytest.raises(AttributeError):
        native.function(libc, "no_such_function_anywhere", native.Int, ())
    with pytest.raises(OSError):
        native.load("/no/such/library.so")


def test_the_macos_lookup_around_a_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything of proc_macos.lookup but sysctl itself (macOS only): the MIB it asks
    for, the buffer and size it passes, what it makes of the answer."""
    calls: list[list[int]] = []
    answers = {4242: kinfo_proc(4242, b"claude", 1, 100, 5), 77: kinfo_proc(78, b"sh", 1, 1, 1)}

    def sysctl(mib: Any, count: int, out: Any, size_ref: Any, new: None, new_size: int) -> int:
        calls.append([*mib[:count]])
        answer = answers.get(mib[3], b"")
        out[:len(answer)] = answer
        size_ref._obj.value = len(answer)
        return 0

    monkeypatch.setattr(proc_macos, "_sysctl", sysctl)
    assert proc_macos.lookup(4242) == ("claude", 1, 100_000_005)
    assert calls == [[1, 14, 1, 4242]]
    assert proc_macos.lookup(5) is None  # gone: sysctl succeeds with nothing
    assert proc_macos.lookup(77) is None  # the answer is about another pid


def test_native_code_is_loaded_only_after_the_environment_check() -> None:
    """caller imports no proc module at its top; nothing in keyhelper imports ctypes (2.7
    ms) or ctypes.util (12 ms more); proc_linux needs no native code."""
    def top_imports(name: str) -> set[str]:
        tree = ast.parse((ROOT / "keyhelper" / "base" / name).read_text())
        return {alias.name for node in tree.body if isinstance(node, ast.Import)
                for alias in node.names} | {
            node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)}

    assert top_imports("caller.py") == {"keyhelper.base", "sys"}  # oslite: os without os
    assert top_imports("proc_linux.py") == set()
    everything = [ast.parse(p.read_text()) for p in (ROOT / "keyhelper").rglob("*.py")]
    imported = {alias.name for tree in everything for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for tree in everything for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m == "ctypes" or m.startswith("ctypes.")}
