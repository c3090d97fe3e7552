"""Helpers of the cross-user suite: a real second local user, things it plants, and runs of
the real console script under a given umask with a deadline.

The victim is the test process's user (root in CI). Root passes the kernel's permission
checks, so what these tests exercise is keyhelper's own checks of type, owner, links and
mode: a victim that is not root would in some cases be stopped earlier by the kernel.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from helpers import Run, keyhelper

ATTACKER = "kh-attacker"
# Each run must end well within keyhelper's own deadline (5 s by default); a FIFO that
# blocked a read would hang until this one.
RUN_TIMEOUT = 10.0
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SETPRIV = shutil.which("setpriv", path=PATH) or "setpriv"

# The obstacles planted in place of a file keyhelper reads or writes.
OURS = "ours"  # control: a private file of the victim holding the planted value
PLANTED_BY_OTHER = "planted_by_other"  # a regular file of the other user
SYMLINK_TO_OURS = "symlink_to_ours"  # their symlink to a private file of ours
SYMLINK_TO_THEIRS = "symlink_to_theirs"  # their symlink to a file of theirs
HARDLINK_TO_OURS = "hardlink_to_ours"  # a second name of a private file of ours
FIFO = "fifo"
DIRECTORY = "directory"
OPEN_TO_OTHERS = "open_to_others"  # ours, but mode 666
FILE_OBSTACLES = (PLANTED_BY_OTHER, SYMLINK_TO_OURS, SYMLINK_TO_THEIRS, HARDLINK_TO_OURS,
                  FIFO, DIRECTORY, OPEN_TO_OTHERS)
# Why a key or credential file is refused (after its path; {path} is the path again).
REFUSALS = {
    PLANTED_BY_OTHER: "is owned by another user",
    SYMLINK_TO_OURS: "is a symlink owned by another user",
    SYMLINK_TO_THEIRS: "is a symlink owned by another user",
    HARDLINK_TO_OURS: "has 2 hard links (it must have one name)",
    FIFO: "is not a regular file",
    DIRECTORY: "is not a regular file",
    OPEN_TO_OTHERS: "is readable by group or others (mode 666); run: chmod 600 {path}",
}


def ensure_user(name: str = ATTACKER) -> pwd.struct_passwd | str:
    """The local user ``name``, created if missing; a reason (str) when it cannot be."""
    if not os.path.isabs(SETPRIV):
        return "no setpriv (util-linux) to run commands as a second local user"
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    if os.geteuid() != 0:
        return f"creating the local user {name} needs root (CI runs as root)"
    useradd = shutil.which("useradd", path=PATH)
    if useradd is None:
        return "no useradd on this system to create a second local user"
    run = subprocess.run([useradd, "--system", "--no-create-home", "--shell",
                          "/usr/sbin/nologin", name], capture_output=True, text=True,
                         timeout=30, check=False)
    try:  # exit 9: created meanwhile by a parallel run, which is as good
        return pwd.getpwnam(name)
    except KeyError:
        return f"useradd {name} failed: {run.stderr.strip()}"


@dataclass(frozen=True)
class Attacker:
    """Another local user, and the things it can do to the victim's paths."""

    name: str
    uid: int
    gid: int
    shared: Path  # a sticky world-writable directory, as /tmp

    def run(self, *argv: str, data: bytes | None = None) -> None:
        """Run a command as this user (real uid, gid, no supplementary groups)."""
        subprocess.run([SETPRIV, "--reuid", str(self.uid), "--regid", str(self.gid),
                        "--clear-groups", "--", *argv], input=data, check=True,
                       capture_output=True, timeout=30, env={"PATH": PATH, "LC_ALL": "C"})

    def reaches(self, path: Path) -> bool:
        return self.shared in path.parents

    def own(self, path: Path) -> None:
        """Hand ``path`` (not what a symlink points to) to this user: for places the user
        cannot reach itself, as under pytest's 0700 temporary directory."""
        os.lchown(path, self.uid, self.gid)

    def write(self, path: Path, data: bytes, mode: int = 0o600) -> Path:
        if self.reaches(path):
            self.run("sh", "-c", 'umask 077 && cat > "$1" && chmod "$2" "$1"', "sh",
                     str(path), f"{mode:o}", data=data)
        else:
            path.write_bytes(data)
            path.chmod(mode)
            self.own(path)
        return path

    def mkdir(self, path: Path, mode: int = 0o777) -> Path:
        if self.reaches(path):
            self.run("mkdir", "-m", f"{mode:o}", str(path))
        else:
            path.mkdir()
            path.chmod(mode)
            self.own(path)
        return path

    def mkfifo(self, path: Path) -> Path:
        if self.reaches(path):
            self.run("mkfifo", "-m", "666", str(path))
        else:
            os.mkfifo(path, 0o666)
            self.own(path)
        return path

    def symlink(self, target: Path, path: Path) -> Path:
        if self.reaches(path):
            self.run("ln", "-s", str(target), str(path))
        else:
            path.symlink_to(target)
            self.own(path)
        return path


def hardlink(target: Path, path: Path) -> Path:
    """A second name for one of our files. Made by the test as root: with
    fs.protected_hardlinks = 1 (the usual default) another user may not link a file it
    does not own, but where that is off, or the link is the user's own doing, it exists."""
    os.link(target, path)
    return path


class Planter:
    """Puts one obstacle in place of a file keyhelper reads or writes."""

    def __init__(self, attacker: Attacker, victim_dir: Path):
        self.attacker = attacker
        self.victim_dir = victim_dir  # ours, unreachable by the attacker
        self.victim_dir.mkdir(mode=0o700, exist_ok=True)

    def ours(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        """A private file of ours outside the cache (a symlink's or hard link's target)."""
        path = self.victim_dir / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def theirs(self, name: str, data: bytes) -> Path:
        """A file of the other user's, in the shared directory."""
        return self.attacker.write(self.attacker.shared / name, data, 0o644)

    def plant(self, kind: str, path: Path, data: bytes) -> Path:
        """Plant ``kind`` at ``path``; ``data`` is the planted value where there is one."""
        tag = f"{path.name}.{kind}"
        if kind == OURS:
            path.write_bytes(data)
            path.chmod(0o600)
        elif kind == PLANTED_BY_OTHER:
            self.attacker.write(path, data, 0o600)
        elif kind == SYMLINK_TO_OURS:
            self.attacker.symlink(self.ours(tag, data), path)
        elif kind == SYMLINK_TO_THEIRS:
            self.attacker.symlink(self.theirs(tag, data), path)
        elif kind == HARDLINK_TO_OURS:
            hardlink(self.ours(tag, data), path)
        elif kind == FIFO:
            self.attacker.mkfifo(path)
        elif kind == DIRECTORY:
            self.attacker.mkdir(path)
        elif kind == OPEN_TO_OTHERS:
            path.write_bytes(data)
            path.chmod(0o666)
        else:
            raise ValueError(kind)
        return path

    def targets(self) -> dict[str, bytes]:
        """What every symlink or hard link planted so far points at, and its bytes now:
        compare after the run to show nothing was written through a link."""
        found = {}
        for directory in (self.victim_dir, self.attacker.shared):
            for path in directory.iterdir():
                if path.is_file() and not path.is_symlink():
                    found[str(path)] = path.read_bytes()
        return found


@contextlib.contextmanager
def umask(value: int | None) -> Iterator[None]:
    """Run what is inside (a keyhelper child inherits it) under ``value``."""
    if value is None:
        yield
        return
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def run(*args: str, env: Mapping[str, str] | None = None, mask: int | None = None) -> Run:
    """The real console script, under ``mask``, which must end within RUN_TIMEOUT."""
    started = time.monotonic()
    with umask(mask):
        result = keyhelper(*args, env=env, timeout=RUN_TIMEOUT)
    assert time.monotonic() - started < RUN_TIMEOUT
    assert "Traceback" not in result.stderr, result.stderr
    return result


def private_file(path: Path) -> bool:
    """A regular file of ours, one name, mode 600."""
    st = path.lstat()
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_nlink == 1
            and stat.S_IMODE(st.st_mode) == 0o600)


def other_user() -> pwd.struct_passwd:
    """The other local user, for tests that hand it files with chown (it acts through setpriv
    elsewhere); skips with the reason only where no user can be created."""
    import pytest

    found = ensure_user()
    if isinstance(found, str):
        pytest.skip(f"no second local user: {found}")
    return found


def give(path: os.PathLike[str] | str, user: pwd.struct_passwd) -> None:
    """Make ``path`` (not following a symlink) belong to ``user``."""
    os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
