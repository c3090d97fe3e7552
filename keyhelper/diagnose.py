"""``keyhelper doctor`` and ``keyhelper backends``: reports for people, never the key."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from keyhelper import _lean
from keyhelper.core import Broker
from keyhelper.errors import EXIT_NO_KEY, EXIT_OK, BackendError, ConfigError
from keyhelper.failures import FailureLog
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
        attempt, token = broker.try_link(link)
        outcome = f"{attempt.outcome}: {attempt.reason}"
        if token is not None:
            if token.expires_at is not None:
                outcome += f", expires in {token.expires_at - time.time():.0f} s"
            if winner is None:
                winner = link.spec.name
                outcome += " (used)"
        echo(f"  {link.spec.name}: {outcome} [{attempt.seconds * 1000:.0f} ms]")
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
        report_failures(FailureLog(broker.cache.directory, broker.key), echo)
    from keyhelper import audit

    for line in audit.describe(settings.raw):
        echo(line)
    return EXIT_OK if winner else EXIT_NO_KEY


def report_failures(failures: FailureLog, echo: Echo) -> None:
    """The shared failure record and how often a stale key had to be served."""
    now = time.time()
    failure = failures.read()
    if failure is not None:
        first_line = failure.message.splitlines()[0] if failure.message else "failed"
        echo(f"last failure: {now - failure.failed_at:.0f} s ago ({failure.count} in a row), "
             f"next try in {max(0.0, failure.retry_at - now):.0f} s: {first_line}")
    count, last = failures.stale_count()
    when = "" if last is None else f", last {now - last:.0f} s ago"
    echo(f"stale keys served: {count}{when}")


def list_backends(env: Mapping[str, str], echo: Echo) -> int:
    """Every backend type installed, where it came from, and whether it is usable here."""
    from keyhelper import config

    try:
        allow = allowlist(config.load(_lean.Selection(), env).raw.get("plugins"), env)
    except ConfigError as exc:
        # Fail closed: an unreadable config may hold an allowlist; import no plugin.
        echo(f"{exc.describe()}; third-party plugins not loaded")
        allow = []
    registry = Registry(allow=allow)
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
