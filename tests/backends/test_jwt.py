"""The jwt backend: minted tokens checked by jwcrypto (not the pyjwt that signs them),
claims templating, caching around ``exp``, errors, and ``keyhelper jwks``.

Where time must be frozen or moved (iat/nbf/exp, the cache's life) the core runs
in-process under freezegun; everything else runs the real console script.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import freezegun
import pytest
from freezegun import freeze_time
from helpers import keyhelper
from jwcrypto import jwk
from jwt_keys import (
    ALGORITHMS,
    HMAC_SECRETS,
    KEY_KINDS,
    key_pair,
    signature_fails,
    signing_material,
    unverified,
    verify,
    verifying_key,
    write_key_file,
)

from keyhelper import resolver
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection
from keyhelper.cachepolicy import try_hit
from keyhelper.errors import Unavailable
from keyhelper.testing.fixtures import WriteConfig

T0 = 1_900_000_000  # 2030-03-17 17:46:40 UTC, a whole second
JTI = re.compile(r"^[A-Za-z0-9_-]{22}$")
USER = pwd.getpwuid(os.getuid()).pw_name  # the account the tests run as ("root" in CI)
SOMEONE_ELSE = "someoneelse"
ALL_ALGORITHMS = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384, EdDSA"


@pytest.fixture(autouse=True)
def login_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test also shows that $LOGNAME and $USER do not make the user claim."""
    monkeypatch.setenv("LOGNAME", SOMEONE_ELSE)
    monkeypatch.setenv("USER", SOMEONE_ELSE)


@pytest.fixture
def frozen() -> Iterator[object]:
    """Time frozen at T0, also inside the core's backend thread: freezegun's default ignore
    list has "threading", which makes a clock read shallow in a thread's stack (fetch ->
    context.now) see real time."""
    previous = freezegun.config.settings.default_ignore_list
    freezegun.configure(default_ignore_list=[m for m in previous if m != "threading"])
    try:
        with freeze_time(datetime.fromtimestamp(T0, UTC)) as clock:
            yield clock
    finally:
        freezegun.configure(default_ignore_list=previous)


def jwt_config(write_config: WriteConfig, key_file: Path, algorithm: str,
               extra: str = "", top: str = "") -> Path:
    return write_config(f'{top}\n[backends.jwt]\nalgorithm = "{algorithm}"\n'
                        f'key_file = "{key_file}"\n{extra}')


def mint_in_process(profile: str | None = None) -> resolver.Result:
    return resolver.resolve(Selection(("jwt",), profile), os.environ)


def entry_path(cache_dir: Path, profile: str | None = None) -> Path:
    return cache_dir / f"{kentry.entry_key(Selection(('jwt',), profile), os.environ)}.entry"


def entry_fields(path: Path) -> dict[str, str]:
    return dict(line.partition(" ")[::2] for line in path.read_text().splitlines()[1:])


# --- every algorithm, checked by jwcrypto ----------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_verified_by_jwcrypto_at_frozen_time(
        algorithm: str, write_config: WriteConfig, tmp_path: Path, frozen: object) -> None:
    key_file = write_key_file(tmp_path / "signing.key", signing_material(algorithm))
    jwt_config(write_config, key_file, algorithm)

    result = mint_in_process()

    key = verifying_key(algorithm)
    header, claims = verify(result.token.value, key, algorithm)
    jti = claims.pop("jti")
    assert JTI.match(jti)
    assert claims == {"user": USER, "sub": USER, "iat": T0, "nbf": T0, "exp": T0 + 3600}
    expected_header = {"alg": algorithm, "typ": "JWT"}
    if algorithm not in HMAC_SECRETS:  # kid: the RFC 7638 thumbprint, as jwcrypto computes it
        expected_header["kid"] = key.thumbprint()
    assert header == expected_header
    assert result.token.expires_at == T0 + 3600
    assert (result.backend, result.source) == ("jwt", "fetched")


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES384", "EdDSA"])
def test_signature_by_another_key_is_rejected_by_jwcrypto(
        algorithm: str, write_config: WriteConfig, tmp_path: Path) -> None:
    """The verification above means something: another key of the same kind fails."""
    key_file = write_key_file(tmp_path / "signing.key", signing_material(algorithm))
    jwt_config(write_config, key_file, algorithm)
    run = keyhelper("--backend", "jwt")
    assert run.returncode == 0, run.stderr
    if algorithm in HMAC_SECRETS:
        other = jwk.JWK(kty="oct", k="b3RoZXItc2VjcmV0LW9mLWF0LWxlYXN0LTMyLWJ5dGVzLXh4eA")
    else:
        other = jwk.JWK.generate(**{"RS256": {"kty": "RSA", "size": 2048},
                                    "ES384": {"kty": "EC", "crv": "P-384"},
                                    "EdDSA": {"kty": "OKP", "crv": "Ed25519"}}[algorithm])
    assert signature_fails(run.stdout.strip(), other, algorithm)


def test_ed448_key_signs_eddsa(write_config: WriteConfig, tmp_path: Path,
                               frozen: object) -> None:
    key_file = write_key_file(tmp_path / "ed448.pem", key_pair("ed448").private_pem)
    jwt_config(write_config, key_file, "EdDSA")
    token = mint_in_process().token.value
    key = jwk.JWK.from_pem(key_pair("ed448").public_pem.encode())
    header, claims = verify(token, key, "EdDSA")
    assert (header["alg"], claims["exp"]) == ("EdDSA", T0 + 3600)


def test_real_script_prints_one_token_per_line_checked_by_jwcrypto(
        write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "rsa.pem", signing_material("RS256"))
    jwt_config(write_config, key_file, "RS256",
               'kid = "2026-11"\nissuer = "https://keys.example"\n'
               'audience = ["gateway", "vault"]\nttl = 900\n')
    before = int(datetime.now(UTC).timestamp())
    run = keyhelper("--backend", "jwt")
    after = int(datetime.now(UTC).timestamp())
    assert (run.returncode, run.stderr) == (0, "")
    token = run.stdout.removesuffix("\n")
    assert run.stdout == token + "\n" and "\n" not in token
    header, claims = verify(token, verifying_key("RS256"), "RS256")
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "2026-11"}
    assert before <= claims["iat"] <= after
    assert claims["nbf"] == claims["iat"] and claims["exp"] == claims["iat"] + 900
    assert claims["iss"] == "https://keys.example"
    assert claims["aud"] == ["gateway", "vault"]


def test_each_token_has_a_unique_jti(write_config: WriteConfig, tmp_path: Path,
                                     frozen: object) -> None:
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    write_config(f'[backends.jwt]\nalgorithm = "HS256"\nkey_file = "{key_file}"\n')
    selection = Selection(("jwt",), no_cache=True)
    tokens = [resolver.resolve(selection, os.environ).token.value for _ in range(20)]
    jtis = {unverified(token)[1]["jti"] for token in tokens}
    assert len(jtis) == 20  # same second, same claims: only jti tells them apart


# --- the signing key from another backend ------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["HS512", "ES256", "PS256", "EdDSA"])
def test_signing_key_from_another_backend(algorithm: str, write_config: WriteConfig) -> None:
    """A PEM with its line breaks (or an HMAC secret) kept in another backend: here env."""
    write_config(f'[backends.signing]\ntype = "env"\nvar = "JWT_SIGNING_KEY"\n\n'
                 f'[backends.jwt]\nalgorithm = "{algorithm}"\nkey = "signing"\n')
    material = signing_material(algorithm)
    run = keyhelper("--backend", "jwt", env={"JWT_SIGNING_KEY": material})
    assert (run.returncode, run.stderr) == (0, "")
    header, claims = verify(run.stdout.strip(), verifying_key(algorithm), algorithm)
    assert (header["alg"], claims["user"]) == (algorithm, USER)


def test_pem_with_escaped_line_breaks_from_an_env_var(write_config: WriteConfig) -> None:
    write_config('[backends.signing]\ntype = "env"\nvar = "JWT_SIGNING_KEY"\n\n'
                 '[backends.jwt]\nalgorithm = "RS256"\nkey = "signing"\n')
    escaped = signing_material("RS256").replace("\n", "\\n")
    run = keyhelper("--backend", "jwt", env={"JWT_SIGNING_KEY": escaped})
    assert (run.returncode, run.stderr) == (0, "")
    verify(run.stdout.strip(), verifying_key("RS256"), "RS256")


# --- claims ---------------------------------------------------------------------------------

def test_claims_table_with_placeholders(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "ec.pem", signing_material("ES256"))
    jwt_config(write_config, key_file, "ES256", (
        'subject = "{user}@example.com"\n'
        "[backends.jwt.claims]\n"
        'team = "engineering"\n'
        'label = "{user}@{host}"\n'
        'profile = "{profile}"\n'
        'literal = "{{user}}"\n'
        "level = 3\nadmin = false\n"
        'groups = ["{user}", "all"]\n'
        'nested = { who = "{user}", weight = 1.5 }\n'
    ), top='[profiles.dev]\nchain = ["jwt"]\n')
    run = keyhelper("--profile", "dev")
    assert (run.returncode, run.stderr) == (0, "")
    _, claims = verify(run.stdout.strip(), verifying_key("ES256"), "ES256")
    for minted in ("iat", "nbf", "exp", "jti"):
        claims.pop(minted)
    assert claims == {
        "user": USER, "sub": f"{USER}@example.com", "team": "engineering",
        "label": f"{USER}@{socket.gethostname()}", "profile": "dev", "literal": "{user}",
        "level": 3, "admin": False, "groups": [USER, "all"],
        "nested": {"who": USER, "weight": 1.5},
    }


def test_profile_placeholder_without_a_profile_is_empty(
        write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    jwt_config(write_config, key_file, "HS256", '[backends.jwt.claims]\nscope = "p:{profile}"\n')
    run = keyhelper("--backend", "jwt")
    assert run.returncode == 0, run.stderr
    assert verify(run.stdout.strip(), verifying_key("HS256"), "HS256")[1]["scope"] == "p:"


def test_user_claim_is_the_os_account_not_logname_or_user(
        write_config: WriteConfig, tmp_path: Path, cache_dir: Path) -> None:
    """$LOGNAME/$USER may be set by any caller (a project's settings env block): ignored."""
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    jwt_config(write_config, key_file, "HS256")
    run = keyhelper("--backend", "jwt", "--no-cache",
                    env={"LOGNAME": SOMEONE_ELSE, "USER": SOMEONE_ELSE})
    assert run.returncode == 0, run.stderr
    _, claims = unverified(run.stdout.strip())
    assert (claims["user"], claims["sub"]) == (USER, USER)
    # Nor do they key the cache: another $LOGNAME is served the same cached token.
    first = keyhelper("--backend", "jwt", env={"LOGNAME": "a", "USER": "a"})
    second = keyhelper("--backend", "jwt", env={"LOGNAME": "b", "USER": "b"})
    assert first.returncode == second.returncode == 0
    assert second.stdout == first.stdout
    entry = kentry.parse_entry(entry_path(cache_dir).read_bytes())
    assert entry is not None and entry.env_names == ()


def test_user_option_sets_the_user_claim_and_placeholder(write_config: WriteConfig,
                                                         tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    jwt_config(write_config, key_file, "HS256",
               'user = "alice"\n[backends.jwt.claims]\norigin = "{user}@dev"\n')
    run = keyhelper("--backend", "jwt", env={"LOGNAME": SOMEONE_ELSE})
    assert run.returncode == 0, run.stderr
    _, claims = unverified(run.stdout.strip())
    assert (claims["user"], claims["sub"], claims["origin"]) == ("alice", "alice", "alice@dev")
    jwt_config(write_config, key_file, "HS256",
               'user = "alice"\n[backends.jwt.claims]\nuser = "svc-{user}"\n')
    run = keyhelper("--backend", "jwt", "--no-cache")
    _, claims = unverified(run.stdout.strip())
    assert (claims["user"], claims["sub"]) == ("svc-alice", "alice")


def test_empty_user_option_is_a_config_error(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    path = jwt_config(write_config, key_file, "HS256", 'user = " "\n')
    run = keyhelper("--backend", "jwt")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (f"keyhelper: config error: {path}: backends.jwt.user: expected a "
                          "login name, got an empty string\n")


def test_login_name_of_a_uid_without_an_account_is_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not $USER then: the jwt backend asks for its user option instead."""
    from keyhelper.backend import login_name

    assert login_name({"USER": SOMEONE_ELSE, "LOGNAME": SOMEONE_ELSE}) == USER
    unknown = 54321
    with pytest.raises(KeyError):
        pwd.getpwuid(unknown)
    monkeypatch.setattr(os, "getuid", lambda: unknown)  # in process: no such account exists
    assert login_name({"USER": SOMEONE_ELSE, "LOGNAME": SOMEONE_ELSE}) is None


# --- caching around exp ------------------------------------------------------------------------

def test_real_script_reuses_the_cached_token(write_config: WriteConfig, tmp_path: Path,
                                             cache_dir: Path) -> None:
    key_file = write_key_file(tmp_path / "rsa.pem", signing_material("RS256"))
    jwt_config(write_config, key_file, "RS256")
    first = keyhelper("--backend", "jwt")
    second = keyhelper("--backend", "jwt")
    assert first.returncode == second.returncode == 0
    assert second.stdout == first.stdout
    fields = entry_fields(entry_path(cache_dir))
    _, claims = unverified(first.stdout.strip())
    # Cached for the default 300 s, far inside the token's hour.
    assert float(fields["token_expires"]) == claims["exp"]
    assert float(fields["expires"]) == pytest.approx(float(fields["stored"]) + 300)


def test_real_script_cache_ends_60_s_before_exp(write_config: WriteConfig, tmp_path: Path,
                                                cache_dir: Path) -> None:
    key_file = write_key_file(tmp_path / "rsa.pem", signing_material("RS256"))
    jwt_config(write_config, key_file, "RS256", "ttl = 600\n", top="ttl = 7200\n")
    run = keyhelper("--backend", "jwt")
    assert run.returncode == 0
    fields = entry_fields(entry_path(cache_dir))
    exp = unverified(run.stdout.strip())[1]["exp"]
    assert (float(fields["token_expires"]), float(fields["expires"])) == (exp, exp - 60)


def test_real_script_never_caches_a_token_of_60_s_or_less(
        write_config: WriteConfig, tmp_path: Path, cache_dir: Path) -> None:
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    jwt_config(write_config, key_file, "HS256", "ttl = 60\n")
    first = keyhelper("--backend", "jwt")
    second = keyhelper("--backend", "jwt")
    assert first.returncode == second.returncode == 0
    assert first.stdout != second.stdout
    assert not entry_path(cache_dir).exists()


def test_cached_until_60_s_before_exp_then_fresh_when_claude_asks_30_s_before(
        write_config: WriteConfig, tmp_path: Path, frozen: object) -> None:
    """Claude Code 2.1.332 asks again ~30 s before exp: that call must mint a new token."""
    key_file = write_key_file(tmp_path / "rsa.pem", signing_material("RS256"))
    # refresh_ahead = 0: a lean hit late in the entry's life would start a background
    # refresh, a real process outside the frozen clock.
    jwt_config(write_config, key_file, "RS256", "ttl = 600\n",
               top="ttl = 7200\nrefresh_ahead = 0\n")
    selection = Selection(("jwt",))
    first = mint_in_process()
    assert first.source == "fetched" and first.token.expires_at == T0 + 600

    frozen.tick(539)  # type: ignore[attr-defined]  # 61 s of life left: plenty, reused
    again = mint_in_process()
    assert (again.source, again.token.value) == ("hit", first.token.value)
    assert try_hit(selection, os.environ) == first.token.value  # the lean path agrees

    frozen.tick(31)  # type: ignore[attr-defined]  # exp - 30 s: Claude Code's refresh
    assert try_hit(selection, os.environ) is None
    fresh = mint_in_process()
    assert fresh.source == "fetched" and fresh.token.value != first.token.value
    _, claims = verify(fresh.token.value, verifying_key("RS256"), "RS256")
    assert (claims["iat"], claims["exp"]) == (T0 + 570, T0 + 1170)
    assert try_hit(selection, os.environ) == fresh.token.value


def test_default_cache_life_is_300_s_of_an_hour_long_token(
        write_config: WriteConfig, tmp_path: Path, frozen: object) -> None:
    key_file = write_key_file(tmp_path / "ec.pem", signing_material("ES384"))
    jwt_config(write_config, key_file, "ES384")
    first = mint_in_process()
    frozen.tick(299)  # type: ignore[attr-defined]
    assert mint_in_process().token.value == first.token.value
    frozen.tick(1)  # type: ignore[attr-defined]
    fresh = mint_in_process()
    assert fresh.source == "fetched"
    assert unverified(fresh.token.value)[1]["exp"] == T0 + 300 + 3600


# --- errors: one line each, never the key ------------------------------------------------------

def failed(message: str) -> str:
    return f"keyhelper: no key from jwt\n  jwt failed: {message}\n"


def test_hmac_secret_shorter_than_the_hash_is_refused(write_config: WriteConfig) -> None:
    write_config('[backends.signing]\ntype = "env"\nvar = "JWT_SECRET"\n\n'
                 '[backends.jwt]\nalgorithm = "HS384"\nkey = "signing"\n')
    secret = "short-secret-of-47-bytes-" + "x" * 22
    assert len(secret) == 47
    run = keyhelper("--backend", "jwt", env={"JWT_SECRET": secret})
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == failed("the HMAC secret from backend 'signing' is 47 "
                                            "bytes; HS384 needs at least 48")
    assert secret not in run.stderr


KEY_MISMATCHES = [
    # (algorithm, key kind, what the error says the key is, what the algorithm needs)
    ("RS256", "p256", "an EC key on secp256r1", "an RSA private key of 2048 bits or more"),
    ("PS256", "rsa1024", "an RSA key of 1024 bits", "an RSA private key of 2048 bits or more"),
    ("ES256", "p384", "an EC key on secp384r1", "an EC private key on P-256"),
    ("ES384", "ed25519", "an Ed25519 key", "an EC private key on P-384"),
    ("EdDSA", "rsa", "an RSA key of 2048 bits", "an Ed25519 or Ed448 private key"),
]


@pytest.mark.parametrize(("algorithm", "kind", "is_", "needs"), KEY_MISMATCHES)
def test_key_that_does_not_fit_the_algorithm(algorithm: str, kind: str, is_: str, needs: str,
                                             write_config: WriteConfig, tmp_path: Path) -> None:
    pem = key_pair(kind).private_pem
    key_file = write_key_file(tmp_path / "k.pem", pem)
    jwt_config(write_config, key_file, algorithm)
    run = keyhelper("--backend", "jwt")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == failed(f"the key from key_file {key_file} is {is_}, "
                                            f"but {algorithm} needs {needs}")
    assert _pem_body(pem) not in run.stderr


def test_hmac_algorithm_with_a_pem_key(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "k.pem", key_pair("rsa").private_pem)
    jwt_config(write_config, key_file, "HS256")
    run = keyhelper("--backend", "jwt")
    assert run.stderr == failed(f"the key from key_file {key_file} is a PEM key, "
                                            "but HS256 needs a shared secret")


def test_asymmetric_algorithm_with_a_plain_secret(write_config: WriteConfig) -> None:
    write_config('[backends.signing]\ntype = "env"\nvar = "JWT_SECRET"\n\n'
                 '[backends.jwt]\nalgorithm = "ES256"\nkey = "signing"\n')
    run = keyhelper("--backend", "jwt", env={"JWT_SECRET": HMAC_SECRETS["HS512"]})
    assert run.stderr == failed("the key from backend 'signing' is not a PEM "
                                            "private key (expected -----BEGIN ... PRIVATE "
                                            "KEY-----)")
    assert HMAC_SECRETS["HS512"] not in run.stderr


def _pem_body(pem: str) -> str:
    return pem.splitlines()[1]


UNREADABLE = [
    ("missing", "cannot read key_file {path} (No such file or directory)"),
    ("group-readable", "key_file {path} is readable by group or others (mode 640); "
                       "run: chmod 600 {path}"),
    ("other-writable", "key_file {path} is writable by group or others (mode 602); "
                       "run: chmod 600 {path}"),
    ("directory", "key_file {path} is not a regular file"),
    ("garbage", "the key from key_file {path} cannot be read as a PEM private key"),
    ("public", "the key from key_file {path} is a public key or certificate; signing needs "
               "the private key"),
    ("encrypted", "the key from key_file {path} is encrypted with a passphrase; keyhelper "
                  "needs it unencrypted (keep it in a protected store instead)"),
    ("first-line", "the key from key_file {path} is cut short (no -----END PRIVATE KEY----- "
                   "line); the file and command backends keep only the first line: use "
                   "key_file"),
    ("binary", "key_file {path} is not text (a PEM key is)"),
]


@pytest.mark.parametrize(("case", "message"), UNREADABLE, ids=[c for c, _ in UNREADABLE])
def test_unreadable_key_file(case: str, message: str, write_config: WriteConfig,
                             tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path = tmp_path / "signing.pem"
    pem = key_pair("rsa").private_pem
    if case == "group-readable":
        write_key_file(path, pem, 0o640)
    elif case == "other-writable":
        write_key_file(path, pem, 0o602)
    elif case == "directory":
        path.mkdir(mode=0o700)
    elif case == "garbage":
        write_key_file(path, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"
                             "-----END PRIVATE KEY-----\n")
    elif case == "public":
        write_key_file(path, key_pair("rsa").public_pem)
    elif case == "encrypted":
        key = serialization.load_pem_private_key(pem.encode(), None)
        write_key_file(path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase")).decode())
    elif case == "first-line":
        write_key_file(path, pem.splitlines()[0] + "\n")
    elif case == "binary":
        path.write_bytes(b"\xff\xfe" + os.urandom(64))
        path.chmod(0o600)
    jwt_config(write_config, path, "RS256")
    run = keyhelper("--backend", "jwt")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == failed(message.format(path=path))
    assert _pem_body(pem) not in run.stderr


def test_first_line_only_from_the_file_backend(write_config: WriteConfig,
                                               tmp_path: Path) -> None:
    pem_file = write_key_file(tmp_path / "k.pem", key_pair("p256").private_pem)
    write_config(f'[backends.signing]\ntype = "file"\npath = "{pem_file}"\n\n'
                 '[backends.jwt]\nalgorithm = "ES256"\nkey = "signing"\n')
    run = keyhelper("--backend", "jwt")
    assert run.stderr == failed("the key from backend 'signing' is cut short (no "
                                            "-----END PRIVATE KEY----- line); the file and "
                                            "command backends keep only the first line: use "
                                            "key_file")


def test_signing_backend_that_skips_makes_jwt_skip(write_config: WriteConfig) -> None:
    write_config('[backends.signing]\ntype = "env"\nvar = "JWT_SIGNING_KEY"\n\n'
                 '[backends.jwt]\nalgorithm = "RS256"\nkey = "signing"\n')
    run = keyhelper("--backend", "jwt")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from jwt\n  jwt skipped: signing key from "
                          "backend 'signing': $JWT_SIGNING_KEY is not set\n")


CONFIG_ERRORS = [
    ('algorithm = "HS999"\nkey_file = "/k"\n', "backends.jwt.algorithm",
     f"unknown algorithm 'HS999' (expected one of: {ALL_ALGORITHMS})"),
    ('algorithm = "none"\nkey_file = "/k"\n', "backends.jwt.algorithm",
     f"unknown algorithm 'none' (expected one of: {ALL_ALGORITHMS})"),
    ('algorithm = "HS256"\n', "backends.jwt.key",
     "set either key (the name of the backend holding the signing key) or key_file (a PEM "
     "file), not both or neither"),
    ('key = "signing"\nkey_file = "/k"\n', "backends.jwt.key",
     "set either key (the name of the backend holding the signing key) or key_file (a PEM "
     "file), not both or neither"),
    ('key_file = "/k"\nttl = 0.5\n', "backends.jwt.ttl", "expected a number of seconds from 1"),
    ('key_file = "/k"\n[backends.jwt.claims]\nexp = 1\n', "backends.jwt.claims.exp",
     "set by keyhelper for each token; remove it"),
    ('key_file = "/k"\n[backends.jwt.claims]\naud = "x"\n', "backends.jwt.claims.aud",
     "use the audience option instead"),
    ('key_file = "/k"\n[backends.jwt.claims]\nteam = "{team}"\n', "backends.jwt.claims.team",
     "unknown placeholder {team} (use {user}, {host} or {profile}; {{ and }} for literal "
     "braces)"),
    ('key_file = "/k"\n[backends.jwt.claims]\nx = ["{user.__class__}"]\n',
     "backends.jwt.claims.x",
     "unknown placeholder {user.__class__} (use {user}, {host} or {profile}; {{ and }} for "
     "literal braces)"),
    ('key_file = "/k"\n[backends.jwt.claims]\nwhen = 2026-11-27\n', "backends.jwt.claims.when",
     "expected a string, number, boolean, list or table, got date"),
    ('key_file = "/k"\nsubject = "{user"\n', "backends.jwt.subject",
     "not a valid template (expected '}' before end of string); write {{ and }} for literal "
     "braces"),
    ('key_file = "/k"\naudience = 3\n', "backends.jwt.audience",
     "expected a string or a list, got an integer"),
    ('key_file = "/k"\naudience = ["a", 3]\n', "backends.jwt.audience",
     "expected a string or a list of strings"),
]


@pytest.mark.parametrize(("options", "where", "message"), CONFIG_ERRORS)
def test_config_errors_exit_2(options: str, where: str, message: str,
                              write_config: WriteConfig) -> None:
    path = write_config(f"[backends.jwt]\n{options}")
    run = keyhelper("--backend", "jwt")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"keyhelper: config error: {path}: {where}: {message}\n"


# --- keyhelper jwks ------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_jwks_verifies_minted_tokens_in_jwcrypto(algorithm: str, write_config: WriteConfig,
                                                 tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "k.pem", signing_material(algorithm))
    jwt_config(write_config, key_file, algorithm)
    published = keyhelper("jwks", "--backend", "jwt")
    assert (published.returncode, published.stderr) == (0, "")
    jwks = json.loads(published.stdout)
    assert published.stdout == json.dumps(jwks, indent=2) + "\n"
    [member] = jwks["keys"]
    public = jwk.JWK(**member)
    assert not public.has_private
    expected = json.loads(verifying_key(algorithm).export_public())
    expected.update(kid=public.thumbprint(), use="sig", alg=algorithm)
    assert member == expected  # the public members only, nothing private

    run = keyhelper("--backend", "jwt")
    header, _ = verify(run.stdout.strip(), jwk.JWKSet.from_json(published.stdout)
                       .get_key(member["kid"]), algorithm)
    assert header["kid"] == member["kid"]


def test_jwks_uses_the_configured_kid(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "k.pem", signing_material("ES256"))
    jwt_config(write_config, key_file, "ES256", 'kid = "gateway-2026"\n')
    jwks = json.loads(keyhelper("jwks", "--backend", "jwt").stdout)
    assert [k["kid"] for k in jwks["keys"]] == ["gateway-2026"]


def test_jwks_of_several_jwt_backends_and_keys_from_another_backend(
        write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "k.pem", signing_material("RS256"))
    write_config(f'[backends.old]\ntype = "jwt"\nalgorithm = "RS256"\nkey_file = "{key_file}"\n'
                 '[backends.signing]\ntype = "env"\nvar = "JWT_KEY"\n'
                 '[backends.new]\ntype = "jwt"\nalgorithm = "EdDSA"\nkey = "signing"\n')
    run = keyhelper("jwks", "-b", "old", "-b", "new",
                    env={"JWT_KEY": signing_material("EdDSA")})
    assert run.returncode == 0, run.stderr
    keys = jwk.JWKSet.from_json(run.stdout)
    assert sorted(k["alg"] for k in json.loads(run.stdout)["keys"]) == ["EdDSA", "RS256"]
    assert len(keys["keys"]) == 2


def test_jwks_refuses_an_hmac_backend(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "hs.key", signing_material("HS256"))
    jwt_config(write_config, key_file, "HS256")
    run = keyhelper("jwks", "--backend", "jwt")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == ("keyhelper: jwt: HS256 signs with a shared secret, which has no "
                          "public key to publish\n")


def test_jwks_without_a_jwt_backend_in_the_selection() -> None:
    run = keyhelper("jwks", "--backend", "env")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == ("keyhelper jwks: no backend of type jwt in the chain (env (env)); "
                          "pick one with --backend NAME\n")


def test_jwks_reports_an_unreadable_key(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "k.pem", signing_material("ES256"), 0o644)
    jwt_config(write_config, key_file, "ES256")
    run = keyhelper("jwks", "--backend", "jwt")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (f"keyhelper: key_file {key_file} is readable by group or others "
                          f"(mode 644); run: chmod 600 {key_file}\n")


# --- cost and availability ---------------------------------------------------------------------

def test_importing_the_plugin_loads_no_jwt_or_crypto_library() -> None:
    code = ("import sys, keyhelper_plugins.jwt; print(sorted({m.split('.')[0] for m in "
            "sys.modules} & {'jwt', 'cryptography'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"


def test_check_available_names_the_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from keyhelper_plugins.jwt import JwtBackend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jwt" else real(name, *a))
    with pytest.raises(Unavailable) as caught:
        JwtBackend.check_available()
    assert caught.value.message == "jwt is not installed (pip install 'pyjwt[crypto]')"
    monkeypatch.undo()
    JwtBackend.check_available()


def test_kinds_cover_every_algorithm() -> None:
    from keyhelper_plugins.jwt import ALGORITHMS as SUPPORTED

    assert sorted(SUPPORTED) == sorted(ALGORITHMS) == sorted([*HMAC_SECRETS, *KEY_KINDS])
