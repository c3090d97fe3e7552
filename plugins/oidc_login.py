"""The browser sign-in started from the get path (``open_browser = true``), detached: the get
fails at once with "a browser window opened to sign in; retry", and this process waits for
the person, then keeps the refresh token where ``keyhelper login`` would. One at a time per
sign-in: a marker file (``oidc-<id>.pending``) stands while one is under way.

Run as ``python -I -m keyhelper_plugins.oidc_login``, the backend's name, options, profile
and state directory as JSON on stdin (no secret: a client secret is read from its file or
backend by the child itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from keyhelper.backend import Context, Login

if TYPE_CHECKING:
    from .oidc import OidcBackend
    from .oidc_store import SessionStore


def _pending(store: SessionStore) -> str:
    return store.path + ".pending"


def start_detached(backend: OidcBackend, store: SessionStore) -> bool:
    """Start the sign-in unless one is under way; False when it could not be started."""
    if not store.path:
        return False
    marker = _pending(store)
    try:
        if time.time() - os.stat(marker).st_mtime < backend.config["login_timeout"] + 30:
            return True  # a sign-in is already waiting for the person
        os.unlink(marker)
    except FileNotFoundError:
        pass
    try:
        os.makedirs(store.directory, mode=0o700, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return True  # another process started it just now
    except OSError:
        return False
    job = {"name": backend.name, "options": backend.config, "profile": backend.context.profile,
           "state_dir": backend.context.state_dir, "marker": marker}
    try:
        child = subprocess.Popen([sys.executable, "-I", "-m", "keyhelper_plugins.oidc_login"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=dict(backend.context.env),
                                 start_new_session=True, close_fds=True)
        assert child.stdin is not None
        child.stdin.write(json.dumps(job).encode())
        child.stdin.close()
    except OSError:
        os.unlink(marker)
        return False
    return True


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
