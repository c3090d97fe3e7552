"""Many processes at once, backends that hang, and plugins that break.

The single-flight test starts 30 real keyhelper processes on a cold cache. The backend
blocks on a FIFO until the test sees, in /proc, that all 30 processes hold the entry's
lock file open (one fetching, 29 waiting): the contention is certain, not a matter of
timing. Then it lets the backend finish and checks there was exactly one backend call.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from countingcmd import counting_command
from helpers import SCRIPT, SITECUSTOMIZE, keyhelper

from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

PROCESSES = 30
KEY = "sk-ant-Concurrency_0123456789"


def open_files(pid: int) -> set[str]:
    fd_dir = f"/proc/{pid}/fd"
    found = set()
    try:
        names = os.listdir(fd_dir)
    except FileNotFoundError:
        return found
    for name in names:
        try:
            found.add(os.readlink(os.path.join(fd_dir, name)))
        except OSError:
            continue
    return found


def wait_until(condition, what: str, procs: list[subprocess.Popen[str]],
               limit: float = 30.0) -> None:
    """Poll an observable condition (not a fixed sleep); fail early if a process died."""
    give_up = time.monotonic() + limit
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a keyhelper process ended early while waiting for {what}: "
                            f"rc={proc.returncode} stderr={proc.stderr.read()!r}")
        if time.monotonic() > give_up:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_30_processes_on_a_cold_cache_make_one_backend_call(write_config, tmp_path: Path,
                                                           cache_dir: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    source = counting_command(tmp_path, gate=gate)
    # A generous deadline: 30 interpreters start on a small CI machine before the release.
    write_config("deadline = 60\n" + source.toml("vault", timeout=60))
    lock = cache_dir / (kentry.entry_key(Selection(("vault",)), os.environ) + ".lock")

    procs = [subprocess.Popen([SCRIPT, "--backend", "vault"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    try:
        wait_until(lambda: source.calls >= 1, "the backend to start", procs)
        wait_until(lambda: all(str(lock) in open_files(p.pid) for p in procs),
                   "every process to reach the lock", procs)
        assert source.calls == 1
        with open(gate, "w") as release:  # the backend reads to EOF, then prints the key
            release.write("go\n")
        results = []
        for proc in procs:
            returncode = proc.wait(timeout=60)
            assert proc.stdout is not None and proc.stderr is not None
            results.append((returncode, proc.stdout.read(), proc.stderr.read()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
    assert results == [(0, source.key + "\n", "")] * PROCESSES
    assert source.calls == 1




@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_a_cold_burst_waits_on_the_lean_path(write_config, tmp_path: Path,
                                             cache_dir: Path) -> None:
    """Waiting is a hit that has not happened yet: of a burst on a cold entry, only the
    process that fetches imports the full path; the others wait for the lock on the lean
    path and serve the entry it stored."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "modules"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    source = counting_command(tmp_path, gate=gate)
    write_config("deadline = 60\n" + source.toml("vault", timeout=60))
    lock = cache_dir / (kentry.entry_key(Selection(("vault",)), os.environ) + ".lock")
    env = {**os.environ, "PYTHONPATH": str(hook), "MODULES_OUT": str(out),
           "MODULES_PER_PID": "1"}
    procs = [subprocess.Popen([SCRIPT, "--backend", "vault"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(PROCESSES)]
    try:
        wait_until(lambda: source.calls >= 1, "the backend to start", procs)
        wait_until(lambda: all(str(lock) in open_files(p.pid) for p in procs),
                   "every process to reach the lock", procs)
        with open(gate, "w") as release:
            release.write("go\n")
        results = [(proc.wait(timeout=60), proc.communicate()[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert results == [(0, source.key + "\n")] * PROCESSES
    assert source.calls == 1
    full = [p.pid for p in procs
            if "keyhelper.resolver" in Path(f"{out}.{p.pid}").read_text().split("\n")]
    assert len(full) == 1, full


def test_concurrent_hits_all_serve_the_entry(write_config, tmp_path: Path) -> None:
    source = counting_command(tmp_path)
    write_config(source.toml("vault"))
    assert keyhelper("-b", "vault").stdout == source.key + "\n"
    procs = [subprocess.Popen([SCRIPT, "-b", "vault"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        outputs.append((proc.returncode, out, err))
    assert outputs == [(0, source.key + "\n", "")] * PROCESSES
    assert source.calls == 1


# --- backends that hang ---------------------------------------------------------------------

def test_a_hanging_command_is_killed_at_its_timeout(write_config) -> None:
    write_config('[backends.hang]\ntype = "command"\ncommand = ["sleep", "30"]\n'
                 "timeout = 0.5\n")
    started = time.monotonic()
    run = keyhelper("--backend", "hang", "--backend", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    run = keyhelper("--backend", "hang")
    assert time.monotonic() - started < 10
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from hang\n"
                          "  hang failed: sleep did not finish within 0.5 s\n")


def test_a_command_that_hangs_is_stopped_by_the_run_deadline(write_config) -> None:
    write_config('deadline = 1\n[backends.hang]\ntype = "command"\n'
                 'command = ["sleep", "30"]\ntimeout = 600\n')
    started = time.monotonic()
    run = keyhelper("--backend", "hang")
    assert time.monotonic() - started < 5
    assert (run.returncode, run.stdout) == (1, "")
    assert re.fullmatch(r"keyhelper: no key from hang\n"
                        r"  hang failed: sleep did not finish within [01]\.\d s\n", run.stderr)


def test_a_timeout_kills_the_whole_process_tree(write_config, tmp_path: Path) -> None:
    """A shell script's child holds the pipes; it must not outlive the timeout."""
    pid_file = tmp_path / "child.pid"
    write_config('[backends.tree]\ntype = "command"\n'
                 f'command = ["sh", "-c", "sleep 30 & echo $! > {pid_file}; wait"]\n'
                 "timeout = 1\n")
    started = time.monotonic()
    run = keyhelper("--backend", "tree")
    assert time.monotonic() - started < 5
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from tree\n"
                          "  tree failed: sh did not finish within 1.0 s\n")
    assert not running(int(pid_file.read_text()))


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for a reaper that may be slow to come)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# --- plugins that break ---------------------------------------------------------------------

def install_fake_distribution(root: Path, name: str, entry_points: str,
                              modules: dict[str, str]) -> None:
    """A distribution as pip would leave it: a dist-info with entry_points.txt, plus its
    modules, in a directory put on PYTHONPATH."""
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for module, text in modules.items():
        (root / f"{module}.py").write_text(text)


@pytest.fixture
def broken_plugins(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "site"
    install_fake_distribution(
        root, "keyhelper_broken",
        "[keyhelper.backends]\n"
        "broken = keyhelper_broken_mod:Backend\n"
        "raising = keyhelper_raising_mod:RaisingBackend\n"
        "notabackend = keyhelper_raising_mod:NOT_A_CLASS\n",
        {"keyhelper_broken_mod": "raise ImportError('needs libfoo, which is missing')\n",
         "keyhelper_raising_mod":
             "from keyhelper.backend import Backend\n"
             "NOT_A_CLASS = 42\n"
             "class RaisingBackend(Backend):\n"
             "    def fetch(self):\n"
             "        raise RuntimeError('plugin bug')\n"})
    return {"PYTHONPATH": str(root), "KEYHELPER_API_KEY": KEY}


def test_a_broken_plugin_does_not_break_the_chain(broken_plugins: dict[str, str]) -> None:
    run = keyhelper("-b", "broken", "-b", "raising", "-b", "notabackend", "-b", "env",
                    env=broken_plugins)
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    env = {**broken_plugins, "KEYHELPER_API_KEY": ""}
    run = keyhelper("-b", "broken", "-b", "raising", "-b", "notabackend", "-b", "env",
                    env=env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "keyhelper: no key from broken, raising, notabackend, env\n"
        "  broken skipped: plugin keyhelper_broken_mod:Backend failed to load: ImportError: "
        "needs libfoo, which is missing\n"
        "  raising failed: RuntimeError: plugin bug\n"
        "  notabackend skipped: plugin keyhelper_raising_mod:NOT_A_CLASS is not a keyhelper "
        "Backend class\n"
        "  env skipped: $KEYHELPER_API_KEY is not set\n")


def test_backends_lists_a_broken_plugin_as_unusable(broken_plugins: dict[str, str]) -> None:
    run = keyhelper("backends", env=broken_plugins)
    assert (run.returncode, run.stderr) == (0, "")
    lines = {line.split()[0]: line for line in run.stdout.splitlines()}
    assert lines["broken"] == (
        f"{'broken':10} {'keyhelper_broken 1.0':24} unusable: plugin "
        "keyhelper_broken_mod:Backend failed to load: ImportError: needs libfoo, which is "
        "missing")
    assert lines["env"].split()[3] == "usable"
    assert lines["command"].split()[3] == "usable"


def test_a_plugin_cannot_take_over_a_built_in_name(tmp_path: Path) -> None:
    """A distribution earlier on sys.path that claims `env` must not replace the built-in."""
    root = tmp_path / "site"
    install_fake_distribution(
        root, "keyhelper_hijack", "[keyhelper.backends]\nenv = keyhelper_hijack_mod:Env\n",
        {"keyhelper_hijack_mod":
             "from keyhelper.backend import Backend, Token\n"
             "class Env(Backend):\n"
             "    def fetch(self):\n"
             "        return Token('sk-hijacked-key')\n"})
    run = keyhelper("-b", "env", env={"PYTHONPATH": str(root), "KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


def test_the_plugin_allowlist_keeps_a_plugin_from_loading(broken_plugins: dict[str, str],
                                                          tmp_path: Path) -> None:
    env = {**broken_plugins, "KEYHELPER_PLUGINS_ALLOW": "someone-else"}
    run = keyhelper("-b", "broken", "-b", "env", env=env)
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    env["KEYHELPER_API_KEY"] = ""
    run = keyhelper("-b", "broken", env=env)
    assert run.stderr == ("keyhelper: no key from broken\n"
                          "  broken skipped: plugin distribution 'keyhelper_broken' is not in "
                          "the plugin allowlist; not loaded\n")


def test_python_m_keyhelper_works_too() -> None:
    run = subprocess.run([sys.executable, "-m", "keyhelper", "-b", "env"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL,
                         env={**os.environ, "KEYHELPER_API_KEY": KEY}, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
