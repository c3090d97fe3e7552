"""``keyhelper doctor`` and ``keyhelper backends``: reports for people, never the key."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from keyhelper.base import audit
from keyhelper.base.failures import FailureLog
from keyhelper.base.files import POLICY_PATH, Selection
from keyhelper.config import Settings
from keyhelper.errors import EXIT_NO_KEY, EXIT_OK, BackendError, ConfigError, Skip
from keyhelper.registry import ALLOW_ENV, Registry, allowlist
from keyhelper.resolver import Run

Echo = Callable[[str], None]


def doctor(selection: Selection, env: Mapping[str, str], echo: Echo) -> int:
    """Run every backend of the chain (not just up to the first key) and report each."""
    run = Run(selection, env)
    settings = run.settings
    echo(f"config file: {settings.config_path or 'none (built-in defaults)'}")
    echo(f"profile: {settings.profile or 'none'}")
    echo("chain: " + " -> ".join(f"{s.name} ({s.type})" for s in settings.chain))
    winner = None
    for link in run.chain.links():
        attempt, token = run.chain.try_link(link)
        outcome = f"{attempt.outcome}: {attempt.reason}"
        if token is not None:
            if token.expires_at is not None:
                outcome += f", expires in {token.expires_at - time.time():.0f} s"
            if winner is None:
                winner = link.spec.name
                outcome += " (used)"
        echo(f"  {link.spec.name}: {outcome} [{attempt.seconds * 1000:.0f} ms]")
        session = link.backend.session_status() if link.backend is not None else None
        if session is not None:  # who is signed in, until when: never a token
            echo(f"  {link.spec.name}: {session}")
    if run.cache is None:
        echo(f"cache: not used: {run.cache_problem}")
    else:
        path = run.cache.path(run.key)
        entry = run.cache.read(run.key)
        echo(f"cache entry: {path}")
        if entry is None:
            echo("cache entry state: none")
        else:
            from keyhelper.redact import fingerprint

            left = entry.expires - time.time()
            state = f"{left:.0f} s left" if left > 0 else f"expired {-left:.0f} s ago"
            echo(f"cache entry state: {entry.backend} {fingerprint(entry.key)}, {state}")
        report_failures(FailureLog(run.cache.directory, run.key), echo)
    report_settings(settings, env, echo)
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


def report_settings(settings: Settings, env: Mapping[str, str], echo: Echo) -> None:
    """The policy file, and each setting's effective value and where it came from."""
    policy = settings.policy
    if policy is None:
        echo(f"policy file: none ({POLICY_PATH} does not exist)")
    else:
        echo(f"policy file: {policy.path}")
        for line in policy.describe():
            echo(line)
    ttl, origin = settings.ttl(env)
    echo(f"setting ttl: {ttl:g} s ({origin})")
    for name, unit in (("deadline", " s"), ("stale_grace", " s"), ("refresh_ahead", ""),
                       ("rotation_detection", ""), ("cache", "")):
        echo(f"setting {name}: {_shown(settings.setting(name))}{unit} ({settings.origin(name)})")
    allow = allowlist(settings.raw.get("plugins"), env)
    shown = "any plugin" if allow is None else ", ".join(allow) or "none (built-ins only)"
    origin = settings.origin("plugins")
    if env.get(ALLOW_ENV) is not None:  # it can only take names off the lists above it
        origin = (f"${ALLOW_ENV}" if origin == "default" else
                  f"{origin} and ${ALLOW_ENV}" if "narrowed" in origin else
                  f"{origin}, narrowed by ${ALLOW_ENV}")
    echo(f"setting plugin allowlist: {shown} ({origin})")
    echo(f"setting audit: {_audit_target(settings.raw)} ({settings.origin('audit')})")


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _audit_target(raw: Mapping[str, Any]) -> str:

    target = audit.settings(raw)
    if target is None:
        return "off"
    parts = [target.path] if target.path else []
    if target.syslog_socket:
        parts.append(f"syslog {target.syslog_socket}")
    return ", ".join(parts)


def list_backends(env: Mapping[str, str], echo: Echo) -> int:
    """Every backend type installed, where it came from, and whether it is usable here."""
    from keyhelper import config

    try:
        allow = allowlist(config.load(Selection(), env).raw.get("plugins"), env)
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
        except (BackendError, Skip) as exc:  # Unavailable is a Skip
            echo(f"{name:10} {origin:24} unusable: {exc.message}")
            continue
        echo(f"{name:10} {origin:24} usable  {cls.summary}")
    return EXIT_OK
