"""Files, in one place: where they live and how they are read and written.

- Where: what the command line selects (``keyhelper [--backend NAME]... [--profile NAME]
  [--config PATH] [--no-cache] [-v]``, parsed without click), the config file, the cache
  directory, the administrator's policy, a file's identity. One small portable interface:
  Linux-only places (XDG_RUNTIME_DIR) have documented fallbacks for macOS and Windows.
- Files of keyhelper's own (cache entries, the route, served markers, failure records,
  backend state): :func:`read_file_private` (no symlink, regular, one name, ours, 0600 at
  most) and :func:`write_private` (atomic: a new 0600 temp file, fsync, rename).
- Files the user keeps (a key file, Vault's credential and TLS files, a JWT signing key):
  :func:`read_user_file`, with the same rules for every backend and for the hit path.
- Directories: :func:`safe_dir`, :func:`open_private_dir`, :func:`make_private_dirs`.

Checks are made with fstat on the descriptor that is read, never on the path before the
open, so nothing can be swapped between check and use; nothing blocks on a FIFO.
"""

import sys

from keyhelper.base import oslite

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from os import stat_result
    from typing import Literal

    Privacy = Literal["always", "own", "never"]

native = oslite.native  # os's calls, without os
MAX_FILE_BYTES = 65536
MISSING = "does not exist"
MAX_SYMLINKS = 8
_NOFOLLOW = getattr(native, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(native, "O_NONBLOCK", 0)
# Windows opens in text mode by default: "\n" written as "\r\n", Ctrl-Z read as the end.
_BINARY = getattr(native, "O_BINARY", 0)
_POSIX = oslite.POSIX
_DIR_FD = oslite.DIR_FD



# --- where things live ------------------------------------------------------------------

class Selection:
    """What the command line selects: the chain and where its configuration lives."""

    __slots__ = ("backends", "config", "no_cache", "profile", "shape", "verbose", "waited")

    def __init__(self, backends: "Sequence[str]" = (), profile: str | None = None,
                 config: str | None = None, no_cache: bool = False, verbose: bool = False,
                 shape: str = ""):
        self.backends = tuple(backends)
        self.profile = profile
        self.config = config
        self.no_cache = no_cache
        self.verbose = verbose
        # "" prints the bare key; else a hook's output shape (keyhelper.base.shapes.SHAPES)
        self.shape = shape
        # Seconds this process already waited on the lean path for another's fetch
        # (keyhelper.cachepolicy.wait_turn): the full path's deadline counts them.
        self.waited = 0.0


# The output shapes of Claude Code's other hooks (keyhelper.base.shapes), given as a command.
SHAPE_COMMANDS = ("headers", "aws-credentials", "desktop")
_VALUE_OPTIONS = {"--backend": "backends", "-b": "backends", "--profile": "profile",
                  "-p": "profile", "--config": "config", "-c": "config"}


def parse_get_args(argv: "Sequence[str]") -> "Selection | None":
    """Parse a plain get (``keyhelper [SHAPE] [selection options]``); None for anything else."""
    shape = ""
    if argv and argv[0] in SHAPE_COMMANDS:
        shape, argv = argv[0], argv[1:]
    backends: list[str] = []
    found: dict[str, str] = {}
    flags = {"no_cache": False, "verbose": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUE_OPTIONS and name.startswith("--") and eq:
            pass
        elif arg in _VALUE_OPTIONS and i + 1 < len(argv):
            i += 1
            name, value = arg, argv[i]
        elif arg == "--no-cache":
            flags["no_cache"] = True
            i += 1
            continue
        elif arg in ("-v", "--verbose"):
            flags["verbose"] = True
            i += 1
            continue
        else:
            return None  # a subcommand, --help, a typo: the click CLI handles and reports it
        if not value or value.startswith("-"):
            return None
        field = _VALUE_OPTIONS[name]
        if field == "backends":
            backends.append(value)
        elif field in found:
            return None  # given twice: let the CLI decide
        else:
            found[field] = value
        i += 1
    return Selection(backends, found.get("profile"), found.get("config"),
                     flags["no_cache"], flags["verbose"], shape)


APP = "keyhelper"
# The administrator's policy (keyhelper/policy.py): a fixed place, never from the environment.
if sys.platform == "darwin":
    POLICY_PATH = "/Library/Application Support/keyhelper/policy.toml"
elif not oslite.POSIX:
    POLICY_PATH = "C:\\ProgramData\\keyhelper\\policy.toml"
else:
    POLICY_PATH = "/etc/keyhelper/policy.toml"


def home() -> str:
    return oslite.expanduser("~")


# Paths a caller may give relative to its own directory, or with ~ (besides --config): read
# through absolute_path, and made absolute before anything leaves that directory
# (keyhelper.app.leave_the_project; the refresh child's environment: base.spawn.absolute).
PATH_VARIABLES = ("KEYHELPER_CONFIG", "KEYHELPER_CACHE_DIR")


def absolute_path(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute against the current directory."""
    return oslite.abspath(oslite.expanduser(path))


def safe_cwd() -> str:
    """A working directory that is nobody's project: ``/``; on Windows the root of the
    drive Python runs from."""
    if oslite.POSIX:
        return "/"
    import ntpath

    return ntpath.splitdrive(sys.executable)[0] + "\\"


def config_path(selection: "Selection", env: "Mapping[str, str]") -> tuple[str, bool]:
    """The config file to read, and whether it was named explicitly (then it must exist).

    --config, else $KEYHELPER_CONFIG, else $XDG_CONFIG_HOME/keyhelper/config.toml,
    else ~/.config/keyhelper/config.toml (on Windows %APPDATA%\\keyhelper\\config.toml).
    """
    if selection.config:
        return absolute_path(selection.config), True
    if env.get("KEYHELPER_CONFIG"):
        return absolute_path(env["KEYHELPER_CONFIG"]), True
    if _absolute(env, "XDG_CONFIG_HOME"):
        base = env["XDG_CONFIG_HOME"]
    elif not oslite.POSIX and _absolute(env, "APPDATA"):
        base = env["APPDATA"]
    else:
        base = oslite.join(home(), ".config")
    return oslite.join(base, APP, "config.toml"), False


def cache_dir(env: "Mapping[str, str]") -> str:
    """$KEYHELPER_CACHE_DIR, else $XDG_RUNTIME_DIR/keyhelper (Linux: per-user tmpfs),
    else $XDG_CACHE_HOME/keyhelper, else the platform's user cache directory."""
    if env.get("KEYHELPER_CACHE_DIR"):
        return absolute_path(env["KEYHELPER_CACHE_DIR"])
    for var in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME"):
        if _absolute(env, var):
            return oslite.join(env[var], APP)
    if sys.platform == "darwin":
        return oslite.join(home(), "Library", "Caches", APP)
    if not oslite.POSIX and _absolute(env, "LOCALAPPDATA"):
        return oslite.join(env["LOCALAPPDATA"], APP, "cache")
    return oslite.join(home(), ".cache", APP)


def _absolute(env: "Mapping[str, str]", var: str) -> bool:
    """Whether $var is set to an absolute path. The XDG base directory spec: a relative
    path "should be considered invalid and ignored" (it would mean the caller's cwd, such
    as a cloned project)."""
    return oslite.isabs(env.get(var) or "")


def venv_site_packages(executable: str) -> str | None:
    """The site-packages of the virtualenv ``executable`` belongs to (None outside one),
    for the running Python version: a venv upgraded to another Python has another one.
    keyhelper/launcher.py holds a copy (it runs before keyhelper can be imported)."""
    venv = oslite.dirname(oslite.dirname(executable))
    if not oslite.isfile(oslite.join(venv, "pyvenv.cfg")):
        return None
    if not oslite.POSIX:
        return oslite.join(venv, "Lib", "site-packages")
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return oslite.join(venv, "lib", version, "site-packages")


def file_identity(path: str) -> str:
    """Changes whenever the file is edited or replaced, or its owner or mode changes (a
    config made unsafe is then a miss, and the full path refuses it), without reading it."""
    try:
        st = native.stat(path)
    except OSError:
        return "absent"
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}:{st.st_uid}"


# --- private files ---------------------------------------------------------------------

def safe_dir(path: str) -> str | None:
    """Why ``path`` may not hold keys (a symlink, another owner, open to others), or None."""
    try:
        st = native.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if not oslite.is_dir(st.st_mode):
        return "it is a symlink or not a directory"
    if _POSIX and st.st_uid != native.getuid():
        return "it is owned by another user"
    if _POSIX and st.st_mode & 0o077:
        return f"its mode is {st.st_mode & 0o777:o}, not 700"
    return None


def read_file_private(path: str, dir_fd: int | None = None) -> bytes | None:
    """Read a private file: no symlink, regular, one name, ours, 0600 at most. None when not.

    The checks are made with fstat on the descriptor that is read, so nothing can be
    swapped between check and use; with ``dir_fd`` the name is looked up in that directory.
    keyhelper writes these files by rename, so each has one name: a second one (a hard
    link) was not made by keyhelper.
    """
    try:
        fd = native.open(path, native.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = native.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000:
            return None
        if _POSIX and (st.st_uid != native.getuid() or st.st_mode & 0o077 or st.st_nlink != 1):
            return None
        return native.read(fd, MAX_FILE_BYTES)
    finally:
        native.close(fd)


def open_private_dir(path: str) -> int | None:
    """A descriptor on ``path`` if it is a real directory (not a symlink), ours and 0700.

    Entries are then opened relative to it, so the directory checked is the one read from
    (no window to swap it for a symlink between the check and the open). None when unsafe,
    or where the OS cannot open directories (Windows: then ``safe_dir`` alone guards).
    """
    flags = native.O_RDONLY | getattr(native, "O_DIRECTORY", 0) | _NOFOLLOW
    try:
        fd = native.open(path, flags)
    except OSError:
        return None
    st = native.fstat(fd)
    if not oslite.is_dir(st.st_mode) or (
            _POSIX and (st.st_uid != native.getuid() or st.st_mode & 0o077)):
        native.close(fd)
        return None
    return fd


def read_private_files(directory: str, names: "Sequence[str]") -> list[bytes | None]:
    """Private files of the cache directory (None for each one missing or unsafe), with
    the directory checked once and every file opened relative to it."""
    if not _DIR_FD:
        if safe_dir(directory) is not None:
            return [None] * len(names)
        return [read_file_private(oslite.join(directory, name)) for name in names]
    dir_fd = open_private_dir(directory)
    if dir_fd is None:
        return [None] * len(names)
    try:
        return [read_file_private(name, dir_fd=dir_fd) for name in names]
    finally:
        native.close(dir_fd)


def read_in_private_dir(directory: str, name: str) -> bytes | None:
    """A private file of the cache directory, if directory and file are safe, else None."""
    return read_private_files(directory, [name])[0]


def read_user_file(path: str, private: "Privacy" = "always") -> tuple[bytes | None, str]:
    """A key or credential file the user keeps: (its bytes, "") or (None, why not, to follow
    the path in a message; MISSING when there is no such file).

    The file backend, its mirror on the hit path and Vault's credential files all read
    through here, so they decide alike. Never blocks (a FIFO or device is refused). A
    symlink at the name is followed only if the user or root owns it (another user's
    link could point at any file of ours). The file must be regular, have one name (a hard
    link has no owner to check), be owned by the user or root, and not be writable by
    group or others. ``private``: "always" also refuses any group or other bit; "own"
    only on a file the user owns (root-provisioned files may be shared, as ssh allows);
    "never" (a Kubernetes service-account token is root's, mode 644).
    """
    fd, why = _open_user_file(path)
    if fd is None:
        return None, why
    try:
        st = native.fstat(fd)
        why = _user_file_problem(st, path, private)
        return (None, why) if why else (_read_all(fd), "")
    finally:
        native.close(fd)


def _open_user_file(path: str) -> tuple[int | None, str]:
    flags = native.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY | getattr(native, "O_NOCTTY", 0)
    for _ in range(MAX_SYMLINKS + 1):
        try:
            return native.open(path, flags), ""
        except FileNotFoundError:
            return None, MISSING
        except OSError as exc:
            try:
                st = native.lstat(path)
                if (st.st_mode & 0o170000) != 0o120000:
                    return None, f"cannot be opened ({exc.strerror})"
                if _POSIX and st.st_uid not in (native.getuid(), 0):
                    return None, "is a symlink owned by another user"
                target = native.readlink(path)
                again = native.lstat(path)  # the link read is the link checked (links never change)
            except OSError as err:
                return None, f"cannot be opened ({err.strerror})"
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                return None, "changed while it was read"
            path = oslite.join(oslite.dirname(path), target)
    return None, "cannot be opened (too many levels of symbolic links)"


def _user_file_problem(st: "stat_result", path: str, private: "Privacy") -> str:
    if (st.st_mode & 0o170000) != 0o100000:
        return "is not a regular file"
    if not _POSIX:
        return ""
    mine = st.st_uid == native.getuid()
    if not mine and st.st_uid != 0:
        return "is owned by another user"
    if st.st_nlink != 1:
        return f"has {st.st_nlink} hard links (it must have one name)"
    mode = st.st_mode & 0o777
    private_rule = private == "always" or (private == "own" and mine)
    refused = mode & (0o077 if private_rule else 0o022)
    fix = f"chmod 600 {path}" if private_rule else f"chmod go-w {path}"
    if refused & 0o044:
        return f"is readable by group or others (mode {mode:o}); run: {fix}"
    if refused & 0o022:
        return f"is writable by group or others (mode {mode:o}); run: {fix}"
    if refused:
        return f"is open to group or others (mode {mode:o}); run: {fix}"
    return ""


def _read_all(fd: int) -> bytes:
    """Up to one byte past MAX_FILE_BYTES, so that a caller can tell an oversized file."""
    chunks = []
    size = 0
    while size <= MAX_FILE_BYTES:
        chunk = native.read(fd, MAX_FILE_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def write_private(path: str, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically as a 0600 file, whatever the umask: a new temp
    file beside it (``O_EXCL``, never following a link), fsynced when ``durable``, renamed
    over ``path``. A reader sees the old file or the new one, never half of one."""
    directory, name = oslite.split(path)
    tmp = oslite.join(directory, f".{name}.{native.getpid()}.{native.urandom(6).hex()}.tmp")
    flags = native.O_WRONLY | native.O_CREAT | native.O_EXCL | _NOFOLLOW | _BINARY
    fd = native.open(tmp, flags, 0o600)
    try:
        if hasattr(native, "fchmod"):
            native.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[native.write(fd, view):]
        if durable:
            native.fsync(fd)
        native.close(fd)
        fd = -1
        native.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            native.close(fd)
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        native.unlink(path)
    except OSError:
        pass


def make_private_dirs(path: str) -> None:
    """Create ``path`` and each missing parent 0700: os.makedirs gives its mode to the last
    directory only, the parents get the umask's (0777 under umask 000)."""
    missing = []
    while not oslite.lexists(path) and oslite.dirname(path) != path:
        missing.append(path)
        path = oslite.dirname(path)
    for directory in reversed(missing):
        try:
            native.mkdir(directory, 0o700)
        except FileExistsError:  # another process made it first
            pass
