"""Windows under wine for tests/portability: the official embeddable CPython for Windows
(scripts/install-wine puts it, a wine prefix and Debian's wine in place), keyhelper from
this checkout on its path, and a console-script launcher ``keyhelper.exe`` as pip makes it.

Each test run gets its own directory: the interpreter's files linked in, its ``._pth``
naming this checkout, a ``claude.exe`` (a copy of python.exe: the stand-in for Claude
Code, a process whose image is not one the caller walk steps past), and ``Scripts``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPS = ROOT / ".deps" / "wine"
CLAUDE_ENV = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "cli"}
# What reaches a Windows process: wine passes the Unix environment on, so the tests' own
# Unix paths (HOME, XDG_*) are left out; keyhelper's cache is named explicitly.
PASSED = ("PATH", "LANG", "LC_ALL", "TZ")


def windows_path(path: Path | str) -> str:
    """The Unix path as wine's Z: drive shows it."""
    return "Z:" + str(path).replace("/", "\\")


@dataclass
class Windows:
    home: Path  # this run's directory
    python: Path  # python.exe
    claude: Path  # claude.exe
    launcher: Path  # Scripts/keyhelper.exe

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASSED if k in os.environ}
        env.update(WINEPREFIX=str(DEPS / "prefix"), WINEDEBUG="-all",
                   WINEDLLOVERRIDES="mscoree,mshtml=", **extra)
        return env

    def run(self, *args: str | Path, timeout: float = 120, stderr: bool = True,
            **env: str) -> subprocess.CompletedProcess[str]:
        """``wine ARGS``, stdin on /dev/null and output on pipes: Python under wine cannot
        set up its standard streams on a terminal or a regular file.

        Wine keeps the Unix stderr it was started with as fd 2 of every process it starts
        (for its own messages), whatever the Windows handles say: a detached process
        started under wine holds that pipe. ``stderr=False`` puts it on /dev/null, for
        runs that leave a process behind; their Windows pipes are tested inside."""
        return subprocess.run(["wine", *map(str, args)], env=self.env(**env),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
                              text=True, timeout=timeout)

    def script(self, name: str, text: str) -> str:
        """Write a script for the Windows Python; its Windows path."""
        path = self.home / name
        path.write_text(text)
        return windows_path(path)


def installed() -> bool:
    return all((DEPS / name / "python.exe").is_file() for name in ("python", "python311")) and (
        DEPS / "prefix" / "system.reg").is_file() and shutil.which("wine") is not None


def prepare(home: Path) -> Windows:
    """This run's Windows Python, keyhelper on its path, and the launcher."""
    site = home / "site"
    site.mkdir(parents=True)
    (site / "keyhelper").symlink_to(ROOT / "keyhelper")
    (site / "keyhelper_plugins").symlink_to(ROOT / "plugins")
    write_dist_info(site)
    python = interpreter(home, "python", site)
    shutil.copyfile(python, python.parent / "claude.exe")
    scripts = home / "Scripts"
    scripts.mkdir()
    launcher = scripts / "keyhelper.exe"
    write_launcher(launcher, windows_path(python))
    return Windows(home, python, python.parent / "claude.exe", launcher)


def interpreter(home: Path, name: str, site: Path | None = None) -> Path:
    """python.exe of the embeddable Python ``.deps/wine/NAME``, its files linked into
    ``home/NAME`` beside a ``._pth`` that puts ``site`` (this checkout) on its path."""
    directory = home / name
    directory.mkdir()
    for item in (DEPS / name).iterdir():
        if not item.name.endswith("._pth"):
            (directory / item.name).symlink_to(item)
    pth = next((DEPS / name).glob("python3*._pth"))
    site = site or home / "site"
    (directory / pth.name).write_text(
        "\n".join([pth.name.replace("._pth", ".zip"), ".", windows_path(site)]) + "\n")
    return directory / "python.exe"


def write_dist_info(site: Path) -> None:
    """keyhelper's metadata, so that importlib.metadata finds the built-in backends'
    entry points as in a real install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = site / f"keyhelper-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: keyhelper\nVersion: {project['version']}\n")
    lines = ["[console_scripts]"] + [f"{k} = {v}" for k, v in project["scripts"].items()]
    for group, points in project["entry-points"].items():
        lines += ["", f"[{group}]"] + [f"{k} = {v}" for k, v in points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def write_launcher(path: Path, python: str) -> None:
    """``keyhelper.exe`` as pip writes a console script on Windows (its vendored distlib):
    the launcher t64.exe, a ``#!`` line naming python.exe, then a zip whose ``__main__``
    calls keyhelper.console:main. Run, it starts python.exe as its child."""
    from pip._vendor.distlib import scripts

    launcher = (Path(scripts.__file__).parent / "t64.exe").read_bytes()
    main = scripts.ScriptMaker.script_template % {
        "module": "keyhelper.console", "import_name": "main", "func": "main"}
    archive = path.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("__main__.py", main)
    path.write_bytes(launcher + f"#!{python}\n".encode() + archive.read_bytes())
    archive.unlink()


def start_server(windows: Windows) -> None:
    """One wineserver for the run, kept 30 s past its last process (else each wine start
    pays ~3 s to boot it and its services). It is started without our pipes: the services
    it starts would hold them open."""
    subprocess.Popen(["wineserver", "-p30"], env=windows.env(), stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["wine", "cmd", "/c", "exit"], env=windows.env(), timeout=120,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
