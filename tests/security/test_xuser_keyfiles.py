"""The ``file`` backend's key file, against another local user.

The key file sits in a shared sticky directory (as /tmp), where the other user can be
first. The hit path reads it too (the route, keyhelper/base/route.py ``key_file_line``): both
must refuse alike, or the hit path would print what the backend refuses.
"""

from __future__ import annotations

from typing import Any

import pytest
from xuser import (
    FILE_OBSTACLES,
    OURS,
    PLANTED_BY_OTHER,
    REFUSALS,
    Attacker,
    Planter,
    run,
)

from keyhelper.base import records as kentry

PLANTED = "sk-ant-Planted_by_another_user_0000"
OUR_SYMLINK = "our_symlink"  # control: a symlink of ours (dotfiles, mounted secrets)
DANGLING = "dangling_symlink_of_theirs"
WRITABLE = "writable_by_others"  # ours, mode 622: nobody else reads it, anyone writes it

REASONS = {
    **REFUSALS,
    DANGLING: "is a symlink owned by another user",
    WRITABLE: "is writable by group or others (mode 622); run: chmod 600 {path}",
}


@pytest.mark.parametrize("kind", [OURS, OUR_SYMLINK, *FILE_OBSTACLES, DANGLING, WRITABLE])
def test_a_key_file_not_ours_and_private_is_refused(
        kind: str, attacker: Attacker, planter: Planter, write_config: Any) -> None:
    path = attacker.shared / "anthropic.key"
    write_config(f'chain = ["keyfile"]\n[backends.keyfile]\ntype = "file"\npath = "{path}"\n')
    value = PLANTED.encode() + b"\n"
    if kind == OUR_SYMLINK:
        path.symlink_to(planter.ours("real.key", value))
    elif kind == DANGLING:
        attacker.symlink(attacker.shared / "nowhere", path)
    elif kind == WRITABLE:
        planter.plant(OURS, path, value).chmod(0o622)
    else:
        planter.plant(kind, path, value)
    links = planter.targets()
    result = run()
    if kind in (OURS, OUR_SYMLINK):  # control: read when ours, symlink or not
        assert (result.returncode, result.stdout, result.stderr) == (0, PLANTED + "\n", "")
        assert kentry.key_file_line(str(path)) == PLANTED
        return
    reason = REASONS[kind].format(path=path)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"keyhelper: no key from keyfile\n  keyfile failed: {path} {reason}\n")
    assert planter.targets() == links
    # The hit path's mirror hands the same file over to the full path, which refuses it.
    assert kentry.key_file_line(str(path)) is None


def test_the_hit_path_refuses_what_the_backend_refuses(
        attacker: Attacker, planter: Planter, write_config: Any) -> None:
    """Through the real script: the route recorded by a first run, followed by the hit
    path on the second, refuses the planted file too (and hands over to the full path)."""
    path = attacker.shared / "anthropic.key"
    write_config(f'chain = ["keyfile"]\n[backends.keyfile]\ntype = "file"\npath = "{path}"\n')
    planter.plant(PLANTED_BY_OTHER, path, PLANTED.encode() + b"\n")
    first, second = run(), run()
    assert first == second
    assert (second.returncode, second.stdout, second.stderr) == (
        1, "", f"keyhelper: no key from keyfile\n  keyfile failed: {path} is owned by another "
               "user\n")
