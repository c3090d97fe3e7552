"""The one place where errors become messages and exit codes, and the get command.

Kept free of click so that a cache miss on ``keyhelper [selection]`` does not pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable

from keyhelper import redact
from keyhelper.base.files import Selection
from keyhelper.errors import EXIT_NO_KEY, EXIT_OK, KeyhelperError

MAX_STDERR = 480  # Claude Code shows stderr cut at 500 characters


class RedactingFormatter(logging.Formatter):
    """Scrubs every secret this process has seen from log lines, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact.scrub(super().format(record))


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(
        "keyhelper: %(levelname)s %(name)s: %(message)s" if verbose else "keyhelper: %(message)s"))
    # A plugin's own logger has no handler: Python would print its warnings unredacted
    # through logging.lastResort. Make that fallback this redacting handler.
    logging.lastResort = handler
    # The built-in plugins log as keyhelper_plugins.*: same handler, prefix and redaction.
    for root_name in ("keyhelper", "keyhelper_plugins"):
        root = logging.getLogger(root_name)
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG if verbose else logging.WARNING)
        root.propagate = False
    if verbose:
        for name in ("keyhelper_plugins", "hvac", "urllib3", "keyring"):
            other = logging.getLogger(name)
            other.handlers[:] = [handler]
            other.setLevel(logging.DEBUG)


def no_core_dumps() -> None:
    """A crash must not write the keys in memory to a core file: core size limit 0 (POSIX;
    children inherit it). Windows writes no core file unless configured to."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    with contextlib.suppress(ValueError, OSError):  # a sandbox that forbids it
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


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

    def action() -> int:
        from keyhelper.resolver import resolve

        result = resolve(selection, os.environ)
        sys.stdout.write(result.token.value + "\n")
        sys.stdout.flush()
        return EXIT_OK

    return guarded(selection.verbose, action)
