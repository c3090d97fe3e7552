"""``keyhelper setup otel | bedrock | mcp NAME | desktop``: point Claude Code's other
credential hooks (docs/hooks.md) at this keyhelper.

The same guarantees as ``setup claude-code`` (keyhelper.setup_claude): the absolute path,
merged into the file, a backup, idempotent, ``--dry-run``, nothing written into a file or
directory another user could change. Every command written is built by
``setup_claude.helper_command`` from ``installed_command()``.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

from keyhelper.base.files import make_private_dirs
from keyhelper.base.shapes import AWS, DESKTOP, HEADERS
from keyhelper.errors import UsageError
from keyhelper.setup_claude import (
    PROJECT_WARNING,
    Echo,
    carry_out,
    helper_command,
    installed_command,
    json_object,
    plan_edit,
    read_settings,
    settings_path,
)

MCP_SCOPES = ("local", "project", "user")  # Claude Code's precedence, highest first


def _command(shape: str, profile: str | None, config: str | None,
             backends: tuple[str, ...]) -> str:
    return helper_command(installed_command(), profile, config, backends, shape)


def setup_settings_hook(*, hook: str, scope: str, profile: str | None, config: str | None,
                        backends: tuple[str, ...], env: dict[str, str], dry_run: bool,
                        echo: Echo, warn: Echo) -> int:
    """``otelHeadersHelper`` or ``awsCredentialExport`` in settings.json (and its env)."""
    shape = HEADERS if hook == "otelHeadersHelper" else AWS
    helper = _command(shape, profile, config, backends)
    path = settings_path(scope, os.path.expanduser("~"), os.getcwd())

    def edit(settings: dict[str, Any]) -> None:
        settings[hook] = helper
        if env:
            json_object(settings, "env", path).update(env)

    change = plan_edit(path, edit)
    if scope == "project":
        warn(PROJECT_WARNING.replace("apiKeyHelper", hook))
    return carry_out(change, f"{hook} = {helper}", dry_run, echo)


def mcp_file(scope: str, home: str, cwd: str) -> tuple[str, list[str]]:
    """Where Claude Code keeps a server of this scope: the file, and the keys down to its
    ``mcpServers`` object."""
    if scope == "project":
        return os.path.join(cwd, ".mcp.json"), ["mcpServers"]
    path = os.path.join(home, ".claude.json")
    return path, (["mcpServers"] if scope == "user" else ["projects", cwd, "mcpServers"])


def _servers(settings: dict[str, Any], keys: list[str]) -> Any:
    node: Any = settings
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def find_mcp_server(name: str, scope: str | None, home: str, cwd: str) -> str:
    """The scope of the server ``name``: the one given, else the first that has it in
    Claude Code's precedence (local, project, user)."""
    import json

    for candidate in ([scope] if scope else MCP_SCOPES):
        path, keys = mcp_file(candidate, home, cwd)
        text = read_settings(path)
        try:
            loaded = json.loads(text) if text and text.strip() else {}
        except ValueError:
            loaded = {}  # plan_edit reports it, if this is the file
        servers = _servers(loaded, keys) if isinstance(loaded, dict) else None
        if isinstance(servers, dict) and name in servers:
            return candidate
    where = scope or "local, project or user"
    raise UsageError(f"no MCP server {name!r} in {where} scope; add it first, e.g. "
                      f"`claude mcp add --transport http {name} URL`")


def setup_mcp(*, name: str, scope: str | None, profile: str | None, config: str | None,
              backends: tuple[str, ...], dry_run: bool, echo: Echo, warn: Echo) -> int:
    """The server's ``headersHelper`` in the file where Claude Code keeps it."""
    home, cwd = os.path.expanduser("~"), os.getcwd()
    found = find_mcp_server(name, scope, home, cwd)
    path, keys = mcp_file(found, home, cwd)
    helper = _command(HEADERS, profile, config, backends)

    def edit(settings: dict[str, Any]) -> None:
        node = settings
        for i, key in enumerate(keys):
            node = json_object(node, key, path, ".".join(keys[:i]) + "." if i else "")
        entry = json_object(node, name, path, ".".join(keys) + ".")
        entry["headersHelper"] = helper

    change = plan_edit(path, edit)
    if found == "project":
        warn("warning: a project's .mcp.json headersHelper runs for anyone who opens the "
             "project and trusts it; never commit a helper you would not run yourself.")
    return carry_out(change, f"mcpServers.{name}.headersHelper ({found} scope) = {helper}",
                     dry_run, echo)


def desktop_config_path(home: str, env: dict[str, str]) -> str:
    """Claude Desktop's configuration file in third-party mode (Claude-3p), per platform."""
    if sys.platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    elif os.name == "nt":
        base = env.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
    else:
        base = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(base, "Claude-3p", "claude_desktop_config.json")


def setup_desktop(*, path: str | None, profile: str | None, config: str | None,
                  backends: tuple[str, ...], dry_run: bool, echo: Echo) -> int:
    """Claude Desktop runs a program with arguments (``inferenceCredentialHelper`` and
    ``inferenceCredentialHelperArgs``), not a shell line: the command is split back."""
    target = path or desktop_config_path(os.path.expanduser("~"), dict(os.environ))
    argv = shlex.split(_command(DESKTOP, profile, config, backends))

    def edit(settings: dict[str, Any]) -> None:
        settings["inferenceCredentialHelper"] = argv[0]
        settings["inferenceCredentialHelperArgs"] = argv[1:]

    change = plan_edit(os.path.abspath(target), edit)
    if not dry_run:  # the app may never have run: its config directory's parents too
        make_private_dirs(os.path.dirname(os.path.dirname(change.path)))
    return carry_out(change, f"inferenceCredentialHelper = {shlex.join(argv)}", dry_run,
                     echo)
