"""Issue 10: what leaves the process. Terminal escapes in backend text (finding 7), non-ASCII
names (finding 9), keys longer than Claude Code sends, core dumps, arguments echoed back.

Each test runs the real console script.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from countingcmd import counting_command
from helpers import SCRIPT, keyhelper

from keyhelper import redact
from keyhelper.base import records as kentry

# A command's stderr as an attacker would write it: colour, a window-title change, a bell,
# backspaces and a bidi override (the command backend keeps its last line).
HOSTILE = "\x1b[31mred\x1b]0;owned\x07 \x08\x08\u202eevil"
HOSTILE_SHOWN = r"\x1b[31mred\x1b]0;owned\x07 \x08\x08\u202eevil"


def hostile_command(tmp_path: Path) -> list[str]:
    script = tmp_path / "hostile.py"
    script.write_text(f"import sys\nsys.stderr.write({HOSTILE!r})\n"
                      "sys.exit(3)\n")
    return [sys.executable, str(script)]


def test_backend_text_reaches_the_terminal_escaped(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    argv = hostile_command(tmp_path)
    write_config(f'chain = ["src"]\n[backends.src]\ntype = "command"\ncommand = {argv!r}\n'
                 .replace("'", '"'))
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (f"keyhelper: no key from src\n  src failed: {sys.executable} "
                          f"exited 3: {HOSTILE_SHOWN}\n")
    doctor = keyhelper("doctor")
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("  src:"))
    assert line.startswith(f"  src: failed: {sys.executable} exited 3: {HOSTILE_SHOWN} [")
    verbose = keyhelper("-v")
    for out in (run.stderr, doctor.stdout, doctor.stderr, verbose.stderr):
        assert not any(ch in out for ch in "\x1b\x07\x08\u202e")


def test_printable_keeps_line_breaks_only_when_asked() -> None:
    assert redact.printable("a\x1b[2Jb\nc\td") == "a\\x1b[2Jb\nc\\td"
    assert redact.printable("a\nb", newlines=False) == "a\\nb"
    assert redact.printable("clé ok") == "clé ok"


@pytest.mark.parametrize("cache", ["files", "keyring"])
def test_non_ascii_backend_and_profile_names_are_cached(tmp_path: Path, write_config,
                                                        cache: str, request) -> None:  # type: ignore[no-untyped-def]
    env = request.getfixturevalue("secret_service").env if cache == "keyring" else {}
    counted = counting_command(tmp_path)
    write_config(f'cache = "{cache}"\n[profiles."dév"]\nchain = ["clé"]\n'
                 + counted.toml('"clé"'))
    first = keyhelper("--profile", "dév", env=env)
    second = keyhelper("--profile", "dév", env=env)
    assert (first.returncode, first.stdout, first.stderr) == (0, counted.key + "\n", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, counted.key + "\n", "")
    assert counted.calls == 1


def test_entry_fields_round_trip_any_name() -> None:
    entry = kentry.Entry("k" * 10, "clé,%x y", 1.0, 2.0, 1.5, None, ["VAR_É", "B,C"], "sum")
    data = entry.serialize()
    data.decode("ascii")  # the record is ASCII whatever the names
    parsed = kentry.parse_entry(data)
    assert parsed is not None
    assert (parsed.backend, parsed.env_names) == ("clé,%x y", ("VAR_É", "B,C"))


def key_command(tmp_path: Path, length: int) -> str:
    counted = counting_command(tmp_path, key="k" * length, name=f"len{length}")
    return counted.toml("src")


def test_a_key_longer_than_claude_code_accepts_is_refused(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    write_config('chain = ["src"]\n' + key_command(tmp_path, 16385))
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from src\n  src failed: refused: the key is "
                          "16385 characters long; Claude Code accepts at most 16384\n")


def test_the_longest_key_claude_code_accepts_is_cached(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    counted = counting_command(tmp_path, key="k" * 16384)
    write_config('chain = ["src"]\n' + counted.toml("src"))
    assert keyhelper().stdout == "k" * 16384 + "\n"
    assert keyhelper().stdout == "k" * 16384 + "\n"
    assert counted.calls == 1


LIMITS_SPY = """\
import sys
with open(sys.argv[1], "w") as out:
    out.write(next(l for l in open("/proc/self/limits") if l.startswith("Max core file size")))
print("sk-core-0123456789")
"""


def test_no_core_dumps_once_a_key_is_in_memory(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    """The command backend's child inherits keyhelper's limits: it shows them."""
    (tmp_path / "spy.py").write_text(LIMITS_SPY)
    seen = tmp_path / "limits.txt"
    write_config(f'chain = ["spy"]\n[backends.spy]\ntype = "command"\n'
                 f'command = ["{sys.executable}", "{tmp_path / "spy.py"}", "{seen}"]\n')

    def allow_cores() -> None:  # the caller would let a crash dump core
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)

    run = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=30,
                         preexec_fn=allow_cores, env=dict(os.environ), check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, "sk-core-0123456789\n", "")
    assert seen.read_text().split()[-3:] == ["0", "0", "bytes"]


@pytest.mark.parametrize("argv", [
    ["sk-ant-Typed_By_Mistake_0123"],
    ["--sk-ant-Typed_By_Mistake_0123"],
    ["doctor", "sk-ant-Typed_By_Mistake_0123"],
    ["cache", "sk-ant-Typed_By_Mistake_0123"],
    ["setup", "claude-code", "--scope", "sk-ant-Typed_By_Mistake_0123"],
    ["--backend", "env", "sk-ant-Typed_By_Mistake_0123"],
])
def test_unknown_arguments_are_never_echoed(argv: list[str]) -> None:
    run = keyhelper(*argv)
    assert (run.returncode, run.stdout) == (2, "")
    assert "Typed_By_Mistake" not in run.stderr
    assert "<hidden>" in run.stderr.splitlines()[-1]
