"""Windows, for real, under wine (tests/support/wine.py; scripts/install-wine): the official
embeddable CPython 3.13 for Windows runs keyhelper from this checkout through a
console-script launcher ``keyhelper.exe`` as pip writes it, started the way Claude Code
starts its helper: ``%ComSpec% /d /s /c "<apiKeyHelper>"`` from claude.exe.

What wine shows faithfully: the process API (parent pids, creation times, image names),
cmd.exe's and the launcher's process chains, msvcrt.locking's byte ranges, which Windows
handles a new process inherits. What it does not model: job objects (breakaway is staged
below), ACLs (mapped onto Unix modes), the Unix stderr every wine process keeps
(tests/support/wine.py), and timing (every figure here is wine's, not Windows').
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import wine
from wine import CLAUDE_ENV, Windows, windows_path

from keyhelper.base import records

pytestmark = pytest.mark.wine


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Windows]:
    if not wine.installed():
        pytest.fail("wine and the Windows Python are missing: run scripts/install-wine")
    found = wine.prepare(tmp_path_factory.mktemp("windows"))
    wine.start_server(found)
    yield found


KEY = "sk-test-wine-0123456789"
BACKEND = """\
import sys, pathlib
counter = pathlib.Path(sys.argv[1])
with counter.open("a") as out:
    out.write("call\\n")
gate = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else None
if gate is not None:  # the test decides when the backend answers
    import time
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
print(sys.argv[3] if len(sys.argv) > 3 else {key!r} + "-" + str(len(counter.read_text().split())))
"""
# Claude Code's stand-in: prints its own identity as the walk should find it, then runs
# the command line (argv[2]) argv[1] times through the shell as Claude Code does, and
# prints what each run printed, as JSON.
CLAUDE = """\
import json, os, subprocess, sys
from keyhelper.base import proc_windows
print(f"{os.getpid()}-{proc_windows.lookup(os.getpid())[2]}", flush=True)
env = {**os.environ, "AI_AGENT": sys.argv[3], "CLAUDE_CODE_ENTRYPOINT": "cli"}
for _ in range(int(sys.argv[1])):
    run = subprocess.run(f'cmd /d /s /c "{sys.argv[2]}"', env=env, capture_output=True,
                         stdin=subprocess.DEVNULL, text=True, timeout=120)
    print(json.dumps([run.returncode, run.stdout, run.stderr]), flush=True)
"""


class Setup:
    """A config whose chain is one counting ``command`` backend (a Windows python.exe),
    and this test's own cache directory."""

    def __init__(self, windows: Windows, tmp_path: Path, gate: bool = False):
        self.windows = windows
        self.counter = tmp_path / "calls"
        self.gate = tmp_path / "gate"
        self.cache = tmp_path / "cache"
        backend = windows.script(f"backend-{tmp_path.name}.py", BACKEND.format(key=KEY))
        argv = [windows_path(windows.python), "-X", "utf8", backend,
                windows_path(self.counter)]
        if gate:
            argv.append(windows_path(self.gate))
        self.config = tmp_path / "config.toml"
        self.config.write_text('chain = ["src"]\n[backends.src]\ntype = "command"\n'
                               f"command = {json.dumps(argv)}\n")
        self.helper = f'"{windows_path(windows.launcher)}" --config "{windows_path(self.config)}"'

    @property
    def calls(self) -> int:
        return len(self.counter.read_text().split()) if self.counter.exists() else 0

    def env(self) -> dict[str, str]:
        return {"KEYHELPER_CACHE_DIR": windows_path(self.cache)}

    def keyhelper(self, *args: str | Path, **env: str) -> tuple[int, str, str]:
        run = self.windows.run(self.windows.launcher, "--config", windows_path(self.config),
                               *args, **self.env(), **env)
        return run.returncode, run.stdout, run.stderr

    def claude(self, times: int, command: str | None = None,
               agent: str = CLAUDE_ENV["AI_AGENT"]) -> tuple[str, list[list[object]]]:
        driver = self.windows.script("claude.py", CLAUDE)
        run = self.windows.run(self.windows.claude, "-X", "utf8", driver, str(times),
                               command or self.helper, agent, stderr=False, **self.env())
        assert run.returncode == 0, run.stdout
        identity, *runs = run.stdout.splitlines()
        return identity, [json.loads(line) for line in runs]

    def served(self) -> list[str]:
        return sorted(p.name.split(".")[1] for p in self.cache.glob("*.served"))


def test_the_caller_walk_through_cmd_and_the_launcher(windows: Windows, tmp_path: Path) -> None:
    """claude.exe -> cmd.exe /d /s /c -> keyhelper.exe -> python.exe: the walk steps past
    cmd and the launcher to claude.exe, by pid and creation time."""
    setup = Setup(windows, tmp_path)
    walk = windows.script("walk.py", (
        "import os\nfrom keyhelper.base import caller, proc_windows\n"
        "names, pid = [], os.getpid()\n"
        "while (info := proc_windows.lookup(pid)) and len(names) < 4:\n"
        "    names.append(info[0]); pid = info[1]\n"
        "print(caller.caller_id(os.environ), *names)\n"))
    python = f'"{windows_path(windows.python)}" -X utf8 "{walk}"'
    for command, chain in [(python, "python cmd claude"),
                           (f"{python} 2>nul", "python cmd claude"),
                           (f"cd . && {python}", "python cmd claude"),
                           (f'cmd /d /s /c "{python}"', "python cmd cmd claude")]:
        identity, runs = setup.claude(1, command)
        assert runs == [[0, f"{identity} {chain}\n", ""]], command
    identity, runs = setup.claude(1, python, agent="cursor")  # not Claude Code: no walk
    assert runs == [[0, "None python cmd claude\n", ""]]


def test_rotation_detection_through_the_real_launcher(windows: Windows, tmp_path: Path) -> None:
    """The Claude Code loop: a key refused (the same claude.exe asks again at once) is
    fetched anew; another Claude Code process is served from the cache."""
    setup = Setup(windows, tmp_path)
    assert setup.keyhelper() == (0, f"{KEY}-1\n", "")  # a person's call fills the cache
    identity, runs = setup.claude(2)
    assert runs == [[0, f"{KEY}-1\n", ""], [0, f"{KEY}-2\n", ""]]
    assert setup.calls == 2
    assert setup.served() == [identity]
    other, runs = setup.claude(1)
    assert runs == [[0, f"{KEY}-2\n", ""]]
    assert setup.calls == 2
    assert setup.served() == sorted([identity, other])


def hit_imports(stderr: str) -> set[str]:
    """Module names from ``-X importtime``."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "imported package" not in line}


def test_a_hit_imports_only_the_lean_path_on_windows(windows: Windows, tmp_path: Path) -> None:
    """The hit's import budget on Windows, measured as on Linux (tests/cache/
    test_hot_path.py) but with ``-X importtime``: python.exe runs the launcher's own zip,
    as keyhelper.exe does, against a zip that imports what pip's launcher script imports
    (re, sys). Under Claude Code the walk loads ``_ctypes``, never ctypes."""
    from hit_path import FORBIDDEN, on_the_hit_path

    setup = Setup(windows, tmp_path)
    assert setup.keyhelper()[0] == 0
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("__main__.py", "import re\nimport sys\n")
    baseline = hit_imports(windows.run(windows.python, "-X", "importtime",
                                       windows_path(empty)).stderr)
    assert "re" in baseline
    plain = windows.run(windows.python, "-X", "importtime", windows.launcher, "--config",
                        windows_path(setup.config), **setup.env())
    assert plain.stdout == f"{KEY}-1\n"
    python = f'"{windows_path(windows.python)}" -X importtime "{windows_path(windows.launcher)}"'
    _, runs = setup.claude(1, f'{python} --config "{windows_path(setup.config)}"')
    [[code, out, err]] = runs
    assert (code, out) == (0, f"{KEY}-1\n")
    assert setup.calls == 1
    plain_extra = hit_imports(plain.stderr) - baseline
    claude_extra = hit_imports(str(err)) - baseline
    for extra in (plain_extra, claude_extra):
        assert not extra & FORBIDDEN, sorted(extra & FORBIDDEN)
        assert all(on_the_hit_path(m) for m in extra if m.startswith("keyhelper")), extra
    assert {"_ctypes", "keyhelper.base.caller", "keyhelper.base.proc_windows",
            "keyhelper.base.native"} <= claude_extra
    assert {m for m in plain_extra if not m.startswith("keyhelper")} <= {
        "_sha256", "_sha2", "msvcrt"}, sorted(plain_extra)
    assert {m for m in claude_extra if not m.startswith("keyhelper")} <= {
        "_sha256", "_sha2", "msvcrt", "_ctypes"}, sorted(claude_extra)


LOCKS = """\
import os, subprocess, sys
from keyhelper.base import lock
path = sys.argv[1]
if sys.argv[2:] == ["try"]:  # a second process: can it take the lock?
    fd, _ = lock.open_lock(path)
    print(lock.try_lock(fd))
    sys.exit(0)
if sys.argv[2:] == ["hold-and-exit"]:
    fd, _ = lock.open_lock(path)
    print(lock.try_lock(fd))
    sys.exit(0)  # no unlock: Windows must drop it with the process

def other():
    return subprocess.run([sys.executable, "-X", "utf8", __file__, path, "try"],
                          capture_output=True, text=True).stdout.strip()

fd, why = lock.open_lock(path)
os.lseek(fd, 5, os.SEEK_SET)  # wherever the descriptor's position is, byte 0 is locked
print(lock.try_lock(fd), other())
lock.unlock(fd)
print(other())
os.lseek(fd, 5, os.SEEK_SET)
print(lock.try_lock(fd), lock.try_lock(os.open(path, os.O_RDWR)), other())
lock.unlock(fd)
print(subprocess.run([sys.executable, "-X", "utf8", __file__, path, "hold-and-exit"],
                     capture_output=True, text=True).stdout.strip(), other())
"""


def test_the_lock_is_byte_zero_and_dies_with_its_process(windows: Windows,
                                                          tmp_path: Path) -> None:
    """msvcrt.locking locks from the descriptor's position: the lock seeks to 0 first
    (without it, a lock taken at position 5 left byte 0 free for another process). A
    process's locks end with it, unlocked or not."""
    script = windows.script("locks.py", LOCKS)
    run = windows.run(windows.python, "-X", "utf8", script, windows_path(tmp_path / "k.lock"))
    assert (run.returncode, run.stdout, run.stderr) == (
        0, "True False\nTrue\nTrue False False\nTrue True\n", "")


ACL = """\
import ctypes, os, sys
from ctypes import wintypes
from keyhelper.base import files
path = sys.argv[1]
files.make_private_dirs(os.path.join(path, "cache"))
advapi = ctypes.WinDLL("advapi32")
DACL = 4
for name in ("", "cache"):
    descriptor, dacl, text = ctypes.c_void_p(), ctypes.c_void_p(), wintypes.LPWSTR()
    assert advapi.GetNamedSecurityInfoW(os.path.join(path, name), 1, DACL, None, None,
                                        ctypes.byref(dacl), None, ctypes.byref(descriptor)) == 0
    assert advapi.ConvertSecurityDescriptorToStringSecurityDescriptorW(
        descriptor, 1, DACL, ctypes.byref(text), None)
    print(sys.version_info[:3], text.value)
"""


@pytest.mark.parametrize(("python", "version", "acl", "mode"), [
    ("python", "(3, 13, 2)", "D:(A;OICI;FA;;;SY)(A;OICI;FA;;;S-1-5-21-0-0-0-1000)", 0o750),
    ("python311", "(3, 11, 9)", "D:(A;OICI;FA;;;SY)(A;OICI;FA;;;S-1-5-21-0-0-0-1000)"
                                "(A;OICI;0x1200a9;;;WD)", 0o755),
])
def test_the_cache_directory_acl_on_a_current_and_an_older_python(
        windows: Windows, tmp_path: Path, python: str, version: str, acl: str,
        mode: int) -> None:
    """keyhelper's directories are made with os.mkdir(path, 0o700). Python 3.13 (and
    3.12.4+, 3.11.10+: CVE-2024-4030) then asks Windows for a protected DACL: SYSTEM,
    Administrators and the owner only. 3.11.9 ignores the mode: the directory gets what its
    parent passes on. Wine keeps no Windows ACL of its own: it maps the one asked for onto
    the Unix mode (0750: nothing for others) and shows that back; 3.11.9's directory gets
    the umask's 0755, which wine shows as readable by Everyone (WD). So this shows which
    ACL each Python asks for, not how Windows enforces it (docs/portability.md)."""
    executable = wine.interpreter(tmp_path, python, windows.home / "site")
    made = tmp_path / "made"
    run = windows.run(executable, "-X", "utf8", windows.script("acl.py", ACL), windows_path(made))
    assert (run.returncode, run.stdout, run.stderr) == (0, f"{version} {acl}\n" * 2, "")
    assert [p.stat().st_mode & 0o777 for p in (made, made / "cache")] == [mode, mode]


def test_refresh_ahead_in_the_background(windows: Windows, tmp_path: Path) -> None:
    """A hit late in its entry's life prints the cached key and returns while a detached
    child fetches the next one: Claude Code's pipes close at once (the child holds none),
    and the child, holding the entry's lock itself, refreshes the entry once."""
    setup = Setup(windows, tmp_path, gate=True)
    setup.gate.touch()
    assert setup.keyhelper() == (0, f"{KEY}-1\n", "")
    setup.gate.unlink()
    [entry_file] = setup.cache.glob("*.entry")
    assert b"\r" not in entry_file.read_bytes()  # binary, not text mode (was CRLF)
    entry = records.parse_entry(entry_file.read_bytes())
    assert entry is not None
    entry.refresh = time.time() - 1  # in its last part of life
    entry_file.write_bytes(entry.serialize())
    _, runs = setup.claude(1)  # returns while the refresh waits at the gate
    assert runs == [[0, f"{KEY}-1\n", ""]]
    deadline = time.monotonic() + 60
    while setup.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the counter file: the child is another OS's process
    assert setup.calls == 2  # the child is fetching, the hit is long done
    setup.gate.touch()
    while b"-2" not in entry_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert setup.keyhelper() == (0, f"{KEY}-2\n", "")
    assert setup.calls == 2


QUOTING = """\
import subprocess, sys
from keyhelper.base.spawn import quote_windows
cases = [["a b", 'say "hi"', "back\\\\slash\\\\", 'x\\\\"y', "", "tab\\there"],
         ["\\\\\\\\srv\\\\share", "end\\\\", "-"]]
for args in cases:
    line = quote_windows([sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))", *args])
    out = subprocess.run(line, capture_output=True, text=True).stdout.strip()
    print(out == repr(args), out)
"""


def test_the_refresh_command_line_round_trips_through_windows(windows: Windows) -> None:
    """spawn.quote_windows as Windows' own argv parsing reads it back."""
    run = windows.run(windows.python, "-X", "utf8", windows.script("quoting.py", QUOTING))
    assert run.stdout.startswith("True "), run.stdout + run.stderr


SPAWN = """\
import _winapi, os, sys
from keyhelper.base import spawn
real, calls = _winapi.CreateProcess, []

def create(app, command, process_attrs, thread_attrs, inherit, flags, env, cwd, info):
    calls.append((flags, inherit, cwd, info.dwFlags, info.lpAttributeList["handle_list"]
                  == [info.hStdInput] == [info.hStdOutput] == [info.hStdError],
                  command.split(" -- ")[0].split(" ", 1)[1]))
    if sys.argv[2] == "fail":  # not a job's denial: no second try
        raise FileNotFoundError(2, "not found", None, 2)
    if flags & spawn.CREATE_BREAKAWAY_FROM_JOB:  # a job without JOB_OBJECT_LIMIT_BREAKAWAY_OK
        raise PermissionError(13, "Access is denied", None, spawn.ERROR_ACCESS_DENIED)
    return real(app, f'"{sys.executable}" -c pass', process_attrs, thread_attrs, inherit,
                flags, env, cwd, info)

_winapi.CreateProcess = create
print(spawn.spawn_refresh(sys.argv[1], "k", 12.5, ["--config", "c.toml"]))
for call in calls:
    print(hex(call[0]), *call[1:])
"""


@pytest.mark.parametrize(("mode", "printed"), [
    ("ok", "True\n0x1000208 True Z:\\ 256 True -I -m keyhelper.refresh --take-lock 12.5\n"
           "0x208 True Z:\\ 256 True -I -m keyhelper.refresh --take-lock 12.5\n"),
    ("fail", "False\n0x1000208 True Z:\\ 256 True -I -m keyhelper.refresh --take-lock 12.5\n"),
])
def test_the_refresh_child_is_created_detached_retrying_inside_the_job(
        windows: Windows, tmp_path: Path, mode: str, printed: str) -> None:
    """What the hit asks CreateProcess for: DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP |
    CREATE_BREAKAWAY_FROM_JOB, then without the breakaway when the job denies it (wine has
    no jobs: the denial is staged by wrapping _winapi.CreateProcess), the standard handles
    on one inheritable NUL handle and nothing else inherited, the drive's root as working
    directory, and the child's isolated command line. Any other failure: no refresh."""
    script = windows.script("spawn.py", SPAWN)
    run = windows.run(windows.python, "-X", "utf8", script, windows_path(tmp_path), mode)
    assert (run.returncode, run.stdout, run.stderr) == (0, printed, "")


def test_a_command_by_name_is_found_on_the_absolute_path(windows: Windows,
                                                         tmp_path: Path) -> None:
    """A bare `command[0]` is looked up in the absolute directories of the command's Path
    (whatever its case) with PATHEXT's extensions and started by that absolute path:
    CreateProcess itself would look in the working directory first."""
    tool = windows.python.parent / "mytool.exe"  # beside python.exe: its DLLs are there
    tool.write_bytes(windows.python.read_bytes())
    config = tmp_path / "config.toml"
    argv = ["mytool", "-c", "import sys; print('sk-' + sys.executable.rsplit(chr(92))[-1])"]
    config.write_text(f'[backends.src]\ntype = "command"\ncommand = {json.dumps(argv)}\n')
    run = windows.run(windows.launcher, "--config", windows_path(config), "--no-cache",
                      "-b", "src", KEYHELPER_CACHE_DIR=windows_path(tmp_path / "cache"),
                      WINEPATH=windows_path(tool.parent))
    assert (run.returncode, run.stdout) == (0, "sk-mytool.exe\n"), run.stderr
