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

from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import BackendError, ConfigError, DeadlineExceeded

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterable, Mapping
    from typing import Any, ClassVar

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
        # Imported here, when a command runs: subprocess brings locale, re, enum, threading
        # (~15 ms here), which no other backend of a miss may need.
        import subprocess

        try:
            # Its own process group, so that a timeout kills what it started too (a shell
            # script's children would otherwise outlive it).
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE,
                                    env=child_env(self.context.env, self.config["env"]),
                                    start_new_session=_POSIX)
        except FileNotFoundError:
            raise BackendError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise BackendError(f"command not executable: {argv[0]}") from None
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise DeadlineExceeded(f"{argv[0]} did not finish within {timeout:.1f} s") from None
        if proc.returncode != 0:
            err = stderr.decode("utf-8", "replace").strip().splitlines()
            detail = f": {err[-1][:MAX_STDERR]}" if err else ""
            raise BackendError(f"{argv[0]} exited {proc.returncode}{detail}")
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


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and every process of its group, and reap it."""
    try:
        if _POSIX:
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
