"""A broken or malicious provider (tests/support/rogue_oidc.py): `keyhelper login` refuses
its answer with one clear line, and stores nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from fixtures_oidc import Login, expire_cache_entry, wait_for_url
from helpers import keyhelper
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


def rogue_config(issuer: str, extra: str = "") -> str:
    return f"""
stale_grace = 600
[profiles.work]
chain = ["sso"]
[backends.sso]
type = "oidc"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
token_store = "file"
{extra}
"""


def rogue_login() -> None:
    login = Login("--no-browser")
    url = wait_for_url(lambda: login.err, re.compile(r"(http://127\.0\.0\.1:\d+/auth\?\S+)"))
    requests.get(url, timeout=10)
    code, _, err = login.finish()
    assert code == 0, err


@pytest.mark.parametrize(("mode", "why"), [
    ("error500", "refresh at the token endpoint: HTTP 500"),
    ("slow", "refresh at the token endpoint: no answer within 0.5 s"),
])
def test_provider_failing_on_refresh_serves_the_stale_token_and_keeps_the_sign_in(
        mode: str, why: str, write_config: WriteConfig, isolated_env: Path) -> None:
    with start_rogue() as rogue:
        write_config(rogue_config(rogue.issuer, "timeout = 0.5"))
        rogue_login()
        first = keyhelper("--profile", "work")
        assert first.returncode == 0, first.stderr
        [state] = sign_in_files(isolated_env)
        kept = state.read_text()
        rogue.mode = mode
        expire_cache_entry(isolated_env.parent / "cache")
        stale = keyhelper("--profile", "work")
        assert (stale.returncode, stale.stdout) == (0, first.stdout)
        assert "every backend failed; serving the cached key" in stale.stderr
        uncached = keyhelper("--profile", "work", "--no-cache")
        assert (uncached.returncode, uncached.stdout) == (1, "")
        assert uncached.stderr.endswith(f"sso failed: {why}\n"), uncached.stderr
        assert state.read_text() == kept  # the sign-in survives a provider fault


def test_device_flow_honours_the_interval_and_slow_down(write_config: WriteConfig) -> None:
    with start_rogue() as rogue:
        write_config(rogue_config(rogue.issuer))
        login = Login("--device")
        code, out, err = login.finish(60)
        assert (code, out) == (0, f"keyhelper: sso: signed in to {rogue.issuer} as alice\n"), err
        assert err.startswith(f"To sign in, open {rogue.issuer}/activate and enter the code "
                              "ABCD-EFGH\n")
        polls = rogue.device_polls
        assert len(polls) == 3  # pending, slow_down, then the tokens
        assert 0.9 <= polls[1] - polls[0] < 5
        assert polls[2] - polls[1] >= 5.9  # the interval, 5 s longer after slow_down
