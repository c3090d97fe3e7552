"""The gateway's verifier (keyhelper.gateway.verify), without LiteLLM: what it accepts (what
keyhelper's jwt backend mints, checked with what ``keyhelper jwks`` prints), each rejection
and its exact reason, key rollover, the rate limit on unknown kids (JWKS fetches counted by
the server), a JWKS endpoint that is down, start-up with no key, and the claims mapping."""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from certs import TestCA
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from helpers import keyhelper
from jwks_server import StaticIssuer, serve_issuer
from jwt_keys import key_pair, write_key_file
from keyhelper_plugins.jwt import public_jwk, thumbprint

from keyhelper.errors import ConfigError
from keyhelper.gateway import settings as gateway_settings
from keyhelper.gateway.keys import NoKeys
from keyhelper.gateway.verify import Identity, Rejected, Verifier
from keyhelper.testing.fixtures import WriteConfig

ISSUER = "https://keyhelper.test"
AUDIENCE = "litellm"
BASE = {"issuer": ISSUER, "audience": AUDIENCE,
        "claims": {"user_id": "user", "team_id": "team", "metadata": ["sub", "jti"]}}


@dataclass(frozen=True)
class Signer:
    key: Any
    jwk: dict[str, str]
    alg: str

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    def mint(self, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "user": "alice", "team": "engineering",
                   "sub": "alice", "iat": now, "nbf": now, "exp": now + 600,
                   "jti": secrets.token_urlsafe(8), **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.key, algorithm=self.alg,
                          headers={"kid": self.kid, **(headers or {})})


def signer(kind: str, alg: str, kid: str | None = None) -> Signer:
    private = load_pem_private_key(key_pair(kind).private_pem.encode(), password=None)
    jwk = public_jwk(private.public_key())
    jwk.update(kid=kid or thumbprint(jwk), use="sig", alg=alg)
    return Signer(private, jwk, alg)


class Clock:
    """The KeySet's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier_for(source: dict[str, Any], clock: Clock | None = None, **extra: Any) -> Verifier:
    settings = gateway_settings.from_mapping({**BASE, **source, **extra})
    return Verifier(settings, clock=clock or Clock()).start()


def write_jwks(path: Path, *signers: Signer) -> Path:
    path.write_text(json.dumps({"keys": [s.jwk for s in signers]}))
    return path


def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    give_up = time.monotonic() + within
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        time.sleep(0.01)  # poll interval; the loop ends on the condition


@pytest.fixture
def es256() -> Signer:
    return signer("p256", "ES256")


@pytest.fixture
def issuer(es256: Signer) -> Iterator[StaticIssuer]:
    with serve_issuer() as server:
        server.keys = [es256.jwk]
        yield server


# --- what it accepts --------------------------------------------------------------------

def test_accepts_what_keyhelper_mints_with_the_jwks_keyhelper_prints(
        write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "signing.pem", key_pair("rsa").private_pem)
    write_config(f'chain = ["jwt"]\n[backends.jwt]\nalgorithm = "RS256"\n'
                 f'key_file = "{key_file}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                 'user = "alice"\n[backends.jwt.claims]\nteam = "engineering"\n')
    jwks = keyhelper("jwks")
    token = keyhelper("--no-cache")
    assert (jwks.returncode, token.returncode, token.stderr) == (0, 0, "")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(jwks.stdout)

    identity = verifier_for({"jwks_file": str(jwks_file)}).verify(token.stdout.strip())

    claims = jwt.decode(token.stdout.strip(), options={"verify_signature": False})
    assert (identity.user_id, identity.team_id) == ("alice", "engineering")
    assert identity.metadata == {"sub": "alice", "jti": claims["jti"]}
    assert identity.expires_at == claims["exp"]


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("rsa", "PS256"),
                                           ("p256", "ES256"), ("p384", "ES384"),
                                           ("ed25519", "EdDSA")])
def test_accepts_each_public_key_algorithm(kind: str, alg: str, tmp_path: Path) -> None:
    key = signer(kind, alg)
    verifier = verifier_for({"jwks_file": str(write_jwks(tmp_path / "jwks.json", key))})
    assert verifier.verify(key.mint()).user_id == "alice"


def test_exp_and_nbf_within_the_leeway_pass(es256: Signer, tmp_path: Path) -> None:
    verifier = verifier_for({"jwks_file": str(write_jwks(tmp_path / "j.json", es256))},
                            leeway=30)
    now = int(time.time())
    assert verifier.verify(es256.mint(exp=now - 10)).user_id == "alice"
    assert verifier.verify(es256.mint(nbf=now + 10, iat=now + 10)).user_id == "alice"


def test_keys_published_without_a_kid_are_each_tried(tmp_path: Path) -> None:
    first, second = signer("p256", "ES256"), signer("p384", "ES384")
    bare = [{k: v for k, v in s.jwk.items() if k != "kid"} for s in (first, second)]
    (tmp_path / "j.json").write_text(json.dumps({"keys": bare}))
    verifier = verifier_for({"jwks_file": str(tmp_path / "j.json")})
    assert verifier.verify(second.mint()).user_id == "alice"  # names a kid nobody has
    unnamed = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "user": "bob", "team": "t",
                          "exp": int(time.time()) + 60}, first.key, algorithm="ES256")
    assert verifier.verify(unnamed).user_id == "bob"


# --- each rejection ---------------------------------------------------------------------

def _rejections(es: Signer) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    other = Signer(ec.generate_private_key(ec.SECP256R1()), es.jwk, "ES256")  # same kid
    hs = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "user": "a", "exp": now + 60},
                    "s" * 32, algorithm="HS256", headers={"kid": es.kid})
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "user": "a", "exp": now + 60},
                          None, algorithm="none", headers={"kid": es.kid})
    header, body, _ = es.mint().split(".")
    return {
        "expired": (es.mint(exp=now - 120), "token expired"),
        "not yet valid": (es.mint(nbf=now + 120), "token not valid yet (nbf or iat in the future)"),
        "wrong audience": (es.mint(aud="someone-else"), "wrong audience (aud)"),
        "wrong issuer": (es.mint(iss="https://evil.test"), "wrong issuer (iss)"),
        "bad signature": (other.mint(), "bad signature"),
        "tampered body": (f"{header}.{body}x.{es.mint().split('.')[2]}",
                          "malformed token (not a JWT)"),
        "body not an object": (jwt.PyJWS().encode(b"[1]", es.key, algorithm="ES256",
                                                  headers={"kid": es.kid}), "malformed token"),
        "unknown kid": (es.mint(headers={"kid": "nobody"}), "unknown signing key (kid)"),
        "HS256": (hs, "algorithm 'HS256' not allowed"),
        "none": (unsigned, "algorithm 'none' not allowed"),
        "no exp": (es.mint(exp=None), "missing claim exp"),
        "no user": (es.mint(user=None), "missing claim user"),
        "no team": (es.mint(team=None), "missing claim team"),
        "an sk- key": ("sk-ant-api03-abcdef", "malformed token (not a JWT)"),
        "three dots of junk": ("a.b.c", "malformed token (not a JWT)"),
        "empty": ("", "malformed token (not a JWT)"),
        "too long": (es.mint(pad="x" * 20000), "malformed token (not a JWT)"),
    }


REJECTIONS = list(_rejections(signer("p256", "ES256")))


@pytest.mark.parametrize("case", REJECTIONS)
def test_each_rejection_has_a_short_reason_without_the_token(
        case: str, es256: Signer, tmp_path: Path) -> None:
    verifier = verifier_for({"jwks_file": str(write_jwks(tmp_path / "j.json", es256))},
                            leeway=30)
    token, reason = _rejections(es256)[case]
    with pytest.raises(Rejected) as caught:
        verifier.verify(token)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    assert verifier.cached(token) is None  # a rejection is never cached as a pass


def test_algorithm_must_fit_the_key_no_confusion(tmp_path: Path) -> None:
    rs = signer("rsa", "RS256")
    ps = Signer(rs.key, rs.jwk, "PS256")  # same key, the JWK says RS256
    verifier = verifier_for({"jwks_file": str(write_jwks(tmp_path / "j.json", rs))})
    with pytest.raises(Rejected, match=r"^algorithm PS256 does not fit the signing key$"):
        verifier.verify(ps.mint())


def test_an_algorithm_outside_the_allow_list_is_refused(es256: Signer, tmp_path: Path) -> None:
    verifier = verifier_for({"jwks_file": str(write_jwks(tmp_path / "j.json", es256))},
                            algorithms=["RS256"])
    with pytest.raises(Rejected, match=r"^algorithm 'ES256' not allowed$"):
        verifier.verify(es256.mint())


# --- the token cache --------------------------------------------------------------------

def test_a_verified_token_is_served_from_the_cache_until_its_exp(
        es256: Signer, tmp_path: Path) -> None:
    wall = [time.time()]
    settings = gateway_settings.from_mapping(
        {**BASE, "jwks_file": str(write_jwks(tmp_path / "j.json", es256))})
    verifier = Verifier(settings, clock=Clock(), wall=lambda: wall[0]).start()
    token = es256.mint(exp=int(wall[0]) + 60)
    first = verifier.verify(token)
    assert verifier.cached(token) is first
    assert verifier.verify(token) is first
    wall[0] += 61
    assert verifier.cached(token) is None


def test_the_token_cache_is_bounded(es256: Signer, tmp_path: Path) -> None:
    verifier = verifier_for({"jwks_file": str(write_jwks(tmp_path / "j.json", es256))},
                            token_cache_size=3)
    tokens = [es256.mint() for _ in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert [verifier.cached(t) is not None for t in tokens] == [False, False, True, True, True]


# --- keys: rollover, unknown kids, a down endpoint, start-up ----------------------------

def test_rollover_two_keys_then_the_old_one_withdrawn(es256: Signer,
                                                      issuer: StaticIssuer) -> None:
    clock = Clock()
    verifier = verifier_for({"jwks_url": issuer.jwks_url}, clock, jwks_ttl=300)
    old_token = es256.mint()
    assert verifier.verify(old_token).user_id == "alice"
    assert issuer.fetches() == 1

    # Ops publish the new key next to the old one, then switch the signer.
    new = signer("p384", "ES384")
    issuer.keys = [es256.jwk, new.jwk]
    new_token = new.mint()
    assert verifier.verify(new_token).user_id == "alice"  # unknown kid: refetched at once
    assert issuer.fetches() == 2
    assert verifier.verify(es256.mint()).user_id == "alice"  # old tokens still pass
    assert issuer.fetches() == 2

    # After the longest token TTL they drop the old key: the next refresh forgets it, and
    # its tokens, cached ones included, are refused.
    issuer.keys = [new.jwk]
    clock.now += 301
    assert verifier.cached(old_token) is not None  # served while the refresh runs
    until(lambda: verifier.keys.kids() == [new.kid])
    assert verifier.cached(old_token) is None
    with pytest.raises(Rejected, match=r"^unknown signing key \(kid\)$"):
        verifier.verify(old_token)
    assert verifier.verify(new_token).user_id == "alice"


def test_a_flood_of_unknown_kids_costs_one_fetch_per_interval(es256: Signer,
                                                              issuer: StaticIssuer) -> None:
    clock = Clock()
    verifier = verifier_for({"jwks_url": issuer.jwks_url}, clock, jwks_min_refetch=30)
    assert issuer.fetches() == 1
    for _ in range(200):
        with pytest.raises(Rejected, match=r"^unknown signing key \(kid\)$"):
            verifier.verify(es256.mint(headers={"kid": uuid.uuid4().hex}))
    assert issuer.fetches() == 2  # the first unknown kid refetched; the rest waited

    clock.now += 29
    with pytest.raises(Rejected):
        verifier.verify(es256.mint(headers={"kid": "still-unknown"}))
    assert issuer.fetches() == 2
    clock.now += 1
    with pytest.raises(Rejected):
        verifier.verify(es256.mint(headers={"kid": "still-unknown"}))
    assert issuer.fetches() == 3
    assert verifier.verify(es256.mint()).user_id == "alice"  # known kids are unaffected
    assert issuer.fetches() == 3


def test_a_down_jwks_endpoint_serves_the_cached_keys(
        es256: Signer, issuer: StaticIssuer, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    verifier = verifier_for({"jwks_url": issuer.jwks_url}, clock, jwks_ttl=300,
                            jwks_min_refetch=30)
    issuer.down = True
    clock.now += 301
    with caplog.at_level(logging.WARNING, logger="keyhelper.gateway"):
        assert verifier.verify(es256.mint()).user_id == "alice"  # starts a background refresh
        until(lambda: issuer.fetches() == 2)
        until(lambda: "serving the 1 cached keys" in caplog.text)
    assert (f"keyhelper gateway: jwks_url {issuer.jwks_url}: HTTP 503; serving the 1 cached "
            "keys") in caplog.messages
    assert verifier.verify(es256.mint()).user_id == "alice"  # still, with no new fetch yet
    new = signer("p384", "ES384")
    with pytest.raises(Rejected, match=r"^unknown signing key \(kid\)$"):
        verifier.verify(new.mint())  # cannot be fetched: refused, not let through

    issuer.down = False
    issuer.keys = [es256.jwk, new.jwk]
    clock.now += 30
    assert verifier.verify(new.mint()).user_id == "alice"


def test_a_cache_hit_never_waits_for_a_jwks_fetch(es256: Signer, issuer: StaticIssuer) -> None:
    """A fetch for an unknown kid hangs on a slow JWKS endpoint; meanwhile a cached token
    (its keys past their TTL, too) is answered at once: nothing on the hit path waits for
    the network, so LiteLLM's event loop never blocks."""
    clock = Clock()
    verifier = verifier_for({"jwks_url": issuer.jwks_url}, clock, jwks_ttl=300)
    token = es256.mint()
    verifier.verify(token)
    issuer.stall = threading.Event()
    unknown = es256.mint(headers={"kid": "new"})

    def fetch() -> None:
        with pytest.raises(Rejected):
            verifier.verify(unknown)

    fetching = threading.Thread(target=fetch)
    fetching.start()
    try:
        until(lambda: issuer.fetches() == 2)  # the fetch holds the key set's lock now
        clock.now += 301
        answers: list[Identity | None] = []
        hit = threading.Thread(target=lambda: answers.append(verifier.cached(token)))
        hit.start()
        hit.join(5)
        assert not hit.is_alive() and answers and answers[0] is not None
    finally:
        issuer.stall.set()
        fetching.join(30)


@pytest.mark.parametrize("case", ["missing file", "endpoint down", "only a private key",
                                  "no keys"])
def test_start_up_with_no_key_refuses_with_a_clear_log_line(
        case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    private = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}
    with serve_issuer() as server:
        server.down = case == "endpoint down"
        server.keys = [private] if case == "only a private key" else []
        source = ({"jwks_file": str(tmp_path / "nowhere.json")} if case == "missing file"
                  else {"jwks_url": server.jwks_url})
        with caplog.at_level(logging.WARNING, logger="keyhelper.gateway"), \
                pytest.raises(NoKeys) as caught:
            verifier_for(source)
    reason = {"missing file": f"jwks_file {tmp_path}/nowhere.json: No such file or directory",
              "endpoint down": f"jwks_url {server.jwks_url}: HTTP 503",
              "only a private key": "the sources hold no usable key",
              "no keys": "the sources hold no usable key"}[case]
    line = f"keyhelper gateway: no signing keys, refusing to start: {reason}"
    assert str(caught.value) == line
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [line]
    if case == "only a private key":
        assert (f"jwks_url {server.jwks_url}: key 'hmac' is a private or symmetric key: left "
                "out (publish only the public half of an asymmetric key)") in caplog.messages


def test_oidc_discovery_finds_the_jwks_and_trusts_the_issuer(es256: Signer,
                                                             issuer: StaticIssuer) -> None:
    settings = gateway_settings.from_mapping({"audience": AUDIENCE,
                                              "oidc_issuer": issuer.url})
    verifier = Verifier(settings).start()
    assert verifier.verify(es256.mint(iss=issuer.url)).user_id == "alice"  # sub by default
    with pytest.raises(Rejected, match=r"^wrong issuer \(iss\)$"):
        verifier.verify(es256.mint(iss=ISSUER))
    assert (issuer.hits["/.well-known/openid-configuration"], issuer.fetches()) == (1, 1)


def test_https_key_sources_are_verified_against_ca_file(es256: Signer, tmp_path: Path) -> None:
    ca = TestCA("keyhelper gateway test CA")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    ca.issue("127.0.0.1", x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), cert, key)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    with serve_issuer(tls=(cert, key)) as server:
        server.keys = [es256.jwk]
        with pytest.raises(NoKeys, match=r"jwks_url https://127\.0\.0\.1:\d+/jwks: "
                                         r"SSLCertVerificationError"):
            verifier_for({"jwks_url": server.jwks_url})
        trusted = verifier_for({"jwks_url": server.jwks_url,
                                "ca_file": str(tmp_path / "ca.pem")})
        assert trusted.verify(es256.mint()).user_id == "alice"


def test_oidc_discovery_naming_another_issuer_is_refused(issuer: StaticIssuer) -> None:
    issuer.issuer = "https://elsewhere.test"
    settings = gateway_settings.from_mapping({"audience": AUDIENCE,
                                              "oidc_issuer": issuer.url})
    with pytest.raises(NoKeys, match="the discovery document names another issuer"):
        Verifier(settings).start()


# --- claims mapping ---------------------------------------------------------------------

def test_claims_mapping(es256: Signer, tmp_path: Path) -> None:
    jwks = str(write_jwks(tmp_path / "j.json", es256))
    verifier = verifier_for({"jwks_file": jwks, "claims": {
        "user_id": "uid", "team_id": "ext.team", "metadata": ["email", "groups", "absent"]}})
    identity = verifier.verify(es256.mint(uid=42, ext={"team": "ml"}, email="a@x.test",
                                          groups=["g1", "g2"]))
    assert identity == Identity("42", "ml", {"email": "a@x.test", "groups": ["g1", "g2"]},
                                identity.expires_at, es256.kid, identity.claims)
    with pytest.raises(Rejected, match=r"^missing claim ext.team$"):
        verifier.verify(es256.mint(uid="bob", ext={"group": "ml"}))
    with pytest.raises(Rejected, match=r"^missing claim uid$"):
        verifier.verify(es256.mint(uid="", ext={"team": "ml"}))

    no_team = verifier_for({"jwks_file": jwks, "claims": {"user_id": "user"}})
    identity = no_team.verify(es256.mint())
    assert (identity.user_id, identity.team_id, identity.metadata) == ("alice", None, {})


# --- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    ({"issuer": ISSUER, "jwks_file": "j"},
     "config error: gw.toml: audience: set the audience the tokens must name (aud), so that "
     "a token minted for another service is refused"),
    ({"audience": "a", "jwks_file": "j"},
     "config error: gw.toml: issuer: set the issuer the tokens must name (iss)"),
    ({"issuer": ISSUER, "audience": "a"},
     "config error: gw.toml: jwks_file: no key source: set jwks_file, jwks_url or oidc_issuer"),
    ({**BASE, "jwks_file": "j", "algorithms": ["HS256"]},
     "config error: gw.toml: algorithms: HS256 is not allowed (public-key algorithms only: "
     "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)"),
    ({**BASE, "jwks_file": "j", "jwks_ttl": 0},
     "config error: gw.toml: jwks_ttl: expected a number from 1"),
    ({**BASE, "jwks_fil": "j"}, "config error: gw.toml: jwks_fil: unknown setting"),
    ({**BASE, "jwks_file": "j", "claims": {"user": "u"}},
     "config error: gw.toml: claims.user: unknown setting (user_id, team_id, metadata)"),
])
def test_settings_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        gateway_settings.from_mapping(data, source="gw.toml")
    assert caught.value.describe() == message


def test_settings_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f'issuer = "{ISSUER}"\naudience = ["{AUDIENCE}", "b"]\n'
                    'jwks_url = "https://vault.test/v1/identity/oidc/.well-known/keys"\n'
                    'leeway = 5\n[claims]\nuser_id = "user"\n')
    settings = gateway_settings.from_env({gateway_settings.ENV_VAR: str(path)})
    assert (settings.issuer, settings.audience, settings.leeway, settings.user_id,
            settings.source) == ((ISSUER,), (AUDIENCE, "b"), 5.0, "user", str(path))
    with pytest.raises(ConfigError, match="set KEYHELPER_GATEWAY_CONFIG"):
        gateway_settings.from_env({})


# --- trust anchors: files nobody else may write ------------------------------------------

def test_a_jwks_file_others_can_write_is_not_trusted(es256: Signer, tmp_path: Path) -> None:
    """Whoever can write the JWKS file can add a key and sign any token: it is read as
    keyhelper's own config file is (fails with a plain open())."""
    path = write_jwks(tmp_path / "jwks.json", es256)
    path.chmod(0o666)
    with pytest.raises(NoKeys) as caught:
        verifier_for({"jwks_file": str(path)})
    assert str(caught.value) == (
        f"keyhelper gateway: no signing keys, refusing to start: jwks_file {path}: writable "
        f"by group or others (mode 666); run: chmod go-w {path}")
    path.chmod(0o644)
    assert verifier_for({"jwks_file": str(path)}).verify(es256.mint()).user_id == "alice"


def test_a_jwks_file_in_a_directory_others_can_write_is_not_trusted(
        es256: Signer, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    path = write_jwks(shared / "jwks.json", es256)
    shared.chmod(0o777)
    with pytest.raises(NoKeys, match=rf"^keyhelper gateway: no signing keys, refusing to "
                                     rf"start: jwks_file {path}: directory {shared} is "
                                     rf"writable by group or others \(mode 777\)"):
        verifier_for({"jwks_file": str(path)})


def test_a_settings_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f'issuer = "{ISSUER}"\naudience = "{AUDIENCE}"\njwks_file = "j"\n')
    path.chmod(0o664)
    with pytest.raises(ConfigError) as caught:
        gateway_settings.from_env({gateway_settings.ENV_VAR: str(path)})
    assert caught.value.describe() == (
        f"config error: {path}: writable by group or others (mode 664); run: chmod go-w {path}")
    path.chmod(0o644)
    assert gateway_settings.from_env({gateway_settings.ENV_VAR: str(path)}).issuer == (ISSUER,)
    with pytest.raises(ConfigError) as caught:
        gateway_settings.from_env({gateway_settings.ENV_VAR: str(tmp_path / "none.toml")})
    assert caught.value.describe() == (
        f"config error: {tmp_path}/none.toml: cannot read it (No such file or directory)")


def test_a_ca_file_others_can_write_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(TestCA("keyhelper gateway test CA").pem)
    ca.chmod(0o646)
    with pytest.raises(ConfigError) as caught:
        verifier_for({"jwks_url": "https://127.0.0.1:9/jwks"}, ca_file=str(ca))
    assert caught.value.describe() == (
        f"config error: {ca}: writable by group or others (mode 646); run: chmod go-w {ca}")
