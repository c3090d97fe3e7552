"""``command``: the key from another program's stdout (``op read``, ``aws secretsmanager
get-secret-value``, ``gcloud auth print-access-token`` ...).

The command is an argv list run without a shell, with stdin closed (it must not wait for
input), a timeout inside the run's deadline, and its stdout's first line as the key.

It gets a minimal environment, not keyhelper's: that may hold VAULT_TOKEN, an AppRole secret
id, KEYHELPER_API_KEY or whatever a project's settings put there. Only what programs need to
run and find their own files (BASE_ENV), plus the variables named in the ``env`` option.
"""

from __future__ import annotations

import os
import time

from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import BackendError, ConfigError, DeadlineExceeded

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    import subprocess
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, ClassVar
else:
    import _signal  # signal's numbers without its enum (loaded at start already)

MAX_STDERR = 200
_POSIX = os.name == "posix"

# Where programs, their files and the user's agents are (no secret in any of them): op, aws,
# gcloud, pass and security find their configuration from HOME and these. Plus LC_*.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
            "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
            "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS",
            # the network as the user's tools reach it (corporate proxy, its CA)
            "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "https_proxy", "http_proxy",
            "no_proxy", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")
# What a Windows program cannot start or find its profile without.
WINDOWS_ENV = ("SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "COMSPEC", "PATHEXT", "TEMP", "TMP",
               "USERPROFILE", "USERNAME", "USERDOMAIN", "HOMEDRIVE", "HOMEPATH", "APPDATA",
               "LOCALAPPDATA", "PROGRAMDATA", "PROGRAMFILES", "PROGRAMFILES(X86)",
               "COMMONPROGRAMFILES", "PROCESSOR_ARCHITECTURE", "NUMBER_OF_PROCESSORS")
BASE_PREFIXES = ("LC_",)


class CommandBackend(Backend):
    summary = "the first line a command prints (argv list, no shell)"
    options: ClassVar = {
        "command": Option(list, required=True, item_type=str,
                          help='argv, e.g. ["op", "read", "op://vault/item/key"]'),
        "timeout": Option(float, 10.0, help="seconds before the command is killed", min=0,
                          min_exclusive=True, message="expected a positive number of seconds"),
        "env": Option(list, [], item_type=str,
                      help='variables passed besides PATH, HOME, locale ..., e.g. '
                           '["AWS_PROFILE"]'),
    }

    @classmethod
    def validate(cls, options: Mapping[str, Any], *, source: str, key: str) -> dict[str, Any]:
        result = super().validate(options, source=source, key=key)
        program = result["command"][0] if result["command"] else ""
        if os.path.dirname(program) and not os.path.isabs(program):
            # It would be looked up in keyhelper's working directory: the project Claude
            # Code has open, whose files are not to be run.
            raise ConfigError(f"command {program!r} is a relative path; give its absolute "
                              "path, or a name found on PATH", source=source,
                              key=f"{key}.command")
        for name in result["env"]:
            # Names travel in cache entries (comma-separated, one line, ASCII).
            if not name or not all("!" <= ch <= "~" and ch not in "=," for ch in name):
                raise ConfigError(f"not an environment variable name: {name!r}",
                                  source=source, key=f"{key}.env")
        return result

    def watched_env(self) -> tuple[str, ...]:
        """The named variables change what the command prints: the cache is keyed on them."""
        return tuple(self.config["env"])

    def fetch(self) -> Token:
        argv = self.config["command"]
        if not argv:
            raise BackendError("option 'command' is an empty list")
        timeout = self.context.timeout(self.config["timeout"])
        try:
            returncode, stdout, stderr = run(argv, child_env(self.context.env,
                                                             self.config["env"]), timeout)
        except FileNotFoundError:
            raise BackendError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise BackendError(f"command not executable: {argv[0]}") from None
        except TimeoutError:
            raise DeadlineExceeded(f"{argv[0]} did not finish within {timeout:.1f} s") from None
        if returncode != 0:
            err = stderr.decode("utf-8", "replace").strip().splitlines()
            detail = f": {err[-1][:MAX_STDERR]}" if err else ""
            raise BackendError(f"{argv[0]} exited {returncode}{detail}")
        try:
            lines = stdout.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise BackendError(f"{argv[0]} printed something that is not UTF-8") from None
        value = lines[0].strip() if lines else ""
        if not value:
            raise BackendError(f"{argv[0]} printed nothing")
        return Token(value, metadata={"source": argv[0]})


def child_env(env: Mapping[str, str], named: Iterable[str]) -> dict[str, str]:
    """The command's environment: BASE_ENV and LC_* (WINDOWS_ENV too on Windows) and
    ``named``, each as far as ``env`` has it."""
    wanted = {*BASE_ENV, *named, *(WINDOWS_ENV if os.name == "nt" else ())}
    if os.name == "nt":  # names are case-insensitive there
        wanted = {name.upper() for name in wanted}
        return {k: v for k, v in env.items()
                if k.upper() in wanted or k.upper().startswith(BASE_PREFIXES)}
    return {k: v for k, v in env.items() if k in wanted or k.startswith(BASE_PREFIXES)}


def run(argv: Sequence[str], env: Mapping[str, str],
        timeout: float) -> tuple[int, bytes, bytes]:
    """Run ``argv`` (PATH searched in ``env``, as subprocess does) in a session of its own,
    stdin on the null device, no descriptor of ours inherited; its exit code (negative: the
    signal), stdout and stderr. Past ``timeout`` its whole process group is killed and
    TimeoutError raised; FileNotFoundError or PermissionError when it cannot start."""
    if _POSIX and hasattr(os, "posix_spawn"):
        try:
            return _run_spawned(argv, env, timeout)
        except NotImplementedError:  # a libc whose posix_spawn cannot setsid
            pass
    return _run_subprocess(argv, env, timeout)


# Not subprocess on POSIX: importing it (locale, re, enum, threading, selectors) took 3x the
# CPU of an empty `python -I -S` here, and a miss through this backend 1.6x the CPU it takes
# without it (farm-bench, interleaved). os.posix_spawn and select.poll do the same run (as
# keyhelper.base.spawn does for refresh ahead); elsewhere, or when this libc cannot,
# subprocess does it.

def _run_spawned(argv: Sequence[str], env: Mapping[str, str],
                 timeout: float) -> tuple[int, bytes, bytes]:
    deadline = time.monotonic() + timeout
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = None
    try:
        import select

        inherited = _inherited_fds()
        if min(out_r, out_w, err_r, err_w) <= 2 or inherited is None or not hasattr(
                select, "poll"):
            # subprocess copes: no standard streams, no /dev/fd, no poll()
            raise NotImplementedError("cannot spawn it here")
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2),
            # As subprocess's close_fds: e.g. the lock a refresh child holds as fd 3 must not
            # be held on by a daemon the command leaves behind.
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in inherited)]
        # What subprocess's restore_signals puts back: Python ignores SIGPIPE.
        restore = [getattr(_signal, name) for name in ("SIGPIPE", "SIGXFSZ")
                   if hasattr(_signal, name)]
        # As execvp and subprocess: each directory of $PATH in turn; when none can run it,
        # the first error other than "not there" (e.g. not executable) is the one raised.
        first: OSError | None = None
        last: OSError | None = None
        for path in _candidates(argv[0], env):
            try:
                pid = os.posix_spawn(path, list(argv), env, file_actions=actions,
                                     setsid=True, setsigdef=restore)
                break
            except OSError as exc:
                last = exc
                if first is None and not isinstance(exc, FileNotFoundError | NotADirectoryError):
                    first = exc
        if pid is None:
            raise first or last or FileNotFoundError(2, "No such file or directory", argv[0])
    finally:
        os.close(out_w)
        os.close(err_w)
        if pid is None:
            os.close(out_r)
            os.close(err_r)
    try:
        stdout, stderr = _read_both(out_r, err_r, deadline)
        return os.waitstatus_to_exitcode(_wait(pid, deadline)), stdout, stderr
    except BaseException:
        _kill_group(pid)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(out_r)
        os.close(err_r)


def _candidates(program: str, env: Mapping[str, str]) -> list[str]:
    """Where ``program`` may be, in order: itself when it names a directory (absolute:
    validate refuses a relative one), else each absolute directory of the command's $PATH
    holding a file of that name (on Windows with each of $PATHEXT's extensions too). A
    relative entry ("", ".", "bin") is skipped, as Go's exec.LookPath refuses it: it would
    name keyhelper's working directory, the project Claude Code has open."""
    if os.path.dirname(program):
        return [program]
    # os.get_exec_path(env), without the warnings module it imports for a bytes $PATH
    path = _variable(env, "PATH")
    directories = (os.defpath if path is None else path).split(os.pathsep)
    names = [program]
    if not _POSIX and "." not in program:  # pragma: no cover - Windows
        extensions = _variable(env, "PATHEXT") or ".COM;.EXE;.BAT;.CMD"
        names = [program + ext for ext in extensions.split(os.pathsep) if ext]
    paths = (os.path.join(directory, name) for directory in directories
             if os.path.isabs(directory) for name in names)
    return [path for path in paths if os.path.isfile(path)]


def _variable(env: Mapping[str, str], name: str) -> str | None:
    """$name in ``env``; on Windows whatever its case (``Path`` is common there)."""
    if _POSIX:
        return env.get(name)
    return next((value for key, value in env.items() if key.upper() == name), None)


def _inherited_fds() -> list[int] | None:
    """Our descriptors above 2 that a child would inherit; None when they cannot be listed."""
    try:
        names = os.listdir("/dev/fd")
    except OSError:
        return None
    found = []
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:  # the descriptor listdir used, closed since
            pass
    return found


def _read_both(out_r: int, err_r: int, deadline: float) -> tuple[bytes, bytes]:
    """Everything written to both pipes until both close; TimeoutError at the deadline."""
    import select  # loaded by _run_spawned already

    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    open_pipes = len(chunks)
    while open_pipes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        for fd, _ in poller.poll(int(left * 1000) + 1):
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                open_pipes -= 1
    return b"".join(chunks[out_r]), b"".join(chunks[err_r])


def _wait(pid: int, deadline: float) -> int:
    """The wait status of ``pid``; TimeoutError at the deadline. Polls as subprocess's
    wait(timeout) does on POSIX: the pipes are closed, so it has all but exited."""
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, _signal.SIGKILL)
    except ProcessLookupError:  # every one of them is gone already
        return


def _run_subprocess(argv: Sequence[str], env: Mapping[str, str],
                    timeout: float) -> tuple[int, bytes, bytes]:
    import subprocess

    # By its absolute path: Windows' CreateProcess would look in the working directory
    # first. Its own process group, so that a timeout kills what it started too (a shell
    # script's children would otherwise outlive it).
    error: OSError = FileNotFoundError(2, "No such file or directory", argv[0])
    # A path (absolute: validate) as given: Windows adds ".exe" to it, not to executable=.
    found: list[str | None] = [None] if os.path.dirname(argv[0]) else [
        *_candidates(argv[0], env)]
    for index, path in enumerate(found):
        try:
            proc = subprocess.Popen(argv, executable=path, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    start_new_session=_POSIX)
            break
        except OSError as exc:  # as the spawn above: the first one that cannot run says why
            error = exc if index == 0 else error
    else:
        raise error
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        raise TimeoutError from None
    return proc.returncode, stdout, stderr


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and every process of its group, and reap it."""
    if _POSIX:
        _kill_group(proc.pid)
    else:  # pragma: no cover - Windows
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
