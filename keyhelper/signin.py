"""``keyhelper login``, ``logout`` and ``status``: the backends of a selection that sign a
person in (the oidc backend, Vault's oidc auth) asked through the optional hooks of the
backend contract (keyhelper.backend.Backend.login/logout/session_status).

Which backends: those of the chain, and the configured backends they name in an option
ending in ``_backend`` (the oidc backend behind Vault's ``jwt_backend``, say).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from keyhelper.backend import Backend, Login
from keyhelper.base.failures import FailureLog
from keyhelper.base.files import Selection
from keyhelper.base.records import entry_key
from keyhelper.errors import EXIT_NO_KEY, EXIT_OK, BackendError, Skip, UsageError
from keyhelper.redact import fingerprint
from keyhelper.resolver import Run

Echo = Callable[[str], None]


def backends(run: Run) -> list[Backend]:
    """The chain's backends and the configured ones they refer to, each once, in order."""
    found: list[Backend] = []
    seen: set[str] = set()
    pending = [spec.name for spec in run.settings.chain]
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        spec = run.settings.spec(name, source=run.settings.config_path or "defaults")
        backend = run.chain.build(spec)
        found.append(backend)
        for option, value in backend.config.items():
            if (option.endswith("_backend") and isinstance(value, str)
                    and value in run.settings.backends):
                pending.append(value)
    return found


def _forget_cached(run: Run, selection: Selection, env: Mapping[str, str]) -> None:
    """A new sign-in (or none): the cached key and the remembered failure ("signed out",
    backed off) of this selection no longer hold."""
    if run.cache is None:
        return
    plain = Selection((), selection.profile, selection.config)
    for key in {run.key, entry_key(plain, env)}:
        run.cache.delete(key)
        FailureLog(run.cache.directory, key).clear()


def login(selection: Selection, env: Mapping[str, str], echo: Echo, warn: Echo, *,
          browser: bool, device: bool, seconds: float) -> int:
    run = Run(selection, env)
    signers = [b for b in backends(run) if b.signs_in()]
    if not signers:
        raise UsageError("no backend of this selection signs in (oidc, or vault with "
                         "auth = \"oidc\")")
    for backend in signers:
        # A person is involved: the wait is the login's, not the get path's deadline.
        run.context.deadline = time.monotonic() + seconds + 30
        try:
            said = backend.login(Login(warn, browser, device, seconds))
        except (BackendError, Skip) as exc:
            exc.backend = exc.backend or backend.name  # the line names the backend
            raise
        echo(f"keyhelper: {backend.name}: {said}")
    _forget_cached(run, selection, env)
    return EXIT_OK


def logout(selection: Selection, env: Mapping[str, str], echo: Echo) -> int:
    run = Run(selection, env)
    said = False
    for backend in backends(run):
        line = backend.logout()
        if line is not None:
            echo(f"keyhelper: {backend.name}: {line}")
            said = True
    _forget_cached(run, selection, env)
    if not said:
        raise UsageError("no backend of this selection signs in")
    return EXIT_OK


def status(selection: Selection, env: Mapping[str, str], echo: Echo) -> int:
    """Who is signed in, to what, until when; never a token. Exit 1 when signed out."""
    run = Run(selection, env)
    lines = [(b.name, b.session_status()) for b in backends(run)]
    shown = [(name, line) for name, line in lines if line is not None]
    if not shown:
        echo("no backend of this selection signs in")
        return EXIT_OK
    for name, line in shown:
        echo(f"{name}: {line}")
    entry = run.cache.read(run.key) if run.cache is not None else None
    if entry is not None:  # the key in use: its fingerprint and life, never the key
        left = entry.expires - time.time()
        echo(f"cached key: {fingerprint(entry.key)} from {entry.backend}, "
             + (f"{left:.0f} s left" if left > 0 else f"expired {-left:.0f} s ago"))
    signed_out = any(line is not None and line.startswith("signed out") for _, line in shown)
    return EXIT_NO_KEY if signed_out else EXIT_OK
