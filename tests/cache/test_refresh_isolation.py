"""Issue 10, finding 1: the refresh-ahead child must not import code from the caller's
working directory (Claude Code runs the helper inside untrusted checkouts).

A "cloned repository" holds a ``keyhelper/`` package, a ``json.py``, a ``logging/`` package
and a ``keyhelper-9.9.dist-info`` whose entry point names its own module: each writes a
marker file when imported. A hit late in its entry's life, run from that directory, starts
the background refresh; the refresh must fetch the new key with keyhelper's own code and
import none of the planted modules.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

from cache_entry import entry_path, wait_for_refresh_lock, write_due_entry
from countingcmd import counting_command
from helpers import keyhelper
from hypothesis import given
from hypothesis import strategies as st

from keyhelper.base import spawn

PLANT = "import os; open(os.path.join({marker!r}, {name!r}), 'w').close()\n"


def plant_repository(repo: Path, markers: Path) -> None:
    """Modules that would run as the user if the refresh child imported from ``repo``."""
    def module(path: Path, name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(PLANT.format(marker=str(markers), name=name))

    module(repo / "keyhelper" / "__init__.py", "keyhelper")
    module(repo / "keyhelper" / "spawn.py", "keyhelper._background")
    module(repo / "json.py", "json")
    module(repo / "logging" / "__init__.py", "logging")
    module(repo / "evilplug.py", "evilplug")
    dist = repo / "keyhelper-9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: keyhelper\nVersion: 9.9\n")
    (dist / "entry_points.txt").write_text(
        "[keyhelper.backends]\nsrc = evilplug:Backend\ncommand = evilplug:Backend\n")


def test_refresh_child_ignores_the_working_directory(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    repo, markers = tmp_path / "cloned-repo", tmp_path / "markers"
    repo.mkdir()
    markers.mkdir()
    plant_repository(repo, markers)
    fresh = counting_command(tmp_path, key="key-new", name="fresh")
    write_config('chain = ["src"]\n' + fresh.toml("src"))
    write_due_entry()

    run = keyhelper(cwd=str(repo))
    assert (run.returncode, run.stdout, run.stderr) == (0, "key-old\n", "")
    wait_for_refresh_lock()
    assert sorted(p.name for p in markers.iterdir()) == []
    assert fresh.calls == 1  # keyhelper's own refresh ran, with the configured backend
    assert keyhelper(cwd=str(repo)).stdout == "key-new\n"


def test_refresh_child_command_line_is_isolated(tmp_path: Path) -> None:
    """The child's argv: isolated interpreter, and the config path made absolute (it runs
    in /, and must name the same entry as the parent)."""
    argv, env = spawn.absolute(
        ["--config", "rel/config.toml", "-b", "x", "--config=other.toml"],
        {"KEYHELPER_CACHE_DIR": "relcache", "HOME": "/h"})
    cwd = os.getcwd()
    assert argv == ["--config", os.path.join(cwd, "rel/config.toml"), "-b", "x",
                    "--config=" + os.path.join(cwd, "other.toml")]
    assert env == {"KEYHELPER_CACHE_DIR": os.path.join(cwd, "relcache"), "HOME": "/h"}
    assert spawn.CHILD_FLAGS == ("-I",)
    assert spawn.SAFE_CWD == "/"


def test_a_child_that_takes_the_lock_itself_refreshes_only_when_it_is_free(
        tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    """Windows' child (``--take-lock``: a Windows lock dies with the hit that took it) takes
    the entry's lock without waiting: held by another process, it leaves; free, it
    refreshes under it. Run here on flock; under wine in tests/portability."""
    fresh = counting_command(tmp_path, key="key-new", name="fresh")
    write_config('chain = ["src"]\n' + fresh.toml("src"))
    now = write_due_entry()
    child = [sys.executable, "-I", "-m", spawn.CHILD_MODULE, spawn.TAKE_LOCK, repr(now), "--"]
    fd = os.open(entry_path().with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fetch under way elsewhere
        assert subprocess.run(child, timeout=30).returncode == 0
        assert fresh.calls == 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert subprocess.run(child, timeout=30).returncode == 0
        assert fresh.calls == 1
        assert keyhelper().stdout == "key-new\n"
        assert subprocess.run(child, timeout=30).returncode == 0  # refreshed already
        assert fresh.calls == 1
    finally:
        os.close(fd)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters='"\n\0',
                                                blacklist_categories=("Cs",)))))
def test_the_windows_command_line_quotes_as_list2cmdline_does(args: list[str]) -> None:
    """quote_windows keeps subprocess off the hit path; where list2cmdline would leave an
    argument unquoted or quote it, it does the same (arguments with a double quote it
    always quotes: the wine tests round-trip those through a real Windows argv)."""
    assert spawn.quote_windows(args) == subprocess.list2cmdline(args)


WHERE = ["/bin/sh", "-c", 'echo "sk-from-$(pwd)"; echo x >> "$0"']


def where_config(counter: Path) -> str:
    return (f'[backends.where]\ntype = "command"\n'
            f'command = {json.dumps([*WHERE[:2], WHERE[2], str(counter)])}\n')


def test_the_full_path_runs_its_command_outside_the_project(tmp_path: Path,
                                                             isolated_env: Path) -> None:
    """Claude Code runs keyhelper in the project it has open: a miss, plain or in a hook's
    shape, starts its command in / (a git, npx or `python -m` there would read the
    project), and the paths given relative to the project still name what they named."""
    project = tmp_path / "project"
    project.mkdir()
    counter = tmp_path / "calls"
    (project / "rel.toml").write_text(where_config(counter))
    for args, env in [(("--config", "rel.toml"), {}),
                      ((), {"KEYHELPER_CONFIG": "rel.toml"}),
                      (("-c", "./rel.toml"), {"KEYHELPER_CACHE_DIR": "cache"})]:
        for _ in range(2):  # a miss, then a hit on the entry it stored
            run = keyhelper(*args, "-b", "where", env=env, cwd=str(project))
            assert (run.returncode, run.stdout, run.stderr) == (0, "sk-from-/\n", ""), args
    assert counter.read_text() == "x\n" * 2  # one fetch per cache: one config, by two names
    assert sorted(p.name for p in project.iterdir()) == ["cache", "rel.toml"]
    headers = keyhelper("headers", "--config", "rel.toml", "-b", "where", "--no-cache",
                        cwd=str(project))
    assert (headers.returncode, headers.stdout) == (
        0, '{"Authorization":"Bearer sk-from-/"}\n')
