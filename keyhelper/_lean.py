"""The cache-hit path: everything a hit needs, and nothing more.

A hit must cost about one interpreter start, so this module imports only ``os``, ``sys``,
``time`` and the sha256 primitive: no click, json, argparse, logging, pathlib, tomllib,
importlib.metadata or backend library (tests/test_hot_path.py guards the list). It finds
the entry from the selection arguments and the config file's identity, never by parsing
TOML; on any doubt it answers "miss" and the full path takes over. The full path uses the
same functions to name and read entries, so both paths agree by construction.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from hashlib import sha256
    from typing import Literal

    Privacy = Literal["always", "own", "never"]
else:
    try:  # the bare primitive costs 0.4 ms to import; hashlib costs 5 ms
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - Python 3.12+ or unusual builds
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256

APP = "keyhelper"
ENTRY_FORMAT = "keyhelper-cache 1"
MAX_ENTRY_BYTES = 65536
MAX_KEY_CHARS = 16384  # the longest key Claude Code sends (as keyhelper.redact)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_POSIX = os.name == "posix"
# The administrator's policy (keyhelper/policy.py): a fixed place, never from the environment.
if sys.platform == "darwin":
    POLICY_PATH = "/Library/Application Support/keyhelper/policy.toml"
elif os.name == "nt":
    POLICY_PATH = "C:\\ProgramData\\keyhelper\\policy.toml"
else:
    POLICY_PATH = "/etc/keyhelper/policy.toml"


class Selection:
    """What the command line selects: the chain and where its configuration lives."""

    __slots__ = ("backends", "config", "no_cache", "profile", "verbose")

    def __init__(self, backends: Sequence[str] = (), profile: str | None = None,
                 config: str | None = None, no_cache: bool = False, verbose: bool = False):
        self.backends = tuple(backends)
        self.profile = profile
        self.config = config
        self.no_cache = no_cache
        self.verbose = verbose


_VALUE_OPTIONS = {"--backend": "backends", "-b": "backends", "--profile": "profile",
                  "-p": "profile", "--config": "config", "-c": "config"}


def parse_get_args(argv: Sequence[str]) -> Selection | None:
    """Parse a plain get (``keyhelper [selection options]``); None for anything else."""
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
                     flags["no_cache"], flags["verbose"])


# --- where things live (one small portable interface) -------------------------------------

def home() -> str:
    return os.path.expanduser("~")


def config_path(selection: Selection, env: Mapping[str, str]) -> tuple[str, bool]:
    """The config file to read, and whether it was named explicitly (then it must exist).

    --config, else $KEYHELPER_CONFIG, else $XDG_CONFIG_HOME/keyhelper/config.toml,
    else ~/.config/keyhelper/config.toml (on Windows %APPDATA%\\keyhelper\\config.toml).
    """
    if selection.config:
        return os.path.abspath(os.path.expanduser(selection.config)), True
    if env.get("KEYHELPER_CONFIG"):
        return os.path.abspath(os.path.expanduser(env["KEYHELPER_CONFIG"])), True
    if _absolute(env, "XDG_CONFIG_HOME"):
        base = env["XDG_CONFIG_HOME"]
    elif os.name == "nt" and _absolute(env, "APPDATA"):
        base = env["APPDATA"]
    else:
        base = os.path.join(home(), ".config")
    return os.path.join(base, APP, "config.toml"), False


def cache_dir(env: Mapping[str, str]) -> str:
    """$KEYHELPER_CACHE_DIR, else $XDG_RUNTIME_DIR/keyhelper (Linux: per-user tmpfs),
    else $XDG_CACHE_HOME/keyhelper, else the platform's user cache directory."""
    if env.get("KEYHELPER_CACHE_DIR"):
        return os.path.abspath(env["KEYHELPER_CACHE_DIR"])
    for var in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME"):
        if _absolute(env, var):
            return os.path.join(env[var], APP)
    if sys.platform == "darwin":
        return os.path.join(home(), "Library", "Caches", APP)
    if os.name == "nt" and _absolute(env, "LOCALAPPDATA"):
        return os.path.join(env["LOCALAPPDATA"], APP, "cache")
    return os.path.join(home(), ".cache", APP)


def _absolute(env: Mapping[str, str], var: str) -> bool:
    """Whether $var is set to an absolute path. The XDG base directory spec: a relative
    path "should be considered invalid and ignored" (it would mean the caller's cwd, such
    as a cloned project)."""
    return os.path.isabs(env.get(var) or "")


def file_identity(path: str) -> str:
    """Changes whenever the file is edited or replaced, or its owner or mode changes (a
    config made unsafe is then a miss, and the full path refuses it), without reading it."""
    try:
        st = os.stat(path)
    except OSError:
        return "absent"
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_mode}:{st.st_uid}"


def entry_key(selection: Selection, env: Mapping[str, str]) -> str:
    """Names the cache entry of a selection: its arguments plus the identities of its config
    file and of the administrator's policy (a policy change takes effect on the next call).

    Derived from names and file metadata only, never from a secret.
    """
    path, _ = config_path(selection, env)
    parts = ["v1", "\x1f".join(selection.backends), selection.profile or "", path,
             file_identity(path), file_identity(POLICY_PATH)]
    return sha256("\x00".join(parts).encode()).hexdigest()[:32]


def env_digest(names: Sequence[str], env: Mapping[str, str]) -> str:
    text = "\x00".join(f"{name}={env.get(name, chr(0))}" for name in names)
    return sha256(text.encode()).hexdigest()[:32]


# --- entries ------------------------------------------------------------------------------

class Entry:
    """One cached key and its times (epoch seconds)."""

    __slots__ = ("backend", "env_names", "envsum", "expires", "extra", "key", "refresh",
                 "stored", "token_expires")

    def __init__(self, key: str, backend: str, stored: float, expires: float, refresh: float,
                 token_expires: float | None, env_names: Sequence[str], envsum: str,
                 extra: Mapping[str, str] | None = None):
        self.key = key
        self.backend = backend
        self.stored = stored
        self.expires = expires
        self.refresh = refresh
        self.token_expires = token_expires
        self.env_names = tuple(env_names)
        self.envsum = envsum
        # Further single-line fields (no spaces in names), e.g. the audit log's target.
        self.extra = dict(extra or {})

    def serialize(self) -> bytes:
        token_expires = "-" if self.token_expires is None else repr(self.token_expires)
        names = ",".join(quote_field(name) for name in self.env_names)
        lines = [ENTRY_FORMAT, f"backend {quote_field(self.backend)}", f"stored {self.stored!r}",
                 f"expires {self.expires!r}", f"refresh {self.refresh!r}",
                 f"token_expires {token_expires}", f"env_names {names}",
                 f"envsum {self.envsum}"]
        lines += [f"x-{name} {value}" for name, value in sorted(self.extra.items())]
        lines += [f"key {self.key}", ""]
        return "\n".join(lines).encode()

    def matches_env(self, env: Mapping[str, str]) -> bool:
        return env_digest(self.env_names, env) == self.envsum


def parse_entry(data: bytes) -> Entry | None:
    """An entry from its bytes, or None if anything is off (a corrupt entry is a miss)."""
    try:
        lines = data.decode("ascii").split("\n")
        if lines[0] != ENTRY_FORMAT or lines[-1] != "":
            return None
        fields = dict(line.partition(" ")[::2] for line in lines[1:-1])
        key = fields["key"]
        if not sendable(key):
            return None
        token_expires = None if fields["token_expires"] == "-" else _finite(fields["token_expires"])
        names = [unquote_field(n) for n in fields["env_names"].split(",") if n]
        extra = {k[2:]: v for k, v in fields.items() if k.startswith("x-")}
        return Entry(key, unquote_field(fields["backend"]), _finite(fields["stored"]),
                     _finite(fields["expires"]), _finite(fields["refresh"]), token_expires,
                     names, fields["envsum"], extra)
    except (UnicodeDecodeError, KeyError, ValueError, IndexError):
        return None


def sendable(key: str) -> bool:
    """Printable ASCII without spaces, 16,384 characters at most: what Claude Code can send
    as a key (keyhelper.redact.invalid_key_reason says why not)."""
    return 0 < len(key) <= MAX_KEY_CHARS and all("!" <= ch <= "~" for ch in key)


def quote_field(text: str) -> str:
    """A name as a field of an ASCII record: printable ASCII, "%XX" for any other byte
    (and for "%" and ","): backend, profile and variable names may be any Unicode."""
    data = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 0x21 <= b < 0x7F and b not in (0x25, 0x2C) else f"%{b:02X}"
                   for b in data)


def unquote_field(text: str) -> str:
    """The inverse of :func:`quote_field`; ValueError on a malformed escape."""
    parts = text.split("%")
    data = bytearray(parts[0].encode("ascii"))
    for part in parts[1:]:
        if len(part) < 2:
            raise ValueError(text)
        data.append(int(part[:2], 16))
        data += part[2:].encode("ascii")
    return data.decode("utf-8", "surrogateescape")


def _finite(text: str) -> float:
    """A time from an entry; inf or nan would make an entry fresh forever."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def safe_dir(path: str) -> str | None:
    """Why ``path`` may not hold keys (a symlink, another owner, open to others), or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if not _is_dir(st.st_mode):
        return "it is a symlink or not a directory"
    if _POSIX and st.st_uid != os.getuid():
        return "it is owned by another user"
    if _POSIX and st.st_mode & 0o077:
        return f"its mode is {st.st_mode & 0o777:o}, not 700"
    return None


def _is_dir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def read_file_private(path: str, dir_fd: int | None = None) -> bytes | None:
    """Read a private file: no symlink, regular, one name, ours, 0600 at most. None when not.

    The checks are made with fstat on the descriptor that is read, so nothing can be
    swapped between check and use; with ``dir_fd`` the name is looked up in that directory.
    keyhelper writes these files by rename, so each has one name: a second one (a hard
    link) was not made by keyhelper.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0),
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000:
            return None
        if _POSIX and (st.st_uid != os.getuid() or st.st_mode & 0o077 or st.st_nlink != 1):
            return None
        return os.read(fd, MAX_ENTRY_BYTES)
    finally:
        os.close(fd)


def entry_path(directory: str, key: str) -> str:
    return os.path.join(directory, key + ".entry")


def open_private_dir(path: str) -> int | None:
    """A descriptor on ``path`` if it is a real directory (not a symlink), ours and 0700.

    Entries are then opened relative to it, so the directory checked is the one read from
    (no window to swap it for a symlink between the check and the open). None when unsafe,
    or where the OS cannot open directories (Windows: then ``safe_dir`` alone guards).
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    st = os.fstat(fd)
    if not _is_dir(st.st_mode) or (_POSIX and (st.st_uid != os.getuid() or st.st_mode & 0o077)):
        os.close(fd)
        return None
    return fd


_DIR_FD = os.open in getattr(os, "supports_dir_fd", set())


def read_private_files(directory: str, names: Sequence[str]) -> list[bytes | None]:
    """Private files of the cache directory (None for each one missing or unsafe), with
    the directory checked once and every file opened relative to it."""
    if not _DIR_FD:
        if safe_dir(directory) is not None:
            return [None] * len(names)
        return [read_file_private(os.path.join(directory, name)) for name in names]
    dir_fd = open_private_dir(directory)
    if dir_fd is None:
        return [None] * len(names)
    try:
        return [read_file_private(name, dir_fd=dir_fd) for name in names]
    finally:
        os.close(dir_fd)


def read_in_private_dir(directory: str, name: str) -> bytes | None:
    """A private file of the cache directory, if directory and file are safe, else None."""
    return read_private_files(directory, [name])[0]


def read_entry(directory: str, key: str) -> Entry | None:
    data = read_in_private_dir(directory, key + ".entry")
    return None if data is None else parse_entry(data)


# --- the route: env and file keys read on the hit path, never cached -----------------------
# A chain that starts with env or file backends has its key read straight from there. The
# full path records those first steps (names of variables and files, never a key) in a
# route file; the hit path follows it and hands over to the full path on any doubt, which
# then decides and reports exactly as it would have.

ROUTE_FORMAT = "keyhelper-route 1"
ROUTE_KINDS = ("env", "file")
NEXT = ""  # a step that found nothing: go on (the backend would have skipped)


def route_path(directory: str, key: str) -> str:
    return os.path.join(directory, key + ".route")


def serialize_route(steps: Sequence[tuple[str, str]]) -> bytes:
    return "\n".join([ROUTE_FORMAT, *(f"{kind} {arg}" for kind, arg in steps), ""]).encode()


def parse_route(data: bytes) -> list[tuple[str, str]] | None:
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if lines[0] != ROUTE_FORMAT or lines[-1] != "":
        return None
    steps = []
    for line in lines[1:-1]:
        kind, _, arg = line.partition(" ")
        if kind not in ROUTE_KINDS or not arg:
            return None
        steps.append((kind, arg))
    return steps


MISSING = "does not exist"
MAX_SYMLINKS = 8


def read_user_file(path: str, private: Privacy = "always") -> tuple[bytes | None, str]:
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
        st = os.fstat(fd)
        why = _user_file_problem(st, path, private)
        return (None, why) if why else (_read_all(fd), "")
    finally:
        os.close(fd)


def _open_user_file(path: str) -> tuple[int | None, str]:
    flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    for _ in range(MAX_SYMLINKS + 1):
        try:
            return os.open(path, flags), ""
        except FileNotFoundError:
            return None, MISSING
        except OSError as exc:
            try:
                st = os.lstat(path)
                if (st.st_mode & 0o170000) != 0o120000:
                    return None, f"cannot be opened ({exc.strerror})"
                if _POSIX and st.st_uid not in (os.getuid(), 0):
                    return None, "is a symlink owned by another user"
                target = os.readlink(path)
                again = os.lstat(path)  # the link read is the link checked (links never change)
            except OSError as err:
                return None, f"cannot be opened ({err.strerror})"
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                return None, "changed while it was read"
            path = os.path.join(os.path.dirname(path), target)
    return None, "cannot be opened (too many levels of symbolic links)"


def _user_file_problem(st: os.stat_result, path: str, private: Privacy) -> str:
    if (st.st_mode & 0o170000) != 0o100000:
        return "is not a regular file"
    if not _POSIX:
        return ""
    mine = st.st_uid == os.getuid()
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
    """Up to one byte past MAX_ENTRY_BYTES, so that a caller can tell an oversized file."""
    chunks = []
    size = 0
    while size <= MAX_ENTRY_BYTES:
        chunk = os.read(fd, MAX_ENTRY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _key_file_line(path: str) -> str | None:
    """As the file backend reads it: NEXT if missing, None on anything it would refuse."""
    data, why = read_user_file(os.path.expanduser(path))
    if data is None:
        return NEXT if why == MISSING else None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    return (lines[0].strip() if lines else "") or None


def follow_route(data: bytes | None, env: Mapping[str, str]) -> str | None:
    """The key from the route's steps (``data``: the route file, None if there is none);
    NEXT when they found none; None when the full path must decide (a value it would
    refuse, an unreadable file)."""
    steps = parse_route(data) if data is not None else []
    if steps is None:
        return None
    for kind, arg in steps:
        raw = env.get(arg) if kind == "env" else None
        value = (raw.strip() if raw else NEXT) if kind == "env" else _key_file_line(arg)
        if value is None:
            return None
        if value != NEXT:
            return value if sendable(value) else None
    return NEXT


DEFAULT_CLAUDE_TTL = 300.0
# A repeat call from the same Claude Code process sooner than this share of its own TTL means
# the key it was given was rejected (Claude re-runs the helper on 401/403).
REPEAT_WINDOW = 0.9


def claude_ttl(env: Mapping[str, str]) -> float | None:
    """CLAUDE_CODE_API_KEY_HELPER_TTL_MS in seconds; a non-numeric value is ignored, as
    Claude Code ignores it."""
    raw = env.get("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw) / 1000
    return None


def marker_path(directory: str, key: str, caller: str) -> str:
    return os.path.join(directory, f"{key}.{caller}.served")


def read_marker(path: str) -> tuple[float, float] | None:
    """(stored time of the entry served, when it was served) to one Claude Code process."""
    data = read_file_private(path)
    try:
        stored, served = (data or b"").decode("ascii").split()
        return float(stored), float(served)
    except ValueError:
        return None


def write_marker(path: str, stored: float, now: float) -> None:
    """Remember what this caller was served. Best effort: a lost marker costs nothing, and
    a failed write leaves no temp file behind."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        try:
            os.write(fd, f"{stored!r} {now!r}".encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:  # noqa: SIM105 - contextlib is not imported on the hit path
            os.unlink(tmp)
        except OSError:
            pass


def rejected(entry: Entry, marker: tuple[float, float] | None, env: Mapping[str, str],
             now: float) -> bool:
    """True when this caller was already served this very entry, within its own TTL:
    Claude Code asks again that soon only after the gateway refused the key."""
    if marker is None:
        return False
    stored, served = marker
    window = REPEAT_WINDOW * (claude_ttl(env) or DEFAULT_CLAUDE_TTL)
    return stored == entry.stored and 0 <= now - served < window


def try_hit(selection: Selection, env: Mapping[str, str],
            argv: Sequence[str] = ()) -> str | None:
    """The key for this selection: from the route's env/file steps (read now), else from a
    fresh cache entry that is safe to serve; None hands over to the full path.

    A miss (None) also when the calling Claude Code process is asking again for the key it
    was just given: the full path then fetches anew, rate-limited, under the lock.
    """
    directory = cache_dir(env)
    key = entry_key(selection, env)
    route, data = read_private_files(directory, [key + ".route", key + ".entry"])
    routed = follow_route(route, env)
    if routed != NEXT:
        return routed
    entry = parse_entry(data) if data is not None else None
    if entry is None or not entry.matches_env(env):
        return None
    now = time.time()
    if not entry.stored <= now < entry.expires:
        return None
    marker = None
    if entry.extra.get("rotation") != "off" and "CLAUDE_CODE_ENTRYPOINT" in env:
        from keyhelper import _caller  # only Claude Code's calls need to know the caller

        caller = _caller.caller_id(env)
        if caller is not None:
            marker = marker_path(directory, key, caller)
            if rejected(entry, read_marker(marker), env, now):
                return None
    if now >= entry.refresh:
        from keyhelper import _background

        _background.spawn_refresh(directory, key, entry.stored, argv)
    if marker is not None:
        write_marker(marker, entry.stored, now)
    if "audit" in entry.extra or "audit_syslog" in entry.extra:
        from keyhelper import _audit_lean

        _audit_lean.append_hit(entry, selection, env)
    return entry.key
