"""The one place where errors become messages and exit codes, and the get command.

Kept free of click so that a cache miss on ``keyhelper [selection]`` does not pay for it.
"""

from __future__ import annotations

import os
import sys

from keyhelper import redact
from keyhelper.errors import EXIT_NO_KEY, EXIT_OK, KeyhelperError
from keyhelper.redact import setup_logging

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from keyhelper.base.files import Selection

__all__ = ["guarded", "leave_the_project", "no_core_dumps", "run_get", "setup_logging"]

MAX_STDERR = 480  # Claude Code shows stderr cut at 500 characters


def no_core_dumps() -> None:
    """A crash must not write the keys in memory to a core file: core size limit 0 (POSIX;
    children inherit it). Windows writes no core file unless configured to."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):  # a sandbox that forbids it
        return


def leave_the_project(selection: Selection) -> None:
    """Claude Code runs keyhelper in the project it has open. The full path, and whatever it
    starts (a command backend's program, a sign-in), runs from ``/`` instead (the drive's
    root on Windows), as the refresh child does; the paths given relative to where keyhelper
    was started (--config, $KEYHELPER_CONFIG, $KEYHELPER_CACHE_DIR) are made absolute first,
    so they name what they named."""
    from keyhelper.base.files import PATH_VARIABLES, absolute_path, safe_cwd

    if selection.config:
        selection.config = absolute_path(selection.config)
    for name in PATH_VARIABLES:
        if os.environ.get(name):
            os.environ[name] = absolute_path(os.environ[name])
    os.chdir(safe_cwd())


def guarded(verbose: bool, action: Callable[[], int]) -> int:
    """Run ``action``; turn any error into a short redacted message and an exit code."""
    no_core_dumps()
    try:
        return action()
    except KeyhelperError as exc:
        message = exc.describe(verbose)
        code = exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Only a bug of keyhelper's own gets here: -v shows where (redacted, like all output).
        message = (f"keyhelper: internal error: {type(exc).__name__}: {exc} "
                   "(run with -v for details)")
        code = EXIT_NO_KEY
        if verbose:
            import traceback  # ~5 ms: only when one is printed

            traceback.print_exc(file=_RedactingStream(sys.stderr))
    message = redact.scrub(message)
    if not message.startswith("keyhelper"):
        message = "keyhelper: " + message
    if not verbose and len(message) > MAX_STDERR:
        message = message[: MAX_STDERR - 3] + "..."
    sys.stderr.write(message + "\n")
    return code


class _RedactingStream:
    def __init__(self, stream: object):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(redact.scrub(text))  # type: ignore[attr-defined, no-any-return]


def run_get(selection: Selection) -> int:
    """``keyhelper [selection options]``: print one key, or explain on stderr and exit non-zero."""
    setup_logging(selection.verbose)
    leave_the_project(selection)

    def action() -> int:
        from keyhelper.resolver import resolve

        result = resolve(selection, os.environ)
        sys.stdout.write(result.token.value + "\n")
        sys.stdout.flush()
        return EXIT_OK

    return guarded(selection.verbose, action)
