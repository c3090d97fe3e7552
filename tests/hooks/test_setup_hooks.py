"""``keyhelper setup otel | bedrock | mcp NAME | desktop`` (keyhelper.setup_hooks): each hook
written where Claude Code (or Claude Desktop) reads it, with this keyhelper's absolute path,
merged, backed up, idempotent, shown by --dry-run, never into a file others can write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import SCRIPT, keyhelper

from keyhelper.setup_claude import helper_command


def claude_json(home: Path, cwd: Path) -> dict[str, object]:
    return {"numStartups": 3, "mcpServers": {"corp": {"type": "http", "url": "https://corp/mcp"}},
            "projects": {str(cwd): {"mcpServers": {"here": {"type": "http",
                                                            "url": "https://here/mcp"}}}}}


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".bak-*"))


def test_mcp_user_scope_merges_backs_up_and_is_idempotent(isolated_env: Path,
                                                          tmp_path: Path) -> None:
    state = isolated_env / ".claude.json"
    before = claude_json(isolated_env, tmp_path)
    state.write_text(json.dumps(before))
    run = keyhelper("setup", "mcp", "corp", "--profile", "mcp", cwd=str(tmp_path))
    helper = f"{SCRIPT} headers --profile mcp"
    assert run.stdout == (f"{state}: mcpServers.corp.headersHelper (user scope) = {helper}\n"
                          f"backup of the previous file: {backups(state)[0]}\n")
    assert (run.returncode, run.stderr) == (0, "")
    after = json.loads(state.read_text())
    before["mcpServers"]["corp"]["headersHelper"] = helper  # type: ignore[index]
    assert after == before
    assert json.loads(backups(state)[0].read_text()) == claude_json(isolated_env, tmp_path)
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    again = keyhelper("setup", "mcp", "corp", "--profile", "mcp", cwd=str(tmp_path))
    assert (again.returncode, again.stdout) == (0, f"{state}: already set up, nothing to "
                                                   "change\n")
    assert len(backups(state)) == 1


def test_mcp_local_scope_is_found_first(isolated_env: Path, tmp_path: Path) -> None:
    state = isolated_env / ".claude.json"
    state.write_text(json.dumps(claude_json(isolated_env, tmp_path)))
    run = keyhelper("setup", "mcp", "here", cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{state}: mcpServers.here.headersHelper (local scope) = ")
    projects = json.loads(state.read_text())["projects"]
    assert projects[str(tmp_path)]["mcpServers"]["here"]["headersHelper"] == f"{SCRIPT} headers"


def test_mcp_project_scope_writes_mcp_json_and_warns(isolated_env: Path, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".mcp.json").write_text('{"mcpServers": {"team": {"type": "http", '
                                       '"url": "https://team/mcp"}}}')
    run = keyhelper("setup", "mcp", "team", cwd=str(project))
    assert run.returncode == 0, run.stderr
    assert run.stderr == ("warning: a project's .mcp.json headersHelper runs for anyone who "
                          "opens the project and trusts it; never commit a helper you would "
                          "not run yourself.\n")
    servers = json.loads((project / ".mcp.json").read_text())["mcpServers"]
    assert servers == {"team": {"type": "http", "url": "https://team/mcp",
                                "headersHelper": f"{SCRIPT} headers"}}


def test_mcp_unknown_server_is_a_usage_error(isolated_env: Path, tmp_path: Path) -> None:
    run = keyhelper("setup", "mcp", "nope", cwd=str(tmp_path))
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == ("keyhelper: no MCP server 'nope' in local, project or user scope; "
                          "add it first, e.g. `claude mcp add --transport http nope URL`\n")
    assert not (isolated_env / ".claude.json").exists()


def test_otel_and_bedrock_in_settings_json(isolated_env: Path) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    otel = keyhelper("setup", "otel", "--profile", "otel")
    assert (otel.returncode, otel.stdout) == (
        0, f"{settings}: otelHeadersHelper = {SCRIPT} headers --profile otel\n")
    bedrock = keyhelper("setup", "bedrock", "--profile", "bedrock", "--region", "eu-west-1")
    assert bedrock.returncode == 0, bedrock.stderr
    assert json.loads(settings.read_text()) == {
        "otelHeadersHelper": f"{SCRIPT} headers --profile otel",
        "awsCredentialExport": f"{SCRIPT} aws-credentials --profile bedrock",
        "env": {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": "eu-west-1"}}
    dry = keyhelper("setup", "otel", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.endswith("dry run: nothing written\n")
    assert f'+  "otelHeadersHelper": "{SCRIPT} headers",' in dry.stdout
    assert json.loads(settings.read_text())["otelHeadersHelper"].endswith("--profile otel")


def test_desktop_program_and_arguments(isolated_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "desktop" / "claude_desktop_config.json"
    config.parent.mkdir(mode=0o700)
    config.write_text('{"theme": "dark"}')
    run = keyhelper("setup", "desktop", "--file", str(config), "--profile", "gw")
    assert run.returncode == 0, run.stderr
    assert json.loads(config.read_text()) == {
        "theme": "dark", "inferenceCredentialHelper": SCRIPT,
        "inferenceCredentialHelperArgs": ["desktop", "--profile", "gw"]}
    # Built by the one command builder, split back into a program and its arguments.
    assert helper_command(SCRIPT, "gw", None, (), "desktop") == f"{SCRIPT} desktop --profile gw"


def test_desktop_default_file_and_its_directories(isolated_env: Path) -> None:
    run = keyhelper("setup", "desktop")
    config = isolated_env / ".config" / "Claude-3p" / "claude_desktop_config.json"
    assert (run.returncode, run.stdout) == (
        0, f"{config}: inferenceCredentialHelper = {SCRIPT} desktop\n")
    assert oct(config.parent.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("command", [["mcp", "corp"], ["otel"], ["desktop"]])
def test_a_file_others_can_write_is_refused(isolated_env: Path, tmp_path: Path,
                                            command: list[str]) -> None:
    targets = {"mcp": isolated_env / ".claude.json",
               "otel": isolated_env / ".claude" / "settings.json",
               "desktop": isolated_env / ".config" / "Claude-3p" / "claude_desktop_config.json"}
    target = targets[command[0]]
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.write_text(json.dumps(claude_json(isolated_env, tmp_path)))
    os.chmod(target, 0o666)  # noqa: S103 - the unsafe file under test
    run = keyhelper("setup", *command, cwd=str(tmp_path))
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (f"keyhelper: config error: {target}: writable by others (mode 666); "
                          f"fix with: chmod 600 {target}\n")
    assert json.loads(target.read_text()) == claude_json(isolated_env, tmp_path)


def test_a_cloned_projects_mcp_json_symlink_is_not_followed(isolated_env: Path,
                                                             tmp_path: Path) -> None:
    """A checkout's .mcp.json that is a symlink (to the user's ~/.claude.json, say) is
    refused, never written through."""
    project = tmp_path / "clone"
    project.mkdir()
    target = isolated_env / ".claude.json"
    target.write_text(json.dumps(claude_json(isolated_env, project)))
    (project / ".mcp.json").symlink_to(target)
    run = keyhelper("setup", "mcp", "corp", "--scope", "project", cwd=str(project))
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (f"keyhelper: config error: {project / '.mcp.json'}: a symlink, not "
                          "followed: put a regular file in its place (or edit the file it "
                          "points to yourself)\n")
    assert json.loads(target.read_text()) == claude_json(isolated_env, project)
