"""``keyhelper setup claude-code``: point Claude Code's settings.json at this keyhelper.

Merges into the existing file (every other setting kept), writes atomically with a backup of
the previous version, does nothing when the file already says the same, and can show the
change without writing it.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyhelper.cache import write_private
from keyhelper.errors import ConfigError

Echo = Callable[[str], None]

PROJECT_WARNING = (
    "warning: a project's .claude/settings.json apiKeyHelper runs without any trust prompt "
    "in -p mode for anyone who opens the project (anthropics/claude-code issue 90236); "
    "prefer --scope user, and never commit a helper you would not run yourself.")


@dataclass(frozen=True)
class Plan:
    path: str
    before: str | None  # None: the file does not exist yet
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def installed_command() -> str:
    """The absolute path of this keyhelper: a shim or PATH lookup per call costs ~90 ms."""
    beside = os.path.join(os.path.dirname(sys.executable), "keyhelper")
    for candidate in (sys.argv[0], beside, beside + ".exe"):
        if candidate and os.path.isfile(candidate) and os.path.basename(
                candidate).startswith("keyhelper"):
            return os.path.abspath(candidate)
    found = shutil.which("keyhelper")
    if found:
        return os.path.abspath(found)
    raise ConfigError("cannot find the installed keyhelper command")


def settings_path(scope: str, home: str, cwd: str) -> str:
    base = home if scope == "user" else cwd
    return os.path.join(base, ".claude", "settings.json")


def helper_command(command: str, profile: str | None, config: str | None,
                   backends: tuple[str, ...]) -> str:
    argv = [command]
    if config:
        argv += ["--config", os.path.abspath(os.path.expanduser(config))]
    if profile:
        argv += ["--profile", profile]
    for name in backends:
        argv += ["--backend", name]
    return shlex.join(argv)


def plan(path: str, helper: str, ttl_ms: int | None) -> Plan:
    before: str | None = None
    settings: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
        try:
            loaded = json.loads(before) if before.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc.msg} at line {exc.lineno}); "
                              "fix it or move it away first", source=path) from None
        if not isinstance(loaded, dict):
            raise ConfigError("expected a JSON object", source=path)
        settings = loaded
    settings["apiKeyHelper"] = helper
    if ttl_ms is not None:
        env = settings.setdefault("env", {})
        if not isinstance(env, dict):
            raise ConfigError("expected a JSON object", source=path, key="env")
        env["CLAUDE_CODE_API_KEY_HELPER_TTL_MS"] = str(ttl_ms)
    return Plan(path, before, json.dumps(settings, indent=2) + "\n")


def apply(change: Plan, now: float | None = None) -> str | None:
    """Write the new settings; return the backup's path (None when there was no file)."""
    os.makedirs(os.path.dirname(change.path), exist_ok=True)
    backup = None
    if change.before is not None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        backup = f"{change.path}.bak-{stamp}"
        write_private(backup, change.before.encode())
    write_private(change.path, change.after.encode())
    return backup


def setup(*, scope: str, profile: str | None, config: str | None, backends: tuple[str, ...],
          ttl_ms: int | None, dry_run: bool, echo: Echo, warn: Echo) -> int:
    path = settings_path(scope, os.path.expanduser("~"), os.getcwd())
    helper = helper_command(installed_command(), profile, config, backends)
    change = plan(path, helper, ttl_ms)
    if scope == "project":
        warn(PROJECT_WARNING)
    if not change.changed:
        echo(f"{path}: already set up, nothing to change")
        return 0
    if dry_run:
        diff = difflib.unified_diff((change.before or "").splitlines(keepends=True),
                                    change.after.splitlines(keepends=True),
                                    fromfile=path, tofile=f"{path} (new)")
        echo("".join(diff).rstrip("\n"))
        echo("dry run: nothing written")
        return 0
    backup = apply(change)
    echo(f"{path}: apiKeyHelper = {helper}")
    if backup:
        echo(f"backup of the previous file: {backup}")
    return 0
