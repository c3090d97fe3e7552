"""Helpers for tests: run the real console script as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SCRIPT = shutil.which("keyhelper", path=os.path.dirname(sys.executable)) or "keyhelper"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def keyhelper(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30,
              input_text: str | None = None, cwd: str | None = None) -> Run:
    """Run the real console script. Its stdin is an open pipe that is never written or
    closed (as Claude Code does), unless ``input_text`` is given."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen([SCRIPT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full_env, text=True, cwd=cwd)
    try:
        if input_text is not None:
            out, err = proc.communicate(input_text, timeout=timeout)
        else:
            # Read to EOF without closing stdin: a helper that reads stdin hangs here.
            out, err = _communicate_keep_stdin(proc, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdin:
            proc.stdin.close()
    return Run(proc.wait(), out, err)


def _communicate_keep_stdin(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    result: dict[str, str] = {}

    def drain(name: str, stream: object) -> None:
        result[name] = stream.read()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            proc.kill()
            raise AssertionError(f"keyhelper did not finish within {timeout} s (reading stdin?)")
    proc.wait(timeout)
    return result.get("out", ""), result.get("err", "")


# A sitecustomize that writes the process's modules to $MODULES_OUT (with $MODULES_PER_PID:
# $MODULES_OUT.<pid>) when it ends: through atexit, or through posix._exit, by which a hit
# leaves once its key is out (keyhelper.console.served).
SITECUSTOMIZE = """\
import atexit, os, posix, sys

def _dump():
    name = os.environ["MODULES_OUT"]
    if os.environ.get("MODULES_PER_PID"):
        name += "." + str(os.getpid())
    with open(name, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))

def _dump_and_exit(code, _exit=posix._exit):
    _dump()
    _exit(code)

atexit.register(_dump)
posix._exit = _dump_and_exit
"""


def loaded(env: dict[str, str], argv: list[str]) -> set[str]:
    run = subprocess.run(argv, stdin=subprocess.PIPE, capture_output=True, text=True,
                         timeout=30, env={**os.environ, **env}, check=False)
    assert run.returncode == 0, run.stderr
    return set(Path(env["MODULES_OUT"]).read_text().split("\n"))
