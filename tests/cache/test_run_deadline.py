"""One deadline for the whole run: a process that waited on the lean path for another
process's fetch (keyhelper.cachepolicy.wait_turn) does not get the full deadline again on
the full path. Found by the fleet simulation: during an outage, calls queued behind a
failing fetch took 13-28 s against a 5 s deadline."""

from __future__ import annotations

import os
import time
from pathlib import Path

from keyhelper.base.files import Selection, cache_dir, make_private_dirs
from keyhelper.base.lock import announce, open_lock, try_lock, unlock
from keyhelper.base.records import entry_key
from keyhelper.cachepolicy import ANNOUNCE_GRACE, wait_turn
from keyhelper.resolver import Run
from keyhelper.testing.fixtures import WriteConfig

DEADLINE = 4.0
HOLDER_LEFT = 1.0  # the other process's announced time still to run


def test_the_lean_wait_counts_against_the_runs_deadline(write_config: WriteConfig) -> None:
    write_config(f'deadline = {DEADLINE}\nchain = ["echo"]\n[backends.echo]\n'
                 'type = "command"\ncommand = ["/bin/echo", "sk-deadline"]\n')
    selection, env = Selection(), dict(os.environ)
    directory = cache_dir(env)
    make_private_dirs(directory)
    fd, why = open_lock(str(Path(directory) / (entry_key(selection, env) + ".lock")))
    assert fd is not None, why
    assert try_lock(fd)  # another process is fetching, and says so
    announce(fd, time.time() + HOLDER_LEFT)
    try:
        assert wait_turn(selection, env) is None  # it gave up once the holder's time was up
    finally:
        unlock(fd)
        os.close(fd)
    assert HOLDER_LEFT <= selection.waited < HOLDER_LEFT + ANNOUNCE_GRACE + 1.5
    left = Run(selection, env).deadline - time.monotonic()
    assert left <= DEADLINE - selection.waited + 0.05
    # A process that did not wait has the whole deadline.
    assert Run(Selection(), env).deadline - time.monotonic() > DEADLINE - 0.5
