"""Vault's OIDC auth method (``auth = "oidc"`` with a role and no JWT), as `vault login
-method=oidc` does it, against a real OpenBao whose identity provider is a real OpenID
provider (panva's oidc-provider): `keyhelper login` runs the browser flow through Vault (the
form driven over HTTP), the get path uses the Vault token it kept, and says to run
keyhelper login when there is none."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_oidc import Login, Provider, free_port, sign_in, start_provider, wait_for_url
from fixtures_openbao import OpenBao
from helpers import keyhelper

from keyhelper.testing.fixtures import WriteConfig

pytestmark = pytest.mark.vault

API_KEY = "sk-ant-api03-FromVaultViaOidcLogin_0123456789"


@pytest.fixture
def callback() -> str:
    return f"http://localhost:{free_port()}/oidc/callback"


@pytest.fixture
def idp(callback: str) -> Iterator[Provider]:
    with start_provider(vault_redirects=callback) as provider:
        yield provider


def setup_vault(bao: OpenBao, provider: Provider, callback: str) -> tuple[str, str]:
    name = bao.unique("oidc-login")
    bao.kv_put(name, {"api_key": API_KEY})
    bao.policy(name, f'path "secret/data/{name}" {{ capabilities = ["read"] }}\n'
                     'path "sys/internal/ui/mounts/*" { capabilities = ["read"] }\n')
    mount = bao.enable_auth("oidc", bao.unique("oidc"))
    bao.api("POST", f"auth/{mount}/config", {
        "oidc_discovery_url": provider.issuer, "oidc_client_id": "vault",
        "oidc_client_secret": "vault-client-secret", "default_role": "dev"})
    bao.api("POST", f"auth/{mount}/role/dev", {
        "role_type": "oidc", "allowed_redirect_uris": [callback], "user_claim": "sub",
        "token_policies": [name], "token_ttl": "1h"})
    return f"secret/{name}", mount


def test_vault_oidc_login_then_kv_reads_then_logout(
        idp: Provider, openbao: OpenBao, callback: str, write_config: WriteConfig,
        isolated_env: Path) -> None:
    path, mount = setup_vault(openbao, idp, callback)
    write_config(f"""
[profiles.work]
chain = ["llm"]

[backends.llm]
type = "vault"
addr = "{openbao.addr}"
path = "{path}"
auth = "oidc"
auth_mount = "{mount}"
role = "dev"
oidc_callback = "{callback}"
""")
    signed_out = keyhelper("--profile", "work")
    assert signed_out.returncode == 1
    assert signed_out.stderr.endswith(
        f"llm skipped: signed out of Vault at {openbao.addr} (oidc at auth/{mount}): run "
        "keyhelper login --profile work\n"), signed_out.stderr

    login = Login("--no-browser")
    url = wait_for_url(lambda: login.err, re.compile(r"(http://127\.0\.0\.1:\d+/auth\?\S+)"))
    final = sign_in(url, "alice")
    assert final.startswith(callback + "?"), final
    code, out, err = login.finish()
    assert code == 0, err
    assert re.fullmatch(rf"keyhelper: llm: signed in to Vault at {re.escape(openbao.addr)}, "
                        r"token until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n", out), out

    logins = openbao.token_count()
    run = keyhelper("--profile", "work")
    assert (run.returncode, run.stdout, run.stderr) == (0, API_KEY + "\n", "")
    again = keyhelper("--profile", "work", "--no-cache")  # the kept Vault token, no login
    assert (again.returncode, again.stdout) == (0, API_KEY + "\n")
    assert openbao.token_count() == logins

    # Half spent: renewed in place (same token, new expiry), no new sign-in.
    [kept] = (isolated_env.parent / "cache").rglob("vault-login-*")
    token = re.search(r"^token (\S+)$", kept.read_text(), re.M)
    assert token is not None
    expires = re.search(r"^expires (\S+)$", kept.read_text(), re.M)
    assert expires is not None
    kept.write_text(kept.read_text().replace(f"expires {expires.group(1)}",
                                             f"expires {time.time() + 40!r}"))
    renewed = keyhelper("--profile", "work", "--no-cache")
    assert (renewed.returncode, renewed.stdout) == (0, API_KEY + "\n")
    assert f"token {token.group(1)}" in kept.read_text()
    new_expiry = re.search(r"^expires (\S+)$", kept.read_text(), re.M)
    assert new_expiry is not None and float(new_expiry.group(1)) > time.time() + 500
    assert openbao.token_count() == logins

    status = keyhelper("status", "--profile", "work")
    assert status.returncode == 0
    assert re.fullmatch(rf"llm: signed in to Vault at {re.escape(openbao.addr)}, token until "
                        r"\S+ \S+ UTC, renewable\n"
                        r"cached key: sha256:[0-9a-f]{12} from llm, \d+ s left\n",
                        status.stdout), status.stdout

    # Past use (under the 15 s margin): the get says to sign in again.
    saved = kept.read_text()
    new_expires = re.search(r"^expires (\S+)$", saved, re.M)
    assert new_expires is not None
    kept.write_text(saved.replace(f"expires {new_expires.group(1)}",
                                  f"expires {time.time() + 5!r}"))
    spent = keyhelper("--profile", "work", "--no-cache")
    assert spent.returncode == 1
    assert spent.stderr.endswith("run keyhelper login --profile work\n"), spent.stderr
    kept.write_text(saved)

    out_run = keyhelper("logout", "--profile", "work")
    assert (out_run.returncode, out_run.stdout) == (
        0, f"keyhelper: llm: signed out of Vault at {openbao.addr}, token revoked\n")
    after = keyhelper("--profile", "work")
    assert after.returncode == 1
    assert "run keyhelper login --profile work" in after.stderr
