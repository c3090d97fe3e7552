"""``keyhelper doctor`` and ``keyhelper backends``: reports for people, never the key."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from keyhelper import _lean
from keyhelper.core import Broker
from keyhelper.errors import EXIT_NO_KEY, EXIT_OK, BackendError, ConfigError, Skip
from keyhelper.registry import Registry, allowlist

Echo = Callable[[str], None]


def doctor(selection: _lean.Selection, env: Mapping[str, str], echo: Echo) -> int:
    """Run every backend of the chain (not just up to the first key) and report each."""
    broker = Broker(selection, env)
    settings = broker.settings
    echo(f"config file: {settings.config_path or 'none (built-in defaults)'}")
    echo(f"profile: {settings.profile or 'none'}")
    echo("chain: " + " -> ".join(f"{s.name} ({s.type})" for s in settings.chain))
    winner = None
    for link in broker.build_chain():
        started = time.monotonic()
        try:
            if link.backend is None:
                raise link.error or Skip("could not be built")
            token = broker.fetch_one(link.backend)
        except ConfigError:
            raise
        except Skip as exc:
            outcome = f"skipped: {exc.message}"
        except BackendError as exc:
            outcome = f"failed: {exc.message}"
        except Exception as exc:
            outcome = f"failed: {type(exc).__name__}: {exc}"
        else:
            expiry = ("" if token.expires_at is None else
                      f", expires in {token.expires_at - time.time():.0f} s")
            outcome = f"ok: {token.fingerprint}{expiry}"
            if winner is None:
                winner = link.spec.name
                outcome += " (used)"
        from keyhelper.redact import redact

        elapsed_ms = (time.monotonic() - started) * 1000
        echo(f"  {link.spec.name}: {redact(outcome)} [{elapsed_ms:.0f} ms]")
    if broker.cache is None:
        echo(f"cache: not used: {broker.cache_problem}")
    else:
        path = broker.cache.path(broker.key)
        entry = broker.cache.read(broker.key)
        echo(f"cache entry: {path}")
        if entry is None:
            echo("cache entry state: none")
        else:
            from keyhelper.redact import fingerprint

            left = entry.expires - time.time()
            state = f"{left:.0f} s left" if left > 0 else f"expired {-left:.0f} s ago"
            echo(f"cache entry state: {entry.backend} {fingerprint(entry.key)}, {state}")
    return EXIT_OK if winner else EXIT_NO_KEY


def list_backends(env: Mapping[str, str], echo: Echo) -> int:
    """Every backend type installed, where it came from, and whether it is usable here."""
    from keyhelper import config

    try:
        plugins = config.load(_lean.Selection(), env).raw.get("plugins")
    except ConfigError:
        plugins = None
    registry = Registry(allow=allowlist(plugins, env))
    for name in registry.names():
        info = registry.info(name)
        origin = f"{info.distribution} {info.version}"
        try:
            cls = registry.load(name)
            cls.check_available()
        except BackendError as exc:
            echo(f"{name:10} {origin:24} unusable: {exc.message}")
            continue
        echo(f"{name:10} {origin:24} usable  {cls.summary}")
    return EXIT_OK
