"""The hooks' output shapes (docs/hooks.md) as Claude Code reads them: ``keyhelper headers``
(MCP headersHelper, otelHeadersHelper), ``aws-credentials`` (Bedrock awsCredentialExport),
``desktop`` (Claude Desktop): exact JSON of string values, nothing else on stdout, stdout
empty on failure; the MCP server -> profile mapping; the cache and rotation detection per
server; and the hit path staying lean for each shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from countingcmd import CountingCommand, counting_command, rotating_command
from helpers import SCRIPT, keyhelper, loaded
from hit_path import FORBIDDEN, on_the_hit_path

CLAUDE_ENV = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "cli"}
AWS_DOC = {"Version": 1, "AccessKeyId": "ASIAEXAMPLE123", "SecretAccessKey": "s3cr/t+Key=",
           "SessionToken": "FwoGZXIvYXdzEJr//////////wEaDLk+Ab=", "Expiration":
           "2031-01-02T03:04:05+00:00"}
AWS_OUT = ('{"Credentials":{"AccessKeyId":"ASIAEXAMPLE123","SecretAccessKey":"s3cr/t+Key=",'
           '"SessionToken":"FwoGZXIvYXdzEJr//////////wEaDLk+Ab=",'
           '"Expiration":"2031-01-02T03:04:05Z"}}\n')

PROFILES = """
[profiles.gh]
chain = ["src"]
headers = { Authorization = "token {key}", "X-Tenant" = "acme" }
[profiles.corp]
chain = ["corp"]
[mcp.servers]
github = "gh"
[mcp.urls]
"https://mcp.corp.example/v1" = "corp"
"""


def ok(run, stdout: str) -> None:  # type: ignore[no-untyped-def]
    assert (run.returncode, run.stdout, run.stderr) == (0, stdout, "")


def strings_only(stdout: str) -> dict[str, object]:
    """What Claude Code parses: one JSON object whose values are strings (or, for Desktop's
    headers, an object of strings)."""
    loaded_doc = json.loads(stdout)
    assert isinstance(loaded_doc, dict) and stdout.endswith("}\n") and stdout.count("\n") == 1
    for value in loaded_doc.values():
        assert isinstance(value, str) or all(isinstance(v, str) for v in value.values())
    return loaded_doc


@pytest.fixture
def sources(tmp_path: Path, write_config) -> tuple[CountingCommand, CountingCommand]:  # type: ignore[no-untyped-def]
    src = counting_command(tmp_path)
    corp = counting_command(tmp_path, key="corp-key-42", name="corp")
    write_config('chain = ["src"]\n' + src.toml("src") + corp.toml("corp") + PROFILES)
    return src, corp


def test_headers_default_is_a_bearer_header_and_a_second_call_is_a_hit(sources) -> None:  # type: ignore[no-untyped-def]
    src, _ = sources
    first = keyhelper("headers")
    ok(first, '{"Authorization":"Bearer sk-test-Counted-0123456789"}\n')
    assert strings_only(first.stdout) == {"Authorization": f"Bearer {src.key}"}
    ok(keyhelper("headers"), first.stdout)
    ok(keyhelper(), src.key + "\n")  # the plain key shares the entry
    assert src.calls == 1


def test_a_profile_headers_table_gives_every_header(sources) -> None:  # type: ignore[no-untyped-def]
    src, _ = sources
    expected = '{"Authorization":"token sk-test-Counted-0123456789","X-Tenant":"acme"}\n'
    ok(keyhelper("headers", "--profile", "gh"), expected)
    ok(keyhelper("headers", "--profile", "gh"), expected)
    assert src.calls == 1


@pytest.mark.parametrize(("env", "expected"), [
    ({"CLAUDE_CODE_MCP_SERVER_NAME": "github"}, '{"Authorization":"token KEY","X-Tenant":"acme"}'),
    ({"CLAUDE_CODE_MCP_SERVER_NAME": "x", "CLAUDE_CODE_MCP_SERVER_URL":
      "https://mcp.corp.example/v1/mcp"}, '{"Authorization":"Bearer corp-key-42"}'),
    ({"CLAUDE_CODE_MCP_SERVER_URL": "https://mcp.corp.example/v1?x=1"},
     '{"Authorization":"Bearer corp-key-42"}'),
    # Not under the prefix (no path boundary), and an unmapped name: the default chain.
    ({"CLAUDE_CODE_MCP_SERVER_URL": "https://mcp.corp.example/v10"},
     '{"Authorization":"Bearer KEY"}'),
    ({"CLAUDE_CODE_MCP_SERVER_NAME": "GitHub"}, '{"Authorization":"Bearer KEY"}'),
])
def test_the_mcp_server_picks_the_profile(sources, env: dict[str, str], expected: str) -> None:  # type: ignore[no-untyped-def]
    src, corp = sources
    expected = expected.replace("KEY", src.key) + "\n"
    ok(keyhelper("headers", env=env), expected)  # full path: makes the shapes record
    ok(keyhelper("headers", env=env), expected)  # a hit, mapped from the record
    assert src.calls + corp.calls == 1


def test_an_explicit_profile_wins_over_the_mcp_mapping(sources) -> None:  # type: ignore[no-untyped-def]
    env = {"CLAUDE_CODE_MCP_SERVER_NAME": "github"}
    ok(keyhelper("headers", "-p", "corp", env=env), '{"Authorization":"Bearer corp-key-42"}\n')


def test_desktop_shape_and_its_setup_test_context(sources) -> None:  # type: ignore[no-untyped-def]
    src, _ = sources
    plain = f'{{"token":"{src.key}","headers":{{}}}}\n'
    ok(keyhelper("desktop"), plain)
    ok(keyhelper("desktop", env={"CLAUDE_HELPER_CONTEXT": "background"}), plain)
    assert src.calls == 1
    # Desktop testing its settings: the chain really runs (no cached answer).
    ok(keyhelper("desktop", env={"CLAUDE_HELPER_CONTEXT": "setup-test"}), plain)
    assert src.calls == 2
    with_headers = keyhelper("desktop", "--profile", "gh")
    ok(with_headers, f'{{"token":"{src.key}","headers":{{"Authorization":"token {src.key}",'
                     '"X-Tenant":"acme"}}\n')
    assert strings_only(with_headers.stdout)["token"] == src.key


def aws_source(tmp_path: Path, doc: dict[str, object]) -> CountingCommand:
    return counting_command(tmp_path, key=json.dumps(doc, separators=(",", ":")), name="aws")


def test_aws_credentials_from_any_backend_are_normalised(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    source = aws_source(tmp_path, AWS_DOC)
    write_config('chain = ["aws"]\n' + source.toml("aws"))
    ok(keyhelper("aws-credentials"), AWS_OUT)
    ok(keyhelper("aws-credentials"), AWS_OUT)
    assert source.calls == 1
    assert strings_only(AWS_OUT)  # {"Credentials": {...}} of strings


@pytest.mark.parametrize(("doc", "message"), [
    ({k: v for k, v in AWS_DOC.items() if k != "Expiration"},
     "keyhelper: the AWS credentials have no Expiration\n"),
    ({"Credentials": {"AccessKeyId": "A"}},
     "keyhelper: the AWS credentials have no SecretAccessKey, Expiration\n"),
    ({**AWS_DOC, "Expiration": "tomorrow"},
     "keyhelper: the AWS credentials' Expiration is not an ISO 8601 time\n"),
])
def test_aws_credentials_that_do_not_fit_leave_stdout_empty(tmp_path: Path, write_config,  # type: ignore[no-untyped-def]
                                                            doc: dict[str, object],
                                                            message: str) -> None:
    source = aws_source(tmp_path, doc)
    write_config('chain = ["aws"]\n' + source.toml("aws"))
    run = keyhelper("aws-credentials")
    assert (run.returncode, run.stdout, run.stderr) == (1, "", message)


def test_a_key_that_is_no_aws_document(sources) -> None:  # type: ignore[no-untyped-def]
    run = keyhelper("aws-credentials")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: the key is not an AWS credential document (JSON); use a "
                          "backend that returns AWS credentials (docs/hooks.md)\n")


@pytest.mark.parametrize("shape", ["headers", "aws-credentials", "desktop"])
def test_no_key_leaves_stdout_empty(write_config, shape: str) -> None:  # type: ignore[no-untyped-def]
    write_config('chain = ["down"]\n[backends.down]\ntype = "command"\n'
                 'command = ["/bin/false"]\n')
    run = keyhelper(shape)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == "keyhelper: no key from down\n  down failed: /bin/false exited 1\n"


@pytest.mark.parametrize(("text", "message"), [
    ('[headers]\n"Bad Name" = "x"\n', "headers.Bad Name: not a valid HTTP header name"),
    ('[headers]\nX = "a\\nb"\n', "headers.X: expected printable ASCII (a header value)"),
    ('[mcp.servers]\ngithub = "nope"\n',
     "mcp.servers.github: unknown profile 'nope' (configured: none)"),
    ('[mcp]\nserver = {}\n', "mcp.server: unknown key (expected one of: servers, urls)"),
])
def test_bad_shape_config_is_a_config_error(write_config, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_config('chain = ["env"]\n' + text)
    run = keyhelper("headers", env={"KEYHELPER_API_KEY": "sk-x"})
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"keyhelper: config error: {path}: {message}\n"


# --- rotation detection: Claude Code re-runs a headersHelper after a 401/403 ----------------

def test_a_repeat_call_for_the_same_server_refetches_another_server_does_not(
        tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    source = rotating_command(tmp_path)
    write_config('chain = ["src"]\n' + source.toml("src"))
    one = {**CLAUDE_ENV, "CLAUDE_CODE_MCP_SERVER_NAME": "one"}
    two = {**CLAUDE_ENV, "CLAUDE_CODE_MCP_SERVER_NAME": "two"}
    ok(keyhelper("headers", env=one), '{"Authorization":"Bearer key-1"}\n')
    # This test process is one Claude Code process: its first call for another server is
    # no sign of a refused key.
    ok(keyhelper("headers", env=two), '{"Authorization":"Bearer key-1"}\n')
    assert source.calls == 1
    # The same server again, soon: the server answered 401 and Claude Code re-runs us.
    ok(keyhelper("headers", env=one), '{"Authorization":"Bearer key-2"}\n')
    assert source.calls == 2


# --- the hit path: each shape stays lean ----------------------------------------------------

@pytest.mark.parametrize("args", [["headers"], ["headers", "--profile", "gh"], ["desktop"],
                                  ["aws-credentials"]])
def test_a_shape_hit_imports_only_the_lean_path(tmp_path: Path, write_config,  # type: ignore[no-untyped-def]
                                                hook: dict[str, str], args: list[str]) -> None:
    # The AWS backends' key is the compact document keyhelper prints (any other form is
    # normalised by the full path, each time).
    source = (counting_command(tmp_path, key=AWS_OUT.strip(), name="aws")
              if args[0] == "aws-credentials" else counting_command(tmp_path))
    write_config('chain = ["src"]\n' + source.toml("src") + PROFILES.replace(
        'chain = ["corp"]', 'chain = ["src"]'))
    env = {"CLAUDE_CODE_MCP_SERVER_NAME": "github"}
    warm = keyhelper(*args, env=env)
    assert (warm.returncode, warm.stderr) == (0, "")
    baseline = loaded(hook, [sys.executable, "-c", "pass"])
    extra = loaded({**hook, **env}, [SCRIPT, *args]) - baseline
    assert source.calls == 1
    assert "keyhelper.base.shapes" in extra
    assert not extra & FORBIDDEN, sorted(extra & FORBIDDEN)
    assert all(on_the_hit_path(m) for m in extra if m.startswith("keyhelper")), sorted(extra)
    assert len({m for m in extra if not m.startswith("keyhelper")}) <= 3, sorted(extra)


@pytest.mark.parametrize(("shape", "context", "interactive"), [
    ("desktop", "interactive", True), ("desktop", "background", False),
    ("desktop", "mid-session-refresh", False), ("headers", "interactive", False),
    ("", "interactive", False)])
def test_only_desktop_saying_interactive_lets_a_backend_prompt(
        write_config, shape: str, context: str, interactive: bool) -> None:  # type: ignore[no-untyped-def]
    from keyhelper.base.files import Selection
    from keyhelper.resolver import Run

    write_config('chain = ["env"]\n')
    run = Run(Selection(shape=shape), {"CLAUDE_HELPER_CONTEXT": context})
    assert run.context.interactive is interactive


def test_a_shapes_record_others_could_have_written_is_ignored(sources, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The record decides which headers carry the key: one that is not private (another
    user's, or open to others) is never read; the full path writes a good one over it."""
    src, _ = sources
    ok(keyhelper("headers"), f'{{"Authorization":"Bearer {src.key}"}}\n')
    (record,) = cache_dir.glob("*.shapes")
    forged = record.read_bytes().replace(b"Authorization", b"X-Leak")
    record.write_bytes(forged)
    record.chmod(0o644)
    ok(keyhelper("headers"), f'{{"Authorization":"Bearer {src.key}"}}\n')
    assert record.stat().st_mode & 0o777 == 0o600 and b"X-Leak" not in record.read_bytes()
    assert src.calls == 1


def test_a_server_name_that_is_not_utf8_is_served(sources) -> None:  # type: ignore[no-untyped-def]
    """The name is only remembered (hashed) for rotation detection: bytes that are no UTF-8
    do not break the hit or the full path."""
    src, _ = sources
    env = {**CLAUDE_ENV, "CLAUDE_CODE_MCP_SERVER_NAME": "bad\udcff"}  # the byte 0xff
    expected = f'{{"Authorization":"Bearer {src.key}"}}\n'
    ok(keyhelper("headers", env=env), expected)
    ok(keyhelper("headers", env={**env, "CLAUDE_CODE_MCP_SERVER_NAME": "other\udcff"}),
       expected)
    assert src.calls == 1
