"""End to end in one chain, with the real console script and a real OpenBao: the jwt backend
mints a token, the vault backend logs in with it (``auth = "jwt"``, ``jwt_backend``) and
reads the API key from KV. The signing key may itself come from Vault."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_openbao import OpenBao
from helpers import keyhelper
from jwt_keys import key_pair, signing_material, write_key_file

from keyhelper.testing.fixtures import WriteConfig

pytestmark = pytest.mark.vault

ISSUER = "https://keyhelper.test"
AUDIENCE = "vault-e2e"
API_KEY = "sk-ant-api03-FromVaultViaJwt_0123456789"


def setup_vault(bao: OpenBao, public_pem: str) -> tuple[str, str]:
    """A KV secret readable only through a JWT login whose role binds audience and team:
    returns (kv path, auth mount)."""
    name = bao.unique("jwt-e2e")
    bao.kv_put(name, {"api_key": API_KEY})
    bao.policy(name, f'path "secret/data/{name}" {{ capabilities = ["read"] }}\n'
                     'path "sys/internal/ui/mounts/*" { capabilities = ["read"] }\n')
    mount = bao.enable_auth("jwt", bao.unique("jwt"))
    bao.api("POST", f"auth/{mount}/config",
            {"jwt_validation_pubkeys": [public_pem], "bound_issuer": ISSUER})
    bao.api("POST", f"auth/{mount}/role/dev", {
        "role_type": "jwt", "bound_audiences": [AUDIENCE], "user_claim": "user",
        "bound_claims": {"team": "engineering"}, "token_policies": [name],
        "token_ttl": "10m"})
    return f"secret/{name}", mount


def chain_config(bao: OpenBao, path: str, mount: str, signing: str,
                 audience: str = AUDIENCE) -> str:
    return (f'chain = ["llm"]\n\n'
            f'[backends.llm]\ntype = "vault"\naddr = "{bao.addr}"\npath = "{path}"\n'
            f'auth = "jwt"\nauth_mount = "{mount}"\nrole = "dev"\njwt_backend = "minter"\n\n'
            f'[backends.minter]\ntype = "jwt"\nalgorithm = "ES256"\n{signing}\n'
            f'issuer = "{ISSUER}"\naudience = "{audience}"\nttl = 300\n'
            '[backends.minter.claims]\nteam = "engineering"\n')


def test_jwt_then_vault_jwt_login_then_kv_read(openbao: OpenBao, write_config: WriteConfig,
                                               tmp_path: Path) -> None:
    path, mount = setup_vault(openbao, key_pair("p256").public_pem)
    key_file = write_key_file(tmp_path / "signing.pem", signing_material("ES256"))
    write_config(chain_config(openbao, path, mount, f'key_file = "{key_file}"'))
    logins = openbao.token_count()

    run = keyhelper(env={"LOGNAME": "alice"})
    assert (run.returncode, run.stdout, run.stderr) == (0, API_KEY + "\n", "")
    assert openbao.token_count() == logins + 1  # exactly one JWT login

    again = keyhelper(env={"LOGNAME": "alice"})  # served from the cache: no new login
    assert (again.returncode, again.stdout) == (0, API_KEY + "\n")
    assert openbao.token_count() == logins + 1


def test_signing_key_kept_in_vault_too(openbao: OpenBao, write_config: WriteConfig) -> None:
    """jwt signs with a PEM (line breaks and all) read from Vault with a plain token; the
    minted JWT logs in to read the API key."""
    path, mount = setup_vault(openbao, key_pair("p256").public_pem)
    pem_path = openbao.unique("signing")
    openbao.kv_put(pem_path, {"pem": key_pair("p256").private_pem})
    openbao.policy(pem_path, f'path "secret/data/{pem_path}" {{ capabilities = ["read"] }}\n'
                             'path "sys/internal/ui/mounts/*" { capabilities = ["read"] }\n')
    reader = openbao.child_token([pem_path])
    write_config(chain_config(openbao, path, mount, 'key = "signing"') +
                 f'\n[backends.signing]\ntype = "vault"\naddr = "{openbao.addr}"\n'
                 f'path = "secret/{pem_path}"\nfield = "pem"\n')
    run = keyhelper(env={"LOGNAME": "alice", "VAULT_TOKEN": reader})
    assert (run.returncode, run.stdout, run.stderr) == (0, API_KEY + "\n", "")


def test_wrong_audience_is_refused_by_vault(openbao: OpenBao, write_config: WriteConfig,
                                           tmp_path: Path) -> None:
    path, mount = setup_vault(openbao, key_pair("p256").public_pem)
    key_file = write_key_file(tmp_path / "signing.pem", signing_material("ES256"))
    write_config(chain_config(openbao, path, mount, f'key_file = "{key_file}"',
                              audience="someone-else"))
    run = keyhelper(env={"LOGNAME": "alice"})
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "keyhelper: no key from llm\n"
        f"  llm failed: jwt login at auth/{mount} refused: error validating token: invalid "
        "audience (aud) claim: audience claim does not match any expected audience\n")
