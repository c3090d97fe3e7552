"""Calling the OS (macOS ``sysctl``, the Windows process API) with the ``_ctypes`` extension
alone: the ``ctypes`` package costs ~2.7 ms to import and ``ctypes.util`` 12 ms more, on the
cache-hit path. The few C types needed are declared here as ``ctypes`` declares them.

Only keyhelper.base.proc_macos and proc_windows import this, and only after the Claude Code
environment check (keyhelper.base.caller).
"""

import _ctypes as _typed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

_ctypes: "Any" = _typed  # typeshed's generic stubs do not fit classes declared at run time


class Int(_ctypes._SimpleCData):  # type: ignore[misc]
    _type_ = "i"


class UInt(_ctypes._SimpleCData):  # type: ignore[misc]
    _type_ = "I"


class VoidP(_ctypes._SimpleCData):  # type: ignore[misc]
    _type_ = "P"


class Char(_ctypes._SimpleCData):  # type: ignore[misc]
    _type_ = "c"


POINTER_SIZE: int = _ctypes.sizeof(VoidP)


class SizeT(_ctypes._SimpleCData):  # type: ignore[misc]
    _type_ = "Q" if POINTER_SIZE == 8 else "I"


byref = _ctypes.byref
sizeof = _ctypes.sizeof
_arrays: "dict[tuple[type, int], type]" = {}


def array(item: type, length: int) -> "Any":
    """The C array type ``item[length]`` (one type per shape, as ctypes caches them)."""
    shape = (item, length)
    if shape not in _arrays:
        _arrays[shape] = type(f"{item.__name__}_Array_{length}", (_ctypes.Array,),
                              {"_type_": item, "_length_": length})
    return _arrays[shape]


def buffer(size: int) -> "Any":
    """A zeroed ``char[size]`` to pass as an out-pointer; ``bytes(...)`` reads it back."""
    return array(Char, size)()


class Library:
    """What ``CFuncPtr((name, library))`` needs: the ``_handle`` of a loaded library."""

    def __init__(self, handle: int):
        self._handle = handle


def load(name: str | None) -> Library:
    """Load a shared library: by path or name on POSIX (``None``: the running program and
    what it links), by name on Windows. Raises OSError when it cannot."""
    if hasattr(_ctypes, "LoadLibrary"):  # Windows
        return Library(_ctypes.LoadLibrary(name))
    return Library(_ctypes.dlopen(name, _ctypes.RTLD_LOCAL | 2))  # RTLD_NOW: fail here


def function(library: Library, name: str, restype: type | None,
             argtypes: "Sequence[type]") -> "Any":
    """The C function ``name`` of ``library`` (the platform's calling convention; errno or
    the last Windows error saved). Raises AttributeError when the library lacks it."""
    flags = getattr(_ctypes, "FUNCFLAG_STDCALL", _ctypes.FUNCFLAG_CDECL)
    flags |= _ctypes.FUNCFLAG_USE_ERRNO | _ctypes.FUNCFLAG_USE_LASTERROR

    class Function(_ctypes.CFuncPtr):  # type: ignore[misc]
        _flags_ = flags
        _restype_ = restype

    bound = Function((name, library))
    bound.argtypes = tuple(argtypes)
    return bound
