"""End to end with single sign-on: the real Claude Code CLI runs keyhelper (oidc backend) as
its apiKeyHelper, against a loopback gateway that accepts only a valid access token of the
real OpenID provider (signature checked against the provider's JWKS, issuer, audience,
expiry). After one `keyhelper login`, `claude -p` works, and a running session keeps working
across an access-token expiry with no person involved."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import jwt
import pytest
from claude_cli import CLAUDE, ROOT, claude_env, claude_home, claude_p
from fake_anthropic import serve_gateway
from fixtures_oidc import CLIENT_ID, RESOURCE, Provider, login_code, start_provider
from helpers import SCRIPT

pytestmark = pytest.mark.claude


@pytest.fixture(scope="module", autouse=True)
def claude_installed() -> None:
    if not CLAUDE.exists():
        subprocess.run([str(ROOT / "scripts" / "install-claude")], check=True, timeout=600)


def verifier(provider: Provider) -> Any:
    """The gateway's check: an RS256 JWT signed by a key of the provider's JWKS, for the
    gateway's audience, from the provider, not expired (no leeway)."""
    keys = {k["kid"]: jwt.PyJWK.from_dict(k) for k in provider.jwks()["keys"]}

    def accept(token: str) -> bool:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            jwt.decode(token, keys[kid], algorithms=["RS256"], audience=RESOURCE,
                       issuer=provider.issuer, options={"require": ["exp", "sub"]})
        except (jwt.PyJWTError, KeyError):
            return False
        return True

    return accept


def _send(stdin: IO[str], text: str) -> None:
    stdin.write(json.dumps({"type": "user", "message": {"role": "user", "content": text}}) + "\n")
    stdin.flush()


def _until_result(stdout: IO[str]) -> dict[str, Any]:
    for line in stdout:
        event = json.loads(line)
        if event.get("type") == "result":
            return dict(event)
    raise AssertionError("Claude Code ended without a result")


def test_claude_after_login_and_across_an_access_token_expiry(tmp_path: Path) -> None:
    # Access tokens live 62 s: keyhelper caches each for 2 s (its expiry minus 60 s).
    with start_provider(access_ttl=62) as provider:
        config = tmp_path / "keyhelper.toml"
        config.write_text(f'refresh_ahead = 0\nchain = ["sso"]\n[backends.sso]\ntype = "oidc"\n'
                          f'issuer = "{provider.issuer}"\nclient_id = "{CLIENT_ID}"\n'
                          'scopes = "openid offline_access api"\ntoken_store = "file"\n')
        home = claude_home(tmp_path, SCRIPT, config)
        code, _, err = login_code("dana", selection=("--config", str(config)))
        assert code == 0, err
        accept = verifier(provider)
        with serve_gateway() as gateway:
            gateway.accept = accept
            out, err = claude_p(claude_env(home, gateway.url), tmp_path).communicate(
                timeout=120)
            assert out.strip() == "hi", err
            first = {r.x_api_key for r in gateway.messages()}
            assert len(first) == 1 and all(r.status == 200 for r in gateway.messages())

            # A running session; its token expires; it goes on with no person involved.
            env = claude_env(home, gateway.url, CLAUDE_CODE_API_KEY_HELPER_TTL_MS="5000")
            proc = subprocess.Popen(
                [str(CLAUDE), "-p", "--input-format", "stream-json", "--output-format",
                 "stream-json", "--verbose"], env=env, cwd=tmp_path, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                _send(proc.stdin, "first")
                assert _until_result(proc.stdout)["subtype"] == "success"
                used = gateway.messages()[-1].x_api_key
                assert used is not None
                expires = jwt.decode(used, options={"verify_signature": False})["exp"]
                deadline = time.monotonic() + 90
                while accept(used):  # until the gateway refuses the session's token
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
                assert time.time() >= expires
                _send(proc.stdin, "second")
                result = _until_result(proc.stdout)
            finally:
                proc.stdin.close()
                proc.wait(60)
            assert result["subtype"] == "success" and result["result"] == "hi"
            last = gateway.messages()[-1]
            assert last.status == 200 and last.x_api_key != used
            assert accept(last.x_api_key or "")
        # One sign-in; every later token came from the refresh grant.
        assert provider.grants("authorization_code") == 1
        assert provider.grants("refresh_token") >= 2
        assert provider.errors() == []
        subjects = {jwt.decode(r.x_api_key or "", options={"verify_signature": False})["sub"]
                    for r in gateway.messages()}
        assert subjects == {"dana"}
        print(f"\nFIGURE oidc e2e: {len(gateway.messages())} model requests, "
              f"{provider.grants('refresh_token')} refresh grants")


def test_concurrent_sessions_cost_one_refresh_grant(tmp_path: Path) -> None:
    with start_provider() as provider:
        config = tmp_path / "keyhelper.toml"
        config.write_text(f'chain = ["sso"]\n[backends.sso]\ntype = "oidc"\n'
                          f'issuer = "{provider.issuer}"\nclient_id = "{CLIENT_ID}"\n'
                          'scopes = "openid offline_access api"\ntoken_store = "file"\n')
        home = claude_home(tmp_path, SCRIPT, config)
        assert login_code("erin", selection=("--config", str(config)))[0] == 0
        sessions = 4
        with serve_gateway() as gateway:
            gateway.accept = verifier(provider)
            env = claude_env(home, gateway.url)
            procs = [claude_p(env, tmp_path) for _ in range(sessions)]
            results = [p.communicate(timeout=120) for p in procs]
        assert [out.strip() for out, _ in results] == ["hi"] * sessions, results[0][1]
        requests = gateway.messages()
        assert {r.status for r in requests} == {200}
        assert len({r.x_api_key for r in requests}) == 1
        assert provider.grants("refresh_token") == 1
        print(f"\nFIGURE oidc concurrent sessions: {sessions} claude -p, {len(requests)} model "
              f"requests, {provider.grants('refresh_token')} refresh grant(s): "
              f"{provider.grants('refresh_token') / len(requests):.2f} backend calls per "
              "request")
