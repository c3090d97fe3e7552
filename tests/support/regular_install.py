"""A regular (non-editable) pip install of this checkout in a virtualenv of its own: the
layout `keyhelper setup claude-code` writes the site-less launcher for (the test venv holds
an editable install, for which setup keeps the console script).

The source is copied first (pip builds in the source tree), installed with --no-deps, and
the test venv's site-packages is appended through a .pth file for the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "keyhelper", "plugins")


@dataclass(frozen=True)
class Install:
    venv: Path
    python: str  # the venv's interpreter, by its own path (not resolved)
    script: str  # the console script
    site_packages: Path

    @property
    def launcher(self) -> Path:
        return self.site_packages / "keyhelper" / "launcher.py"

    @property
    def compiled(self) -> Path:
        """pip's compiled copy of the launcher, which setup names when it is current."""
        tag = sys.implementation.cache_tag
        return self.site_packages / "keyhelper" / "__pycache__" / f"launcher.{tag}.pyc"

    def lean(self, *args: str) -> list[str]:
        """The command `setup claude-code` writes for this install."""
        return [self.python, "-I", "-S", str(self.compiled), *args]


def make_install(base: Path) -> Install:
    source = base / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
                    "--no-deps", str(source)], check=True, env=env, capture_output=True)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_packages = venv / "lib" / version / "site-packages"
    (site_packages / "zz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Install(venv, python, str(venv / "bin" / "keyhelper"), site_packages)


def copy_install(install: Install, base: Path) -> Install:
    """A copy of ``install`` to change files in (times kept: pip's .pyc files stay current);
    its console script still names the original's python: run ``python -m keyhelper``."""
    venv = base / "venv"
    shutil.copytree(install.venv, venv, symlinks=True)
    site_packages = venv / install.site_packages.relative_to(install.venv)
    return Install(venv, str(venv / "bin" / "python"), str(venv / "bin" / "keyhelper"),
                   site_packages)
