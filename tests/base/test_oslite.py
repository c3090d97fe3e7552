"""keyhelper.base.oslite answers as os does: its path functions against posixpath (and
ntpath's rules where the module holds them) over generated paths, its environment against
os.environ in a process that has not imported os."""

from __future__ import annotations

import ntpath
import os
import posixpath
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from keyhelper.base import oslite

# Paths made of the parts that matter to os.path: separators, dots, tildes, names.
PARTS = st.sampled_from(["/", "//", ".", "..", "~", "a", "b.c", "~x", " ", "é", "\\"])
PATHS = st.lists(PARTS, max_size=8).map("".join)


@given(PATHS, st.lists(PATHS, max_size=3))
def test_join_is_posixpath_join(path: str, names: list[str]) -> None:
    assert oslite.join(path, *names) == posixpath.join(path, *names)


@given(PATHS)
def test_split_dirname_isabs_abspath_are_posixpath(path: str) -> None:
    assert oslite.split(path) == posixpath.split(path)
    assert oslite.dirname(path) == posixpath.dirname(path)
    assert oslite.isabs(path) == posixpath.isabs(path)
    assert oslite.abspath(path) == posixpath.abspath(path)


@given(PATHS)
def test_expanduser_is_posixpath_expanduser(path: str) -> None:
    assert oslite.expanduser(path) == posixpath.expanduser(path)


NT_PARTS = st.sampled_from(["\\", "/", "C:", "c:", ":", ".", "..", "a", "b c", "é", "\\\\"])
NT_PATHS = st.lists(NT_PARTS, max_size=8).map("".join)


@given(NT_PATHS, NT_PATHS)
def test_the_windows_common_cases_are_ntpath(path: str, name: str) -> None:
    """Windows is tested under wine (tests/portability); its path rules are held to ntpath
    here too, on every generated path where the fast case applies."""
    joined = oslite.nt_join(path, name)
    assert joined is None or joined == ntpath.join(path, name)
    parts = oslite.nt_split(path)
    assert parts is None or parts == ntpath.split(path)
    assert oslite.nt_isabs(path) == ntpath.isabs(path)
    if oslite.nt_normal(path):
        assert ntpath.normpath(path) == path
    assert oslite.nt_join("C:\\Users\\me", "keyhelper") == "C:\\Users\\me\\keyhelper"
    assert oslite.nt_split("C:\\venv\\Scripts\\python.exe") == ("C:\\venv\\Scripts",
                                                                   "python.exe")


def test_files_and_links(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    for name in ("file", "link", "gone", ""):
        path = str(tmp_path / name)
        assert oslite.lexists(path) == os.path.lexists(path)
        assert oslite.isfile(path) == os.path.isfile(path)
    assert oslite.samefile(str(tmp_path), str(tmp_path / "." / "."))
    assert not oslite.samefile(str(tmp_path), str(tmp_path / "file"))
    assert not oslite.samefile(str(tmp_path), str(tmp_path / "gone"))


def test_without_os_the_environment_and_home_are_os_s(tmp_path: Path) -> None:
    """In a process that never imports os: the snapshot decodes names and values as os
    does (surrogateescape for what is no UTF-8), and ~ expands from HOME, trailing / cut."""
    code = ("import sys\nfrom keyhelper.base import oslite\n"
            "env = oslite.environ()\n"
            "print(ascii(env['KH_TEST']), ascii(env['KH_BYTES']), 'os' in sys.modules,\n"
            "      oslite.expanduser('~/x'), oslite.expanduser('~'),\n"
            "      oslite.getenv('KH_MISSING'))\n"
            "copy = dict(env)\nimport os\n"  # then os, to compare with
            "print(copy == dict(os.environ), len(env) == len(os.environ), 'KH_TEST' in env,\n"
            "      'KH_MISSING' in env, env.get('KH_MISSING', '-'))\n")
    env = {"KH_TEST": "välue", "HOME": str(tmp_path) + "/", "PATH": os.environ["PATH"],
           "PYTHONPATH": str(Path(oslite.__file__).parents[2])}
    run = subprocess.run([sys.executable, "-S", "-c", code], env={
        **{k.encode(): v.encode() for k, v in env.items()}, b"KH_BYTES": b"\xff-raw"},
        capture_output=True, text=True, timeout=30, check=False)
    assert (run.returncode, run.stderr) == (0, "")
    expected = os.fsdecode(b"\xff-raw")
    assert run.stdout == (f"'v\\xe4lue' {expected!a} False {tmp_path}/x {tmp_path} None\n"
                          "True True True False -\n")
