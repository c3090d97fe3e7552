"""The real LiteLLM proxy (pinned by scripts/install-litellm, with ``prisma`` so that a
rejection is a 401) with keyhelper.gateway.litellm as its ``custom_auth``, a ``mock_response``
model, a real LiteLLM callback recording who each request was attributed to, and the real
Claude Code (pinned) running keyhelper as its apiKeyHelper against it.

One proxy serves the module (it takes ~10-40 s to start); it trusts keyhelper's jwt backend
(a JWKS file, as ``keyhelper jwks`` prints it) and a real OpenBao's identity tokens (OIDC
discovery). Each test uses people and keys of its own.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jwt
import pytest
from claude_cli import CLAUDE, ROOT, claude_env, claude_home, claude_p
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fixtures_openbao import start_openbao
from helpers import SCRIPT
from jwt_keys import key_pair, write_key_file
from keyhelper_plugins.jwt import public_jwk, thumbprint
from litellm_proxy import MASTER_KEY, Proxy, ProxyDidNotStart, installed, start_litellm
from openbao_identity import IdentityIssuer, identity_issuer

from keyhelper.redact import fingerprint

pytestmark = [pytest.mark.gateway, pytest.mark.claude, pytest.mark.vault]

ISSUER = "https://keyhelper.test"
AUDIENCE = "litellm"
ALGORITHMS = {"rsa": "RS256", "p256": "ES256", "p384": "ES384", "ed25519": "EdDSA"}
TURN_TIMEOUT = 180


@pytest.fixture(scope="module", autouse=True)
def components() -> None:
    if not CLAUDE.exists():
        subprocess.run([str(ROOT / "scripts" / "install-claude")], check=True, timeout=600)
    if not installed():
        subprocess.run([str(ROOT / "scripts" / "install-litellm")], check=True, timeout=1200)


def jwk_of(kind: str) -> dict[str, str]:
    private = load_pem_private_key(key_pair(kind).private_pem.encode(), password=None)
    jwk = public_jwk(private.public_key())
    jwk.update(kid=thumbprint(jwk), use="sig", alg=ALGORITHMS[kind])
    return jwk


@dataclass
class Gateway:
    proxy: Proxy
    work: Path
    jwks: Path
    identity: IdentityIssuer

    def publish(self, *kinds: str) -> None:
        """The JWKS file the gateway trusts: the public keys of these key kinds."""
        self.jwks.write_text(json.dumps({"keys": [jwk_of(kind) for kind in kinds]}))

    def refused(self) -> list[str]:
        """keyhelper's own lines for the requests it refused, from the proxy's log."""
        return [line for line in self.proxy.log.read_text(errors="replace").splitlines()
                if line.startswith("keyhelper gateway: refused ")]

    def records_since(self, count: int, condition: Callable[[list[dict[str, Any]]], bool]
                      ) -> list[dict[str, Any]]:
        """The callback's records after the first ``count``, once ``condition`` holds (the
        callback runs after the response is sent)."""
        give_up = time.monotonic() + 30
        while True:
            records = self.proxy.attributions()[count:]
            if condition(records) or time.monotonic() > give_up:
                return records
            time.sleep(0.1)  # poll interval; the loop ends on the condition


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("gateway")
    with start_openbao() as bao:
        identity = identity_issuer(bao)
        jwks = work / "jwks.json"
        settings = work / "gateway.toml"
        settings.write_text(
            f'issuer = ["{ISSUER}"]\naudience = ["{AUDIENCE}", "{identity.client_id}"]\n'
            f'jwks_file = "{jwks}"\noidc_issuer = "{identity.issuer}"\n'
            # Short, so that a withdrawn key is noticed within the test.
            'jwks_ttl = 2\njwks_min_refetch = 1\nleeway = 0\n'
            '[claims]\nuser_id = "user"\nteam_id = "team"\nmetadata = ["sub"]\n')
        state = Gateway(None, work, jwks, identity)  # type: ignore[arg-type]
        state.publish("rsa", "p256")
        with start_litellm(work / "litellm", settings) as proxy:
            state.proxy = proxy
            yield state


@dataclass
class Person:
    name: str
    config: Path
    env: dict[str, str]

    def token(self) -> str:
        """The token keyhelper serves this person now (a plain cache hit, as a script)."""
        run = subprocess.run([SCRIPT, "--config", str(self.config)], env=self.env,
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stderr) == (0, ""), run.stderr
        return run.stdout.strip()


def person(gateway: Gateway, tmp: Path, name: str, backend: str) -> Person:
    """A developer's keyhelper config (``backend``: TOML of one backend) and Claude home."""
    directory = tmp / name
    directory.mkdir()
    config = directory / "keyhelper.toml"
    config.write_text(backend)
    home = claude_home(directory, SCRIPT, config)
    return Person(name, config, claude_env(home, gateway.proxy.url,
                                           KEYHELPER_CACHE_DIR=str(directory / "cache")))


def jwt_person(gateway: Gateway, tmp: Path, name: str, team: str, key_file: Path,
               algorithm: str, ttl: int = 3600) -> Person:
    return person(gateway, tmp, name, (
        f'chain = ["jwt"]\n[backends.jwt]\nalgorithm = "{algorithm}"\n'
        f'key_file = "{key_file}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'user = "{name}"\nttl = {ttl}\n[backends.jwt.claims]\nteam = "{team}"\n'))


def hashed(token: str) -> str:
    """How LiteLLM names a JWT it was given (its spend logs and callbacks)."""
    return "hashed-jwt-" + hashlib.sha256(token.encode()).hexdigest()


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TURN_TIMEOUT)
    return proc.returncode, out.strip(), err.strip()


class Session:
    """A running Claude Code session (stream-json), one turn at a time."""

    def __init__(self, who: Person, cwd: Path):
        self.proc = subprocess.Popen(
            [str(CLAUDE), "-p", "--input-format", "stream-json", "--output-format",
             "stream-json", "--verbose"], env=who.env, cwd=cwd, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def turn(self, text: str) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"type": "user",
                                "message": {"role": "user", "content": text}}) + "\n")
        stdin.flush()
        return _until_result(stdout)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(60)


def _until_result(stdout: IO[str]) -> dict[str, Any]:
    for line in stdout:
        event = json.loads(line)
        if event.get("type") == "result":
            return dict(event)
    raise AssertionError("Claude Code ended without a result")


def wait_refused(gateway: Gateway, token: str) -> tuple[int, dict[str, Any]]:
    """Poll the gateway with ``token`` until it is refused (deadline 90 s)."""
    give_up = time.monotonic() + 90
    while True:
        status, body = gateway.proxy.post(token)
        if status != 200 or time.monotonic() > give_up:
            return status, body
        time.sleep(0.5)  # poll interval; the loop ends on the gateway's answer


# --- attribution ----------------------------------------------------------------------

def test_per_user_keys_are_attributed_to_their_user_and_team(gateway: Gateway,
                                                             tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "signing.pem", key_pair("rsa").private_pem)
    alice = jwt_person(gateway, tmp_path, "alice", "engineering", key_file, "RS256")
    carol = jwt_person(gateway, tmp_path, "carol", "research", key_file, "RS256")
    before = len(gateway.proxy.attributions())

    procs = [claude_p(p.env, tmp_path) for p in (alice, carol)]
    assert [finish(p)[:2] for p in procs] == [(0, "hi from litellm")] * 2

    expected = {("alice", "engineering", hashed(alice.token())),
                ("carol", "research", hashed(carol.token()))}
    records = gateway.records_since(
        before, lambda rs: {(r["user"], r["team"], r["key"]) for r in rs} >= expected)
    assert {(r["user"], r["team"], r["key"]) for r in records} == expected
    # The mapped metadata claims reach LiteLLM's logging too.
    assert {json.dumps(r["metadata"], sort_keys=True) for r in records} == {
        '{"sub": "alice"}', '{"sub": "carol"}'}
    log = gateway.proxy.log.read_text(errors="replace")
    assert alice.token() not in log and carol.token() not in log
    # keyhelper's fingerprint of a key is the start of LiteLLM's hash of it.
    assert hashed(alice.token()).removeprefix("hashed-jwt-").startswith(
        fingerprint(alice.token()).removeprefix("sha256:"))


def test_rejections_answer_401_with_a_short_reason_and_never_the_token(
        gateway: Gateway) -> None:
    private = load_pem_private_key(key_pair("rsa").private_pem.encode(), password=None)
    kid = jwk_of("rsa")["kid"]
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "user": "mallory", "team": "x",
              "iat": now, "exp": now + 600}

    def mint(**changes: Any) -> str:
        headers = {"kid": changes.pop("kid", kid)}
        return jwt.encode({**claims, **changes}, private, algorithm="RS256", headers=headers)

    cases = {
        "token expired": mint(iat=now - 700, exp=now - 100),
        "wrong audience (aud)": mint(aud="another-service"),
        "unknown signing key (kid)": mint(kid="no-such-kid"),
        "missing claim team": mint(team=None),
        "malformed token (not a JWT)": "sk-not-a-token-at-all",
    }
    for reason, token in cases.items():
        assert gateway.proxy.post(token) == (401, {"error": {
            "message": f"keyhelper gateway: {reason}", "type": "auth_error",
            "param": "api_key", "code": "401"}}), reason
    assert gateway.proxy.post(MASTER_KEY)[0] == 200  # the admin's master key passes
    log = gateway.proxy.log.read_text(errors="replace")
    for reason, token in cases.items():
        assert token not in log
        assert f"keyhelper gateway: refused {fingerprint(token)}: {reason}" in log


# --- rotation through 401 -------------------------------------------------------------

def test_an_expired_token_gets_401_and_claude_code_recovers_by_itself(
        gateway: Gateway, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "signing.pem", key_pair("rsa").private_pem)
    dave = jwt_person(gateway, tmp_path, "dave", "ops", key_file, "RS256", ttl=12)
    session = Session(dave, tmp_path)
    try:
        assert session.turn("first")["subtype"] == "success"
        first = dave.token()
        # Claude Code keeps its key for 5 minutes; the token ends long before.
        assert wait_refused(gateway, first)[0] == 401
        before = len(gateway.proxy.attributions())
        result = session.turn("second")
    finally:
        session.close()
    assert (result["subtype"], result["result"]) == ("success", "hi from litellm")
    assert f"keyhelper gateway: refused {fingerprint(first)}: token expired" in gateway.refused()
    # The second turn ran on a new token (which one: keyhelper may have minted more than one
    # since, with a 12 s TTL), attributed as before.
    records = gateway.records_since(before, bool)
    assert records and {(r["user"], r["team"]) for r in records} == {("dave", "ops")}
    assert hashed(first) not in {r["key"] for r in records}


def test_a_withdrawn_signing_key_gets_401_and_the_session_moves_to_the_new_key(
        gateway: Gateway, tmp_path: Path) -> None:
    """Ops withdraw a (leaked) signing key: remove it from the JWKS and switch the signer.
    Tokens already handed out are refused; keyhelper's rotation detection mints anew."""
    key_file = write_key_file(tmp_path / "signing.pem", key_pair("p256").private_pem)
    frank = jwt_person(gateway, tmp_path, "frank", "security", key_file, "ES256")
    session = Session(frank, tmp_path)
    try:
        assert session.turn("first")["subtype"] == "success"
        first = frank.token()
        write_key_file(key_file, key_pair("p384").private_pem)
        frank.config.write_text(frank.config.read_text().replace('"ES256"', '"ES384"'))
        gateway.publish("rsa", "p384")  # p256 withdrawn
        assert wait_refused(gateway, first)[0] == 401
        before = len(gateway.proxy.attributions())
        result = session.turn("second")
    finally:
        session.close()
        gateway.publish("rsa", "p256")
    assert (result["subtype"], result["result"]) == ("success", "hi from litellm")
    assert (f"keyhelper gateway: refused {fingerprint(first)}: unknown signing key (kid)"
            in gateway.refused())
    second = frank.token()
    assert jwt.get_unverified_header(second)["alg"] == "ES384"
    records = gateway.records_since(before, lambda rs: any(r["key"] == hashed(second)
                                                           for r in rs))
    assert {(r["user"], r["team"]) for r in records} == {("frank", "security")}


def test_a_signing_key_rollover_in_openbao_fails_no_request(gateway: Gateway,
                                                            tmp_path: Path) -> None:
    """OpenBao's identity tokens: rotate the signing key while a session runs. The JWKS
    overlaps (old key kept, next key published ahead): old and new tokens all pass."""
    identity = gateway.identity
    name = identity.bao.unique("gina")
    token_file = tmp_path / "vault-token"
    token_file.write_text(identity.login(name, "platform"))
    token_file.chmod(0o600)
    gina = person(gateway, tmp_path, "gina", (
        f'chain = ["vault"]\n[backends.vault]\naddr = "{identity.bao.addr}"\n'
        f'path = "{identity.token_path}"\nengine = "logical"\nfield = "token"\n'
        f'token_file = "{token_file}"\n'))
    refused = len(gateway.refused())
    before = len(gateway.proxy.attributions())
    session = Session(gina, tmp_path)
    try:
        assert session.turn("first")["subtype"] == "success"
        old = gina.token()
        identity.rotate()
        # A new session gets a token signed with the new key (the cache entry ends).
        subprocess.run([SCRIPT, "cache", "clear", "--all"], env=gina.env, check=True,
                       capture_output=True, timeout=60)
        assert finish(claude_p(gina.env, tmp_path))[:2] == (0, "hi from litellm")
        new = gina.token()
        assert session.turn("second")["subtype"] == "success"  # still the old token
        statuses = [gateway.proxy.post(token)[0] for token in (old, new) * 5]
    finally:
        session.close()
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    assert statuses == [200] * 10
    assert gateway.refused()[refused:] == []
    records = gateway.records_since(before, lambda rs: {r["key"] for r in rs} >= {
        hashed(old), hashed(new)})
    assert {(r["user"], r["team"], r["key"]) for r in records} == {
        (name, "platform", hashed(old)), (name, "platform", hashed(new))}


# --- start-up -------------------------------------------------------------------------

def test_the_proxy_does_not_start_without_keys(tmp_path: Path) -> None:
    settings = tmp_path / "gateway.toml"
    settings.write_text(f'issuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                        f'jwks_file = "{tmp_path}/missing.json"\n')
    with pytest.raises(ProxyDidNotStart), start_litellm(tmp_path / "litellm", settings):
        pass
    lines = (tmp_path / "litellm" / "litellm.log").read_text(errors="replace").splitlines()
    assert ("keyhelper gateway: no signing keys, refusing to start: jwks_file "
            f"{tmp_path}/missing.json: No such file or directory") in lines
