"""Vault auth methods against a real OpenBao server, through the real console script:
approle, jwt (file and another backend), kubernetes, and the cached login token (0600 file,
reused, renewed, replaced)."""

from __future__ import annotations

import datetime
import json
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fixtures_openbao import OpenBao, approle, seed
from helpers import Run, keyhelper
from keyhelper_plugins.vault_auth import LOGIN_FORMAT

from keyhelper.backend import load_record

pytestmark = pytest.mark.vault

ISSUER = "https://ci.example.test"
K8S_AUDIENCE = "https://kubernetes.default.svc"


@dataclass(frozen=True)
class Keys:
    private: rsa.RSAPrivateKey
    public_pem: str
    cert_pem: str  # a self-signed certificate of the same key (Kubernetes CA stand-in)


@pytest.fixture(scope="module")
def keys() -> Keys:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(private, hashes.SHA256()))
    return Keys(private, public_pem, cert.public_bytes(serialization.Encoding.PEM).decode())


def sign(keys: Keys, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "keyhelper", "sub": "ci-job", "iat": now, "nbf": now - 5,
            "exp": now + 600, **claims}
    return pyjwt.encode(body, keys.private, algorithm="RS256")


def private_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def login_file(cache_dir: Path) -> Path:
    [path] = sorted((cache_dir / "state").glob("vault-login-*"))
    return path


def login_fields(path: Path) -> dict[str, str]:
    fields = load_record(LOGIN_FORMAT, path.read_bytes())
    assert fields is not None
    return fields


def get(openbao: OpenBao, *args: str, **env: str) -> Run:
    return keyhelper("--no-cache", *args, env={"VAULT_ADDR": openbao.addr, **env})


# --- approle -------------------------------------------------------------------------------

def test_approle_secret_id_file_and_cached_login(openbao: OpenBao, write_config, cache_dir,
                                                 tmp_path: Path):
    path, policy = seed(openbao, "sk-approle")
    role_id, secret_id = approle(openbao, policy)
    secret_file = private_file(tmp_path / "secret-id", secret_id)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_file = "{secret_file}"\n')
    tokens_before = openbao.token_count()

    first = get(openbao)
    after_first = openbao.token_count()
    second = get(openbao)

    assert (first.returncode, first.stdout, first.stderr) == (0, "sk-approle\n", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, "sk-approle\n", "")
    assert after_first == tokens_before + 1  # one login ...
    assert openbao.token_count() == after_first  # ... and the second run reused its token
    cached = login_file(cache_dir)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    fields = login_fields(cached)
    assert fields["renewable"] == "1" and float(fields["ttl"]) == 3600
    assert float(fields["expires"]) == pytest.approx(time.time() + 3600, abs=30)
    assert secret_id not in cached.read_text()


def test_approle_secret_id_env(openbao: OpenBao, write_config):
    path, policy = seed(openbao, "sk-approle-env")
    role_id, secret_id = approle(openbao, policy)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_env = "CI_SECRET_ID"\n')

    missing = get(openbao)
    result = get(openbao, CI_SECRET_ID=secret_id)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-approle-env\n", "")
    assert missing.stderr == ("keyhelper: no key from vault\n  vault skipped: $CI_SECRET_ID "
                              "(secret_id_env) is not set\n")


def test_approle_bad_secret_id(openbao: OpenBao, write_config):
    path, policy = seed(openbao, "sk-unused")
    role_id, _ = approle(openbao, policy)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_env = "CI_SECRET_ID"\n')

    result = get(openbao, CI_SECRET_ID="wrong-secret-id-value")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("keyhelper: no key from vault\n  vault failed: approle login at "
                             "auth/approle refused: invalid role or secret ID\n")


def test_login_token_renewed_when_half_spent(openbao: OpenBao, write_config, cache_dir,
                                             tmp_path: Path):
    path, policy = seed(openbao, "sk-renew")
    role_id, secret_id = approle(openbao, policy)
    secret_file = private_file(tmp_path / "secret-id", secret_id)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_file = "{secret_file}"\n')
    assert get(openbao).stdout == "sk-renew\n"
    cached = login_file(cache_dir)
    fields = login_fields(cached)
    # 40 s left of an hour: more than the 15 s margin, less than half: renew, do not log in.
    text = cached.read_text().replace(f"expires {fields['expires']}",
                                      f"expires {time.time() + 40!r}")
    cached.write_text(text)
    tokens = openbao.token_count()

    result = get(openbao)

    assert (result.returncode, result.stdout) == (0, "sk-renew\n")
    assert openbao.token_count() == tokens
    renewed = login_fields(cached)
    assert renewed["token"] == fields["token"]
    assert float(renewed["expires"]) == pytest.approx(time.time() + 3600, abs=30)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600


def test_spent_or_revoked_login_token_means_a_new_login(openbao: OpenBao, write_config,
                                                        cache_dir, tmp_path: Path):
    path, policy = seed(openbao, "sk-relogin")
    role_id, secret_id = approle(openbao, policy)
    secret_file = private_file(tmp_path / "secret-id", secret_id)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_file = "{secret_file}"\n')
    assert get(openbao).stdout == "sk-relogin\n"
    cached = login_file(cache_dir)
    first = login_fields(cached)

    # Spent: past its expiry in the file.
    cached.write_text(cached.read_text().replace(f"expires {first['expires']}",
                                                 f"expires {time.time() - 5!r}"))
    assert get(openbao).stdout == "sk-relogin\n"
    second = login_fields(cached)
    assert second["token"] != first["token"]

    # Revoked behind our back: Vault answers 403, keyhelper logs in again once.
    openbao.api("POST", "auth/token/revoke", {"token": second["token"]})
    result = get(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-relogin\n", "")
    assert login_fields(cached)["token"] not in (first["token"], second["token"])


def test_a_login_token_stored_with_the_clock_ahead_means_a_new_login(
        openbao: OpenBao, write_config, cache_dir, tmp_path: Path):
    path, policy = seed(openbao, "sk-future")
    role_id, secret_id = approle(openbao, policy)
    secret_file = private_file(tmp_path / "secret-id", secret_id)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_file = "{secret_file}"\n')
    assert get(openbao).stdout == "sk-future\n"
    cached = login_file(cache_dir)
    first = login_fields(cached)
    # Logged in while the clock was two days ahead: its expiry is past its own TTL from now.
    cached.write_text(cached.read_text().replace(
        f"expires {first['expires']}", f"expires {float(first['expires']) + 2 * 86400!r}"))
    tokens = openbao.token_count()

    result = get(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-future\n", "")
    assert openbao.token_count() == tokens + 1
    again = login_fields(cached)
    assert again["token"] != first["token"]
    assert float(again["expires"]) == pytest.approx(time.time() + 3600, abs=30)


# --- jwt -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jwt_role(openbao: OpenBao, keys: Keys) -> Iterator[tuple[str, str]]:
    """auth/jwt checking RS256 tokens against the test's public key: (kv path, role)."""
    path, policy = seed(openbao, "sk-jwt")
    openbao.enable_auth("jwt")
    openbao.api("POST", "auth/jwt/config",
                {"jwt_validation_pubkeys": [keys.public_pem], "bound_issuer": ISSUER})
    openbao.api("POST", "auth/jwt/role/ci",
                {"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["keyhelper"],
                 "token_policies": [policy], "token_ttl": "1h"})
    yield path, "ci"


def test_jwt_file(openbao: OpenBao, jwt_role, keys: Keys, write_config, tmp_path: Path):
    path, role = jwt_role
    token_file = private_file(tmp_path / "ci.jwt", sign(keys))
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "jwt"\n'
                 f'role = "{role}"\njwt_file = "{token_file}"\n')

    result = get(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-jwt\n", "")


def test_jwt_from_another_backend(openbao: OpenBao, jwt_role, keys: Keys, write_config,
                                  tmp_path: Path):
    path, role = jwt_role
    token_file = private_file(tmp_path / "ci.jwt", sign(keys, sub="other-job"))
    write_config(f'chain = ["vault"]\n[backends.ci_token]\ntype = "file"\n'
                 f'path = "{token_file}"\n[backends.vault]\npath = "{path}"\nauth = "jwt"\n'
                 f'role = "{role}"\njwt_backend = "ci_token"\n')

    result = get(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-jwt\n", "")


def test_jwt_rejected(openbao: OpenBao, jwt_role, keys: Keys, write_config, tmp_path: Path):
    path, role = jwt_role
    expired = sign(keys, exp=int(time.time()) - 600, iat=int(time.time()) - 1200,
                   nbf=int(time.time()) - 1200)
    token_file = private_file(tmp_path / "ci.jwt", expired)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "jwt"\n'
                 f'role = "{role}"\njwt_file = "{token_file}"\n')

    result = get(openbao)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("keyhelper: no key from vault\n  vault failed: jwt login at "
                                    "auth/jwt refused: ")
    assert "expired" in result.stderr
    assert expired not in result.stderr


# --- kubernetes ----------------------------------------------------------------------------

class TokenReviewStandIn:
    """The Kubernetes API's TokenReview endpoint, which cannot run here: a loopback HTTP
    server answering ``authenticated: true`` for one known service-account token."""

    def __init__(self, expected_token: str, namespace: str, account: str):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                review = json.loads(self.rfile.read(length))
                outer.requests += 1
                ok = (self.path == "/apis/authentication.k8s.io/v1/tokenreviews"
                      and review["spec"]["token"] == expected_token)
                status: dict[str, Any] = {"authenticated": ok}
                if ok:
                    status["user"] = {"username": f"system:serviceaccount:{namespace}:{account}",
                                      "uid": "uid-1234", "groups": []}
                    status["audiences"] = [K8S_AUDIENCE]  # the token's own audience
                body = json.dumps({"apiVersion": "authentication.k8s.io/v1",
                                   "kind": "TokenReview", "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_kubernetes(openbao: OpenBao, keys: Keys, write_config, tmp_path: Path):
    path, policy = seed(openbao, "sk-k8s")
    sa_token = sign(keys, iss="kubernetes/serviceaccount", sub="system:serviceaccount:ci:kh",
                    aud=[K8S_AUDIENCE],
                    **{"kubernetes.io/serviceaccount/namespace": "ci",
                       "kubernetes.io/serviceaccount/service-account.name": "kh",
                       "kubernetes.io/serviceaccount/service-account.uid": "uid-1234"})
    review = TokenReviewStandIn(sa_token, "ci", "kh")
    try:
        openbao.enable_auth("kubernetes")
        openbao.api("POST", "auth/kubernetes/config",
                    {"kubernetes_host": review.url, "disable_local_ca_jwt": True,
                     "kubernetes_ca_cert": keys.cert_pem})
        openbao.api("POST", "auth/kubernetes/role/kh",
                    {"bound_service_account_names": ["kh"],
                     "bound_service_account_namespaces": ["ci"],
                     "token_policies": [policy], "token_ttl": "1h"})
        token_file = private_file(tmp_path / "sa-token", sa_token)
        write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\n'
                     f'auth = "kubernetes"\nrole = "kh"\ntoken_file = "{token_file}"\n')

        result = get(openbao)
    finally:
        review.close()

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-k8s\n", "")
    assert review.requests == 1


def test_kubernetes_outside_a_pod_skips(openbao: OpenBao, write_config):
    write_config('chain = ["vault"]\n[backends.vault]\npath = "secret/x"\n'
                 'auth = "kubernetes"\nrole = "kh"\n')

    result = get(openbao)

    assert result.stderr == (
        "keyhelper: no key from vault\n  vault skipped: no service-account token at "
        "/var/run/secrets/kubernetes.io/serviceaccount/token (not in a Kubernetes pod?)\n")


# --- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ('auth = "approle"', "backends.vault.role_id: auth = 'approle' needs this option"),
    ('auth = "jwt"\nrole = "r"', "backends.vault.jwt_file: auth = 'jwt' needs jwt_file or "
                                 "jwt_backend"),
    ('auth = "ldap"', "backends.vault.auth: unknown auth method 'ldap' (known: token, "
                      "approle, jwt, oidc, kubernetes, cert)"),
    ("kv_version = 3", "backends.vault.kv_version: expected 1 or 2"),
    ('engine = "pki"', "backends.vault.engine: expected \"kv\" or \"logical\", got 'pki'"),
])
def test_option_errors_exit_2(openbao: OpenBao, write_config, options: str, message: str):
    path = write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/x"\n{options}\n')

    result = get(openbao, VAULT_TOKEN="root")

    assert (result.returncode, result.stdout) == (2, "")
    # Checked when the chain is built (Vault.validate), so the file is named too.
    assert result.stderr == f"keyhelper: config error: {path}: {message}\n"


def test_verbose_run_shows_no_secret_id_or_vault_token(openbao: OpenBao, write_config,
                                                      cache_dir, tmp_path: Path):
    path, policy = seed(openbao, "sk-verbose")
    role_id, secret_id = approle(openbao, policy)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{path}"\nauth = "approle"\n'
                 f'role_id = "{role_id}"\nsecret_id_env = "CI_SECRET_ID"\n')

    result = get(openbao, "-v", CI_SECRET_ID=secret_id)

    assert (result.returncode, result.stdout) == (0, "sk-verbose\n")
    assert "POST /v1/auth/approle/login" in result.stderr  # -v really logs the calls
    vault_token = login_fields(login_file(cache_dir))["token"]
    for secret in (secret_id, vault_token, "sk-verbose"):
        assert secret not in result.stderr
