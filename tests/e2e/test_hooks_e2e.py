"""End to end: the real Claude Code CLI (pinned 2.1.332) runs keyhelper as its other
credential hooks (docs/hooks.md):

- a remote MCP server's ``headersHelper`` (``keyhelper headers``), against a real MCP server
  over streamable HTTP on loopback (the ``mcp`` SDK) that demands a bearer token: Claude Code
  connects, lists and calls a tool; after the token is rotated the server answers 401,
  Claude Code re-runs the helper, keyhelper sees the repeat call and fetches anew, and the
  call succeeds; many connections cost one backend call;
- ``otelHeadersHelper``, against a loopback OTLP/HTTP receiver;
- Bedrock's ``awsCredentialExport`` (``keyhelper aws-credentials`` with the aws_sts backend
  against moto's STS), against a loopback endpoint that reads the SigV4 access key id.

Figures are printed; ``scripts/e2e-hooks`` runs them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from claude_cli import CLAUDE, ROOT, claude_env
from countingcmd import CountingCommand, counting_command
from fake_anthropic import serve_gateway
from helpers import SCRIPT
from hook_servers import McpServer, mcp_server, recorder

pytestmark = pytest.mark.claude

GATEWAY_KEY = "sk-gw-hooks-e2e"


@pytest.fixture(scope="module", autouse=True)
def claude_installed() -> None:
    if not CLAUDE.exists():
        subprocess.run([str(ROOT / "scripts" / "install-claude")], check=True, timeout=600)


def key_source(directory: Path, key: str) -> tuple[CountingCommand, Path]:
    """A command backend that counts its calls and prints the key file's content (the
    token store a test rotates)."""
    key_file = directory / "source.key"
    return counting_command(directory, key, name="source", key_file=key_file), key_file


def home_with(directory: Path, config: str, settings: dict[str, object],
              claude_json: dict[str, object]) -> Path:
    """A scratch HOME: keyhelper's config, Claude Code's settings.json and ~/.claude.json."""
    home = directory / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".config" / "keyhelper").mkdir(parents=True)
    (home / ".config" / "keyhelper" / "config.toml").write_text(config)
    (home / ".claude" / "settings.json").write_text(json.dumps(
        {"apiKeyHelper": f"{SCRIPT} --backend env", **settings}))
    (home / ".claude.json").write_text(json.dumps(claude_json))
    return home


def env_for(home: Path, directory: Path, base_url: str, **extra: str) -> dict[str, str]:
    env = claude_env(home, base_url)
    for name in [n for n in env if n.startswith(("KEYHELPER_", "AWS_", "OTEL_", "XDG_"))]:
        del env[name]  # none of the developer's (the isolated env clears only keyhelper's)
    env.update(KEYHELPER_API_KEY=GATEWAY_KEY, XDG_CONFIG_HOME=str(home / ".config"),
               KEYHELPER_CACHE_DIR=str(directory / "cache"), **extra)
    return env


def run_claude(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run([str(CLAUDE), *args], env=env, cwd=cwd, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=180,
                          check=False)
    return proc.returncode, proc.stdout, proc.stderr


MCP_CONFIG = """\
[profiles.mcp]
chain = ["src"]
headers = {{ Authorization = "Bearer {{key}}", "X-Tenant" = "acme" }}
[mcp.urls]
"{url}" = "mcp"
""" + '[backends.src]\ntype = "command"\ncommand = {command}\n'


def mcp_home(directory: Path, server: McpServer, source: CountingCommand, servers: int = 1,
             helper: str | None = None) -> Path:
    """Claude Code with ``servers`` user-scope MCP servers (corp0, corp1 ...) all at the one
    loopback server, each with ``keyhelper headers`` (or ``helper``) as its headersHelper:
    the URL prefix maps them all to one profile."""
    base = server.url.rsplit("/", 1)[0]
    entries = {f"corp{i}": {"type": "http", "url": server.url + (f"?s={i}" if i else ""),
                            "headersHelper": helper or f"{SCRIPT} headers"}
               for i in range(servers)}
    config = MCP_CONFIG.format(url=base, command=json.dumps(source.argv))
    return home_with(directory, config, {}, {"mcpServers": entries})


def test_mcp_connect_list_call_and_rotation(tmp_path: Path) -> None:
    source, key_file = key_source(tmp_path, "mcp-token-1")
    with mcp_server(tmp_path, "mcp-token-1") as server, serve_gateway({GATEWAY_KEY}) as gw:
        home = mcp_home(tmp_path, server, source)
        # MCP tools offered to the model directly, not deferred behind ToolSearch.
        env = env_for(home, tmp_path, gw.url, ENABLE_TOOL_SEARCH="false")
        code, out, err = run_claude(["mcp", "list"], env, tmp_path)
        assert (code, f"corp0: {server.url} (HTTP) - ✔ Connected" in out) == (0, True), out + err
        assert source.calls == 1

        def rotate() -> None:  # ops rotate the token while the session runs
            key_file.write_text("mcp-token-2")
            server.rotate("mcp-token-2")
            rotate_at.append(time.monotonic())

        rotate_at: list[float] = []
        gw.tool_use, gw.before_tool_use = ("mcp__corp0__echo", {"text": "ping"}), rotate
        code, out, err = run_claude(["-p", "call the echo tool", "--allowedTools",
                                     "mcp__corp0__echo"], env, tmp_path)
        done = time.monotonic()
    # The SDK's tool answers structured content: {"result": ...}.
    assert (code, out.strip()) == (0, 'tool said: {"result":"echo: ping"}'), err
    assert gw.tool_results == ['{"result":"echo: ping"}']
    calls = [(e["ok"], e["rpc"]) for e in server.log() if e["rpc"] == "tools/call"]
    assert calls == [(False, "tools/call"), (True, "tools/call")], server.log()
    assert {e["tenant"] for e in server.log() if e["ok"]} == {"acme"}
    # mcp list, then the session: a hit at its start, one fetch on the 401's re-run.
    assert source.calls == 2
    print(f"\nFIGURE MCP rotation: 401 then success, {done - rotate_at[0]:.1f} s from the "
          "rotation to the answer (the tool call, its 401, the helper's re-run, the retry)")


def count_connections(directory: Path, plain: bool, sessions: int,
                      servers: int) -> tuple[int, int]:
    """(backend calls, headersHelper runs) over ``sessions`` runs of ``claude mcp list``
    with ``servers`` servers each. Every run is counted by a line the helper line appends
    before it execs the helper proper."""
    source, _ = key_source(directory, "mcp-token-1")
    runs = directory / "helper.runs"
    if plain:  # a plain script: the backend on every connection (Claude Code caches nothing)
        helper = ("printf '{\"Authorization\":\"Bearer %s\"}' "
                  f'"$({" ".join(source.argv)})"')
    else:
        helper = f"exec {SCRIPT} headers"
    with mcp_server(directory, "mcp-token-1") as server:
        home = mcp_home(directory, server, source, servers, f"echo run >> {runs}; {helper}")
        env = env_for(home, directory, "http://127.0.0.1:9")
        for _ in range(sessions):
            code, out, err = run_claude(["mcp", "list"], env, directory)
            assert code == 0 and out.count("✔ Connected") == servers, out + err
    return source.calls, len(runs.read_text().splitlines())


@pytest.mark.parametrize("plain", [False, True], ids=["keyhelper", "plain-script"])
def test_many_mcp_connections_cost_one_backend_call(tmp_path: Path, plain: bool) -> None:
    sessions, servers = int(os.environ.get("E2E_MCP_SESSIONS", "3")), 4
    calls, connections = count_connections(tmp_path, plain, sessions, servers)
    assert connections >= sessions * servers  # one run per server and session at least
    assert calls == (connections if plain else 1)
    who = "plain script" if plain else "keyhelper"
    print(f"\nFIGURE MCP connections ({who}): {connections} headersHelper runs over "
          f"{sessions} sessions x {servers} servers, {calls} backend call(s): "
          f"{100 * calls / connections:.0f} per 100")


def test_otel_headers_helper(tmp_path: Path) -> None:
    source, _ = key_source(tmp_path, "otel-token-1")
    config = ('[profiles.otel]\nchain = ["src"]\nheaders = { "x-otel-key" = "{key}" }\n'
              f'[backends.src]\ntype = "command"\ncommand = {json.dumps(source.argv)}\n')
    with recorder() as collector, serve_gateway({GATEWAY_KEY}) as gw:
        home = home_with(tmp_path, config, {"otelHeadersHelper":
                                            f"{SCRIPT} headers --profile otel"}, {})
        env = env_for(home, tmp_path, gw.url, CLAUDE_CODE_ENABLE_TELEMETRY="1",
                      OTEL_METRICS_EXPORTER="otlp", OTEL_LOGS_EXPORTER="otlp",
                      OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
                      OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
                      OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_LOGS_EXPORT_INTERVAL="500")
        code, out, err = run_claude(["-p", "say hi"], env, tmp_path)
        seen = collector.requests()
    assert (code, out.strip()) == (0, "hi"), err
    assert seen, "no OTLP export reached the receiver"
    assert {path for path, _ in seen} <= {"/v1/metrics", "/v1/logs", "/v1/traces"}
    assert {headers.get("x-otel-key") for _, headers in seen} == {"otel-token-1"}
    assert source.calls == 1


SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=([A-Z0-9]+)/\d{8}/us-east-1/bedrock/aws4_request")


@pytest.mark.usefixtures("moto")
def test_bedrock_signs_with_the_exported_credentials(tmp_path: Path, moto_url: str) -> None:
    token = tmp_path / "web-identity"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    token.chmod(0o600)
    config = ('[profiles.bedrock]\nchain = ["sts"]\nttl = 3000\n[backends.sts]\n'
              'type = "aws_sts"\nrole_arn = "arn:aws:iam::123456789012:role/bedrock"\n'
              f'endpoint = "{moto_url}"\ntoken_file = "{token}"\n')
    error = json.dumps({"message": "stop here"}).encode()
    with recorder(400, error) as bedrock:
        home = home_with(tmp_path, config, {"awsCredentialExport":
                                            f"{SCRIPT} aws-credentials --profile bedrock"}, {})
        env = env_for(home, tmp_path, "http://127.0.0.1:9", CLAUDE_CODE_USE_BEDROCK="1",
                      ANTHROPIC_BEDROCK_BASE_URL=bedrock.url, AWS_REGION="us-east-1",
                      CLAUDE_CODE_MAX_RETRIES="0")
        run_claude(["-p", "say hi"], env, tmp_path)
        seen = bedrock.requests()
        exported = subprocess.run([SCRIPT, "aws-credentials", "--profile", "bedrock"],
                                  env=env, capture_output=True, text=True, check=True).stdout
    key_id = json.loads(exported)["Credentials"]["AccessKeyId"]
    assert seen, "Claude Code sent nothing to the Bedrock endpoint"
    ids = {m.group(1) for _, h in seen if (m := SIGV4.match(h.get("authorization", "")))}
    assert ids == {key_id}
    assert all(h.get("x-amz-security-token") for _, h in seen)


def test_setup_mcp_writes_what_claude_code_runs(tmp_path: Path) -> None:
    """``keyhelper setup mcp NAME`` on a server added without a helper: Claude Code then
    connects with keyhelper's headers."""
    source, _ = key_source(tmp_path, "mcp-token-1")
    with mcp_server(tmp_path, "mcp-token-1") as server:
        home = mcp_home(tmp_path, server, source)
        state = home / ".claude.json"
        bare = json.loads(state.read_text())
        del bare["mcpServers"]["corp0"]["headersHelper"]
        state.write_text(json.dumps(bare))
        env = env_for(home, tmp_path, "http://127.0.0.1:9")
        setup = subprocess.run([SCRIPT, "setup", "mcp", "corp0"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=30, check=False)
        assert setup.returncode == 0, setup.stderr
        code, out, err = run_claude(["mcp", "list"], env, tmp_path)
    assert (code, f"corp0: {server.url} (HTTP) - ✔ Connected" in out) == (0, True), out + err
    assert source.calls == 1
