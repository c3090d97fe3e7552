"""``command``: the key from another program's stdout (``op read``, ``aws secretsmanager
get-secret-value``, ``gcloud auth print-access-token`` ...).

The command is an argv list run without a shell, with stdin closed (it must not wait for
input), a timeout inside the run's deadline, and its stdout's first line as the key.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import ClassVar

from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import BackendError, DeadlineExceeded

MAX_STDERR = 200
_POSIX = os.name == "posix"


class CommandBackend(Backend):
    summary = "the first line a command prints (argv list, no shell)"
    options: ClassVar = {
        "command": Option(list, required=True, item_type=str,
                          help='argv, e.g. ["op", "read", "op://vault/item/key"]'),
        "timeout": Option(float, 10.0, help="seconds before the command is killed"),
    }

    def fetch(self) -> Token:
        argv = self.config["command"]
        if not argv:
            raise BackendError("option 'command' is an empty list")
        timeout = self.context.timeout(self.config["timeout"])
        try:
            # Its own process group, so that a timeout kills what it started too (a shell
            # script's children would otherwise outlive it).
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=dict(self.context.env),
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


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and every process of its group, and reap it."""
    try:
        if _POSIX:
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
