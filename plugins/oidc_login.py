"""The browser sign-in started from the get path (``open_browser = true``), detached: the get
fails at once with "a browser window opened to sign in; retry", and this process waits for
the person, then keeps the refresh token where ``keyhelper login`` would. One at a time per
sign-in: a marker file (``oidc-<id>.pending``) stands while one is under way.

Started by oidc.start_detached as ``python -I -m keyhelper_plugins.oidc_login``, with the
backend's name, options, profile and state directory as JSON on stdin (no secret: a client
secret is read from its file or backend by the child itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from keyhelper.backend import Context, Login


def main() -> int:
    from .oidc import OidcBackend

    job = json.loads(sys.stdin.read(1 << 20))
    seconds = float(job["options"]["login_timeout"])
    context = Context(job["profile"], dict(os.environ), time.monotonic() + seconds + 30,
                      job["state_dir"])
    try:
        OidcBackend(job["name"], job["options"], context).login(
            Login(lambda _line: None, browser=True, seconds=seconds))
    except Exception:  # nobody to tell: the next get says "signed out" again
        return 1
    finally:
        with contextlib.suppress(OSError):
            os.unlink(job["marker"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
