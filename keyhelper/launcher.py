"""The site-less launcher that ``keyhelper setup claude-code`` writes into Claude Code's
settings: ``<venv>/bin/python -I -S <venv site-packages>/keyhelper/launcher.py [args]``.

Most of a bare interpreter start is ``site`` (site-packages, ``.pth`` files). This file runs
as a script without it: it puts only the site-packages it lives in on ``sys.path`` (last,
so nothing there can shadow the standard library), and keyhelper.console serves a hit with
the standard library alone. A miss, or any other command, loads ``site`` first
(keyhelper.console.load_site), so the full path runs as it does from the console script.

The layout is trusted only when it is the one setup checked (:func:`lean_root`): this file
in the site-packages of the virtualenv whose python runs it, started without ``site``.
Anything else (Python upgraded under the venv, the file moved or copied, a user-site or
system install) loads ``site`` first and runs whatever keyhelper this interpreter finds, as
the console script would; when it finds none, one line says so (exit 2).

Imports only ``os`` and ``sys``: this is the first thing a cache hit runs.
"""

import os
import sys

SCRIPT_NAME = "keyhelper"
EXIT_USAGE = 2


def venv_site_packages(executable: str) -> str | None:
    """As keyhelper.base.files.venv_site_packages (a copy: keyhelper is not importable
    yet; tests/cache/test_launcher.py checks that they agree)."""
    venv = os.path.dirname(os.path.dirname(executable))
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        return None
    if os.name == "nt":
        return os.path.join(venv, "Lib", "site-packages")
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return os.path.join(venv, "lib", version, "site-packages")


def lean_root(script: str, executable: str) -> str | None:
    """The directory to import keyhelper from without ``site``, or None when the layout is
    not exactly the expected one (then the full start-up decides)."""
    if not sys.flags.no_site:
        return None  # started with site: sys.path is complete already
    expected = venv_site_packages(executable)
    root = os.path.dirname(os.path.dirname(os.path.abspath(script)))
    try:
        same = expected is not None and os.path.samefile(root, expected)
    except OSError:
        return None
    return root if same else None


def main() -> None:
    root = lean_root(__file__, sys.executable)
    if root is not None:
        sys.path.append(root)
    elif sys.flags.no_site:
        import site

        site.main()
    # Messages and `keyhelper setup` name the console script, not this file.
    sys.argv[0] = os.path.join(os.path.dirname(sys.executable), SCRIPT_NAME)
    try:
        from keyhelper.console import main as console_main
    except ImportError:
        sys.stderr.write(f"keyhelper: not installed for {sys.executable}; reinstall it, then "
                         "run `keyhelper setup claude-code` again\n")
        sys.exit(EXIT_USAGE)
    console_main(site_loaded=root is None)


if __name__ == "__main__":
    main()
