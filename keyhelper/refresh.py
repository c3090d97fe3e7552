"""The refresh-ahead child (started by keyhelper.base.spawn as ``python -I -m
keyhelper.refresh STORED -- ARGV``): refresh the entry unless someone already did, then exit;
the entry's lock, inherited as fd 3, is released with it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(args: Sequence[str]) -> int:
    os.chdir("/")  # nothing of the caller's directory, whatever it holds (see base.spawn)
    from keyhelper.app import no_core_dumps
    from keyhelper.base.files import parse_get_args
    from keyhelper.resolver import Run

    stored, separator, *argv = args
    selection = parse_get_args(argv) if separator == "--" else None
    if selection is None:
        return 2
    no_core_dumps()
    try:
        Run(selection, os.environ).refresh(float(stored))
    except Exception:  # nobody is listening: the next call reports errors in the foreground
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
