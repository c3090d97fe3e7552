"""The refresh token in the OS keyring (a real gnome-keyring Secret Service in a private
D-Bus session): chosen at sign-in when the keyring answers, rotated there, deleted by
logout; the state file then holds who signed in, not the token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures_keyring import SecretService
from fixtures_oidc import CLIENT_ID, Provider, login_code
from helpers import keyhelper

from keyhelper.testing.fixtures import WriteConfig

pytestmark = pytest.mark.keyring


def test_refresh_token_lives_in_the_keyring_and_rotates_there(
        oidc: Provider, secret_service: SecretService, write_config: WriteConfig,
        isolated_env: Path) -> None:
    write_config(f"""
[profiles.work]
chain = ["sso"]
[backends.sso]
type = "oidc"
issuer = "{oidc.issuer}"
client_id = "{CLIENT_ID}"
scopes = "openid offline_access api"
""")
    env = dict(secret_service.env)
    code, _, err = login_code("alice", env=env)
    assert code == 0, err
    [state] = [p for p in (isolated_env.parent / "cache").rglob("oidc-*")
               if not p.name.endswith((".lock", ".discovery", ".jwks"))]
    text = state.read_text()
    assert "store keyring" in text
    ident = state.name.removeprefix("oidc-")
    first = secret_service.lookup(service="keyhelper-oidc", username=ident)
    assert first and first not in text

    run = keyhelper("--profile", "work", "--no-cache", env=env)
    assert run.returncode == 0, run.stderr
    second = secret_service.lookup(service="keyhelper-oidc", username=ident)
    assert second and second != first  # rotated, kept in the keyring
    assert oidc.errors() == []

    status = keyhelper("status", "--profile", "work", env=env)
    assert re.search(rf"refresh token in the OS keyring \(keyhelper-oidc, {ident}\)\)\n$",
                     status.stdout), status.stdout

    out_run = keyhelper("logout", "--profile", "work", env=env)
    assert out_run.stdout.endswith("refresh token revoked\n"), out_run.stdout + out_run.stderr
    assert secret_service.lookup(service="keyhelper-oidc", username=ident) is None
    assert not state.exists()
