"""The console script. Serves a cache hit with keyhelper.cachepolicy.try_hit alone, else
hands over.

``keyhelper [selection options]`` is answered here from the cache when possible; a miss
goes to the core without click; every other command goes to the click CLI.

keyhelper/launcher.py runs this without ``site`` (``python -I -S``, :func:`launch`): the hit
needs only the standard library, and :func:`load_site` brings in site-packages before anything
else runs.
"""

import sys

from keyhelper.base import oslite
from keyhelper.base.files import parse_get_args
from keyhelper.cachepolicy import try_hit, wait_turn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

COMPLETE_VAR = "_KEYHELPER_COMPLETE"  # click's shell completion: always the CLI's business
SCRIPT_NAME = "keyhelper"


def load_site() -> None:
    """Make site-packages importable (click, backends, plugins) when started without them;
    the same start-up a console script gets."""
    import site

    site.main()


def main(site_loaded: bool = True) -> None:
    selection = parse_get_args(sys.argv[1:])
    env = oslite.environ()  # os.environ without os (what a hit needs: keyhelper.base.oslite)
    if selection is None or COMPLETE_VAR in env:
        if not site_loaded:
            load_site()
        from keyhelper.cli import main as cli_main

        cli_main()
        return
    # -v is a person diagnosing: the full path says what it does, hit or miss.
    if not (selection.no_cache or selection.verbose) and env.get("KEYHELPER_NO_CACHE") != "1":
        if selection.shape:  # a hook's JSON (keyhelper.base.shapes)
            from keyhelper.base.shapes import serve

            key = serve(selection, env, sys.argv[1:], try_hit)
        else:
            key = try_hit(selection, env, sys.argv[1:])
            if key is None:
                key = wait_turn(selection, env, sys.argv[1:])
        if key is not None:
            sys.stdout.write(key + "\n")
            served()
    if not site_loaded:
        load_site()
    if selection.shape:
        from keyhelper.hooks import run_shape

        sys.exit(run_shape(selection))
    from keyhelper.app import run_get

    sys.exit(run_get(selection))


def served() -> "NoReturn":
    """Exit as soon as the key is out. The interpreter's tear-down (freeing each module and
    object the process is about to lose anyway) costs ~14 % of a bare start; a hit leaves
    nothing to it: its files were written and closed through descriptors, no atexit hook
    runs (logging is not loaded), a refresh child is on its own."""
    sys.stdout.flush()
    sys.stderr.flush()
    oslite.native._exit(0)


def launch(site_loaded: bool) -> None:
    """What keyhelper/launcher.py runs, its own site-packages last on ``sys.path`` (else
    with ``site``)."""
    # Messages and `keyhelper setup` name the console script, not the launcher.
    sys.argv[0] = oslite.join(oslite.dirname(sys.executable), SCRIPT_NAME)
    main(site_loaded=site_loaded)


if __name__ == "__main__":
    main()
