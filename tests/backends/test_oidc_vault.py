"""The OIDC token inside the chain, with a real OpenBao and a real OpenID provider: the oidc
backend's access token is the JWT of Vault's ``jwt`` auth (checked by OpenBao against the
provider's JWKS), then the API key is read from KV."""

from __future__ import annotations

import pytest
from fixtures_oidc import CLIENT_ID, RESOURCE, Provider, login_code
from fixtures_openbao import OpenBao
from helpers import keyhelper

from keyhelper.testing.fixtures import WriteConfig

pytestmark = pytest.mark.vault

API_KEY = "sk-ant-api03-FromVaultViaOidc_0123456789"


def setup_vault(bao: OpenBao, provider: Provider) -> tuple[str, str]:
    name = bao.unique("oidc-chain")
    bao.kv_put(name, {"api_key": API_KEY})
    bao.policy(name, f'path "secret/data/{name}" {{ capabilities = ["read"] }}\n'
                     'path "sys/internal/ui/mounts/*" { capabilities = ["read"] }\n')
    mount = bao.enable_auth("jwt", bao.unique("jwt"))
    bao.api("POST", f"auth/{mount}/config",
            {"jwks_url": provider.issuer + "/jwks", "bound_issuer": provider.issuer})
    bao.api("POST", f"auth/{mount}/role/dev", {
        "role_type": "jwt", "bound_audiences": [RESOURCE], "user_claim": "sub",
        "bound_subject": "alice", "token_policies": [name], "token_ttl": "1h"})
    return f"secret/{name}", mount


def test_oidc_then_vault_jwt_login_then_kv_read(oidc: Provider, openbao: OpenBao,
                                                write_config: WriteConfig) -> None:
    path, mount = setup_vault(openbao, oidc)
    write_config(f"""
[profiles.work]
chain = ["llm"]

[backends.llm]
type = "vault"
addr = "{openbao.addr}"
path = "{path}"
auth = "jwt"
auth_mount = "{mount}"
role = "dev"
jwt_backend = "sso"

[backends.sso]
type = "oidc"
issuer = "{oidc.issuer}"
client_id = "{CLIENT_ID}"
scopes = "openid offline_access api"
token_store = "file"
""")
    signed_out = keyhelper("--profile", "work", "--no-cache")
    assert signed_out.returncode == 1
    assert signed_out.stderr.endswith(
        f"llm skipped: jwt_backend 'sso' gave no JWT: signed out of {oidc.issuer}: run keyhelper "
        "login --profile work\n"), signed_out.stderr

    # `keyhelper login --profile work` finds the oidc backend behind jwt_backend.
    code, out, err = login_code("alice")
    assert (code, out) == (0, f"keyhelper: sso: signed in to {oidc.issuer} as alice\n"), err
    logins = openbao.token_count()
    run = keyhelper("--profile", "work")
    assert (run.returncode, run.stdout, run.stderr) == (0, API_KEY + "\n", "")
    assert openbao.token_count() == logins + 1
    assert oidc.grants("refresh_token") == 1

    again = keyhelper("--profile", "work")  # a cache hit: neither provider nor Vault asked
    assert (again.returncode, again.stdout) == (0, API_KEY + "\n")
    assert (openbao.token_count(), oidc.grants("refresh_token")) == (logins + 1, 1)


def test_another_person_is_refused_by_the_vault_role(oidc: Provider, openbao: OpenBao,
                                                     write_config: WriteConfig) -> None:
    path, mount = setup_vault(openbao, oidc)
    write_config(f"""
[profiles.work]
chain = ["llm"]
[backends.llm]
type = "vault"
addr = "{openbao.addr}"
path = "{path}"
auth = "jwt"
auth_mount = "{mount}"
role = "dev"
jwt_backend = "sso"
[backends.sso]
type = "oidc"
issuer = "{oidc.issuer}"
client_id = "{CLIENT_ID}"
scopes = "openid offline_access api"
token_store = "file"
""")
    assert login_code("mallory")[0] == 0
    run = keyhelper("--profile", "work")
    assert run.returncode == 1
    assert f"llm failed: jwt login at auth/{mount} refused:" in run.stderr
    assert "sub" in run.stderr
