"""A broken or malicious provider (tests/support/rogue_oidc.py): `keyhelper login` refuses
its answer with one clear line, and stores nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from fixtures_oidc import Login, wait_for_url
from rogue_oidc import CLIENT_ID, start_rogue

from keyhelper.testing.fixtures import WriteConfig

REFUSALS = {
    "wrong_iss": "the ID token is from another issuer (iss); refused",
    "wrong_aud": "the ID token is for another client (aud); refused",
    "wrong_nonce": "the ID token's nonce does not match this login; refused",
    "wrong_key": "the ID token's signature does not match the provider's key; refused",
    "huge": "the code exchange: the answer is larger than 256 KiB; refused",
    "redirect": "the code exchange: the provider answered with a redirect (HTTP 307); "
                "not followed",
    "other_issuer": "discovery at {issuer} names another issuer (http://127.0.0.1:1); "
                    "refused",
    "foreign_endpoint": "the provider's token_endpoint is on another host than its issuer",
}


def sign_in_files(home: Path) -> list[Path]:
    return sorted(p for p in (home.parent / "cache").rglob("oidc-*")
                  if not p.name.endswith((".lock", ".discovery", ".jwks")))


@pytest.mark.parametrize("mode", sorted(REFUSALS))
def test_a_bad_provider_answer_is_refused_and_nothing_is_stored(
        mode: str, write_config: WriteConfig, isolated_env: Path) -> None:
    with start_rogue(mode) as rogue:
        write_config(f"""
[profiles.work]
chain = ["sso"]
[backends.sso]
type = "oidc"
issuer = "{rogue.issuer}"
client_id = "{CLIENT_ID}"
token_store = "file"
""")
        login = Login("--no-browser")
        if mode not in ("other_issuer",):
            url = wait_for_url(lambda: login.err,
                               re.compile(r"(http://127\.0\.0\.1:\d+/auth\?\S+)"))
            requests.get(url, timeout=10)  # the provider redirects back at once
        code, out, err = login.finish()
        assert (code, out) == (1, "")
        assert err.splitlines()[-1] == "keyhelper: sso: " + REFUSALS[mode].format(
            issuer=rogue.issuer), err
        assert "rt-rrrr" not in err and "at-aaaa" not in err
        assert sign_in_files(isolated_env) == []


def test_clock_skew_within_the_leeway_is_accepted(write_config: WriteConfig,
                                                  isolated_env: Path) -> None:
    with start_rogue("skewed") as rogue:
        write_config(f"""
[profiles.work]
chain = ["sso"]
[backends.sso]
type = "oidc"
issuer = "{rogue.issuer}"
client_id = "{CLIENT_ID}"
token_store = "file"
""")
        login = Login("--no-browser")
        url = wait_for_url(lambda: login.err, re.compile(r"(http://127\.0\.0\.1:\d+/auth\?\S+)"))
        requests.get(url, timeout=10)
        code, out, err = login.finish()
        assert (code, out) == (0, f"keyhelper: sso: signed in to {rogue.issuer} as alice\n"), err
        assert len(sign_in_files(isolated_env)) == 1
