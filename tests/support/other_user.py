"""A second local account for cross-user tests (kh-attacker), created on first use.

Files "placed by another user" are made by the test (as root) and given to this account with
chown, which is what the other user would have left: a file, a FIFO or a directory of theirs.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest

NAME = "kh-attacker"


def other_user() -> pwd.struct_passwd:
    """The account, created with useradd if missing; skips where that cannot be done."""
    if os.geteuid() != 0:
        pytest.skip("needs root: to create a second user and give files to it (CI runs as root)")
    try:
        return pwd.getpwnam(NAME)
    except KeyError:
        pass
    # A concurrent run may create it first: its exit code does not matter, the lookup does.
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", NAME], capture_output=True, text=True,
                          check=False)
    try:
        return pwd.getpwnam(NAME)
    except KeyError:
        pytest.skip(f"cannot create the user {NAME}: {made.stderr.strip()}")


def give(path: os.PathLike[str] | str, user: pwd.struct_passwd) -> None:
    """Make ``path`` (not following a symlink) belong to ``user``."""
    os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
