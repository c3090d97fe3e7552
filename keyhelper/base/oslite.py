"""The operating system without ``os``: the OS's own module (``posix``, or ``nt`` on Windows),
which the interpreter has loaded before it runs anything, and the few path functions
keyhelper needs.

``import os`` costs ~2.5 ms here (``_collections_abc``, ``posixpath``, ``stat``): a third
of what a cache hit may spend over a bare ``python -I -S`` start. keyhelper.base does its
I/O through :data:`native` (the same functions ``os`` re-exports) and its path arithmetic
here. Each function answers the common case exactly as ``os.path`` does and hands anything
unusual (a relative path, ``~user``, a path to normalise, a Windows drive or UNC form) to
``os.path`` itself, imported then: the results are always those of ``os``.
"""

import sys

__all__ = ["DIR_FD", "POSIX", "SEP", "abspath", "dirname", "environ", "expanduser", "getenv",
           "is_dir", "is_regular", "isabs", "isfile", "join", "lexists", "native", "samefile",
           "split"]

# As os.name: by the module this interpreter has (sys.platform may be set by hand, in tests).
if sys.platform == "win32" and "nt" in sys.builtin_module_names:  # pragma: no cover - Windows
    import nt as native

    SEP = "\\"
    SEPS = "\\/"
else:
    import posix as native

    SEP = "/"
    SEPS = "/"
POSIX = SEP == "/"
# ``os.open in os.supports_dir_fd``, as os.py computes it.
DIR_FD = "HAVE_OPENAT" in getattr(native, "_have_functions", ())

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any


class _Environ:
    """``os.environ``'s lookups on the native module's start-up snapshot (the one os copies).
    On POSIX names and values are bytes: only what is looked up is decoded, as os decodes
    it (the filesystem encoding, surrogateescape); on Windows names are case-insensitive,
    kept and looked up upper-cased, as os does."""

    __slots__ = ("_data", "_encoding")

    def __init__(self) -> None:
        self._encoding = sys.getfilesystemencoding()
        self._data: dict[Any, Any] = (
            native.environ if POSIX else {k.upper(): v for k, v in native.environ.items()})

    def _key(self, name: str) -> "Any":
        return name.encode(self._encoding, "surrogateescape") if POSIX else name.upper()

    def _text(self, raw: "Any") -> str:
        return raw.decode(self._encoding, "surrogateescape") if POSIX else raw  # type: ignore[no-any-return]

    def get(self, name: str, default: str | None = None) -> str | None:
        raw = self._data.get(self._key(name))
        return default if raw is None else self._text(raw)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._data

    def keys(self) -> list[str]:
        return [self._text(raw) for raw in self._data]

    def __iter__(self) -> "Iterator[str]":
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._data)


_snapshot: "list[_Environ]" = []


def environ() -> "Mapping[str, str]":
    """``os.environ`` when ``os`` is loaded (the full path, tests: it may have changed),
    else its lookups on the same start-up snapshot (get, ``in``, ``[]``, keys)."""
    os = sys.modules.get("os")
    if os is not None:
        return os.environ  # type: ignore[no-any-return]
    if not _snapshot:
        _snapshot.append(_Environ())
    return _snapshot[0]  # type: ignore[return-value]  # the lookups a Mapping offers


def getenv(name: str) -> str | None:
    return environ().get(name)


def join(path: str, *names: str) -> str:
    """``os.path.join(path, *names)``."""
    for name in names:
        if POSIX:
            if name.startswith("/"):
                path = name
            else:
                path = path + name if not path or path.endswith("/") else path + "/" + name
        else:  # pragma: no cover - Windows
            joined = nt_join(path, name)
            if joined is None:  # drives, roots
                import os

                joined = os.path.join(path, name)
            path = joined
    return path


def split(path: str) -> tuple[str, str]:
    """``os.path.split(path)``."""
    if not POSIX:  # pragma: no cover - Windows
        found = nt_split(path)
        if found is None:
            import os

            found = os.path.split(path)
        return found
    cut = path.rfind("/") + 1
    head, tail = path[:cut], path[cut:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def dirname(path: str) -> str:
    """``os.path.dirname(path)``."""
    return split(path)[0]


def isabs(path: str) -> bool:
    """``os.path.isabs(path)``."""
    return path.startswith("/") if POSIX else nt_isabs(path)


def _normal(path: str) -> bool:
    """Whether ``os.path.normpath`` leaves the absolute ``path`` as it is."""
    if POSIX:
        return (path.startswith("/") and "//" not in path and "/./" not in path
                and "/../" not in path and not path.endswith(("/", "/.", "/..")))
    return nt_normal(path)  # pragma: no cover - Windows


# --- Windows (ntpath) in the common case: a drive-absolute path such as C:\Users\me, or a
# plain name; None (or False) for anything else, which os.path answers. Plain functions, so
# that tests/base/test_oslite.py holds them to ntpath on any OS.

def nt_join(path: str, name: str) -> str | None:
    """``ntpath.join(path, name)`` when ``name`` has no drive or root and ``path`` does not
    end in a separator or a drive."""
    if path and path[-1] not in "\\/:" and name and name[0] not in "\\/" and ":" not in name:
        return path + "\\" + name
    return None


def nt_split(path: str) -> tuple[str, str] | None:
    """``ntpath.split(path)`` for a drive-absolute path written with backslashes."""
    if path[1:3] != ":\\" or "/" in path:
        return None
    drive, rest = path[:2], path[2:]
    cut = rest.rfind("\\") + 1
    head, tail = rest[:cut], rest[cut:]
    return drive + (head.rstrip("\\") or head), tail


def nt_isabs(path: str) -> bool:
    """``ntpath.isabs(path)``: a drive and a root, or UNC (before Python 3.13, a root alone)."""
    head = path[:3].replace("/", "\\")
    root = "\\\\" if sys.version_info >= (3, 13) else "\\"
    return head.startswith(root) or head.startswith(":\\", 1)


def nt_normal(path: str) -> bool:
    """Whether ``ntpath.normpath`` leaves ``path`` as it is: drive-absolute, backslashes,
    no empty, ``.`` or ``..`` part, no trailing separator."""
    return (path[1:3] == ":\\" and path[:1].isalpha() and "/" not in path
            and "\\\\" not in path and "\\.\\" not in path and "\\..\\" not in path
            and not path.endswith(("\\", "\\.", "\\..")))


def abspath(path: str) -> str:
    """``os.path.abspath(path)``."""
    if _normal(path):
        # Windows: os.path.abspath is _getfullpathname(normpath(path)), and normpath is a no-op
        return path if POSIX else native._getfullpathname(path)  # type: ignore[attr-defined]
    import os

    return os.path.abspath(path)


def expanduser(path: str) -> str:
    """``os.path.expanduser(path)``."""
    if not path.startswith("~"):
        return path
    home = getenv("HOME" if POSIX else "USERPROFILE")
    if home is None or (len(path) > 1 and path[1] not in SEPS) or "os" in sys.modules:
        import os  # no such variable (the password database), ~user, or os loaded anyway

        return os.path.expanduser(path)
    if POSIX:
        return (home.rstrip("/") + path[1:]) or "/"
    return home + path[1:]  # pragma: no cover - Windows


def lexists(path: str) -> bool:
    try:
        native.lstat(path)
    except (OSError, ValueError):
        return False
    return True


def is_regular(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def is_dir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def samefile(a: str, b: str) -> bool:
    """``os.path.samefile(a, b)``, False where it would raise."""
    try:
        one, two = native.stat(a), native.stat(b)
    except (OSError, ValueError):
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)


def isfile(path: str) -> bool:
    """``os.path.isfile(path)``."""
    try:
        return is_regular(native.stat(path).st_mode)
    except (OSError, ValueError):
        return False
