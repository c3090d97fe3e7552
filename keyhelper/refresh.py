"""The refresh-ahead child (started by keyhelper.base.spawn as ``python -I -m
keyhelper.refresh [--take-lock] STORED -- ARGV``): refresh the entry unless someone already
did, then exit; the entry's lock, inherited as fd 3 (POSIX) or taken here without waiting
(``--take-lock``, Windows), is released with it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(args: Sequence[str]) -> int:
    os.chdir("/")  # nothing of the caller's directory, whatever it holds (see base.spawn)
    from keyhelper.app import no_core_dumps
    from keyhelper.base.files import parse_get_args
    from keyhelper.base.spawn import TAKE_LOCK
    from keyhelper.resolver import Run

    take_lock = args[:1] == [TAKE_LOCK]  # Windows: no lock is inherited (base.spawn)
    stored, separator, *argv = args[1:] if take_lock else args
    selection = parse_get_args(argv) if separator == "--" else None
    if selection is None:
        return 2
    no_core_dumps()
    try:
        Run(selection, os.environ).refresh(float(stored), take_lock=take_lock)
    except Exception:  # nobody is listening: the next call reports errors in the foreground
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
