"""The oidc backend against a real OpenID provider (panva's oidc-provider on loopback):
`keyhelper login` with PKCE and with the device flow, the forms driven over HTTP; the key
from the refresh grant; rotation; signed-out, revoked and expired sign-ins; logout; status;
a provider that is down; and 30 processes at once spending one refresh token."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from fixtures_oidc import (
    CLIENT_ID,
    RESOURCE,
    Login,
    Provider,
    expire_cache_entry,
    login_code,
    sign_in,
    start_provider,
    wait_for_url,
)
from helpers import keyhelper

SIGNED_OUT = "signed out of {issuer}: run keyhelper login --profile work"


def config(provider: Provider, *, extra: str = "", settings: str = "") -> str:
    return f"""
refresh_ahead = 0
{settings}
[profiles.work]
chain = ["sso"]

[backends.sso]
type = "oidc"
issuer = "{provider.issuer}"
client_id = "{CLIENT_ID}"
scopes = "openid offline_access api"
token_store = "file"
{extra}
"""


@pytest.fixture
def signed_in(oidc: Provider, write_config: object) -> Iterator[Provider]:
    write_config(config(oidc))  # type: ignore[operator]
    code, out, err = login_code()
    assert (code, out) == (0, "keyhelper: sso: signed in to "
                              f"{oidc.issuer} as alice\n"), err
    yield oidc


def state_files(home: Path) -> list[Path]:
    return sorted(p for p in (home.parent / "cache").rglob("oidc-*") if p.is_file()
                  and not p.name.endswith((".lock", ".discovery", ".jwks")))


def test_login_with_pkce_then_the_key_is_the_providers_access_token(
        signed_in: Provider, isolated_env: Path) -> None:
    assert signed_in.grants("authorization_code") == 1
    run = keyhelper("--profile", "work")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    token = run.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"], claims["sub"]) == (signed_in.issuer, RESOURCE,
                                                            "alice")
    assert signed_in.grants("refresh_token") == 1
    # A second call is a cache hit: no grant.
    again = keyhelper("--profile", "work")
    assert (again.returncode, again.stdout) == (0, run.stdout)
    assert signed_in.grants("refresh_token") == 1
    # The refresh token is in a 0600 file of the private state directory, not in the cache.
    [session] = state_files(isolated_env)
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert stat.S_IMODE(session.parent.stat().st_mode) == 0o700
    assert "refresh_token" in session.read_text()
    for entry in (isolated_env.parent / "cache").iterdir():
        if entry.is_file() and not entry.name.startswith(("oidc-", ".")):
            assert "refresh_token" not in entry.read_text(errors="replace")


def test_the_refresh_token_rotates_and_the_old_one_is_never_spent_again(
        signed_in: Provider, isolated_env: Path) -> None:
    [session] = state_files(isolated_env)
    before = session.read_text()
    first = keyhelper("--profile", "work", "--no-cache")
    second = keyhelper("--profile", "work", "--no-cache")
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert first.stdout != second.stdout
    assert session.read_text() != before
    assert signed_in.grants("refresh_token") == 2
    assert signed_in.errors() == []  # the provider refused nothing: no token reused


def test_signed_out_fails_at_once_with_the_line_to_run(oidc: Provider,
                                                       write_config: object) -> None:
    write_config(config(oidc))  # type: ignore[operator]
    started = time.monotonic()
    run = keyhelper("--profile", "work")
    assert time.monotonic() - started < 5
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == ("keyhelper: no key from sso\n  sso skipped: "
                          + SIGNED_OUT.format(issuer=oidc.issuer) + "\n")
    assert oidc.grants() == 0


def test_status_shows_who_and_until_when_never_a_token(signed_in: Provider,
                                                       isolated_env: Path) -> None:
    run = keyhelper("status", "--profile", "work")
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(
        rf"sso: signed in to {re.escape(signed_in.issuer)} as alice since "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, until the provider ends the session "
        r"\(refresh token in /\S+/oidc-[0-9a-f]{32}\)\n", run.stdout), run.stdout
    assert keyhelper("--profile", "work").returncode == 0
    cached = keyhelper("status", "--profile", "work")
    assert re.search(r"\ncached key: sha256:[0-9a-f]{12} from sso, (2\d\d|300) s left\n$",
                     cached.stdout), cached.stdout
    doctor = keyhelper("doctor", "--profile", "work")
    assert "sso: signed in to" in doctor.stdout
    [session] = state_files(isolated_env)
    token = re.search(r"refresh_token (\S+)", session.read_text())
    assert token is not None and token.group(1) not in run.stdout + doctor.stdout


def test_logout_revokes_and_deletes_then_the_get_is_signed_out(
        signed_in: Provider, isolated_env: Path) -> None:
    assert keyhelper("--profile", "work").returncode == 0
    [session] = state_files(isolated_env)
    token = re.search(r"refresh_token (\S+)", session.read_text())
    assert token is not None
    run = keyhelper("logout", "--profile", "work")
    assert (run.returncode, run.stdout) == (
        0, f"keyhelper: sso: signed out of {signed_in.issuer}, refresh token revoked\n")
    assert state_files(isolated_env) == []
    after = keyhelper("--profile", "work")
    assert after.returncode == 1
    assert SIGNED_OUT.format(issuer=signed_in.issuer) in after.stderr
    status = keyhelper("status", "--profile", "work")
    assert (status.returncode, status.stdout) == (1, f"sso: signed out of {signed_in.issuer}\n")


def test_a_refresh_token_revoked_elsewhere_is_signed_out_and_deleted(
        signed_in: Provider, isolated_env: Path) -> None:
    import requests

    [session] = state_files(isolated_env)
    token = re.search(r"refresh_token (\S+)", session.read_text())
    assert token is not None
    answer = requests.post(signed_in.issuer + "/token/revocation", timeout=5, data={
        "token": token.group(1), "token_type_hint": "refresh_token", "client_id": CLIENT_ID})
    assert answer.status_code == 200
    run = keyhelper("--profile", "work")
    assert run.returncode == 1
    assert run.stderr.endswith("sso skipped: " + SIGNED_OUT.format(issuer=signed_in.issuer)
                               + "\n")
    assert state_files(isolated_env) == []  # the stale refresh token is gone
    assert signed_in.errors() == ["invalid_grant"]


def test_an_expired_refresh_token_is_signed_out(write_config: object,
                                                isolated_env: Path) -> None:
    with start_provider(refresh_ttl=2) as provider:
        write_config(config(provider))  # type: ignore[operator]
        assert login_code()[0] == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the provider's clock must pass 2 s
            run = keyhelper("--profile", "work", "--no-cache")
            if run.returncode == 1:
                break
        assert run.returncode == 1
        assert SIGNED_OUT.format(issuer=provider.issuer) in run.stderr
        assert "invalid_grant" in provider.errors()
        assert state_files(isolated_env) == []


def test_login_then_relogin_clears_the_remembered_failure(oidc: Provider,
                                                          write_config: object) -> None:
    write_config(config(oidc))  # type: ignore[operator]
    assert keyhelper("--profile", "work").returncode == 1  # remembered, backed off
    assert login_code()[0] == 0
    run = keyhelper("--profile", "work")
    assert run.returncode == 0, run.stderr


def test_device_flow_login(oidc: Provider, write_config: object) -> None:
    write_config(config(oidc))  # type: ignore[operator]
    login = Login("--device")
    code_line = re.compile(r"open (http://127\.0\.0\.1:\d+/device) and enter the code (\S+)")
    wait_for_url(lambda: login.err, code_line)
    match = code_line.search(login.err)
    assert match is not None
    sign_in(match.group(1), "bob", user_code=match.group(2))
    code, out, err = login.finish(60)
    assert (code, out) == (0, f"keyhelper: sso: signed in to {oidc.issuer} as "
                              "bob\n"), err
    assert oidc.grants("urn:ietf:params:oauth:grant-type:device_code") == 1
    run = keyhelper("--profile", "work")
    assert run.returncode == 0, run.stderr
    assert jwt.decode(run.stdout.strip(), options={"verify_signature": False})["sub"] == "bob"


def test_provider_down_serves_the_still_valid_cached_token(signed_in: Provider) -> None:
    first = keyhelper("--profile", "work")
    assert first.returncode == 0
    signed_in.stop()
    again = keyhelper("--profile", "work")
    assert (again.returncode, again.stdout) == (0, first.stdout)
    uncached = keyhelper("--profile", "work", "--no-cache")
    assert uncached.returncode == 1
    assert re.search(r"sso failed: discovery at http://127\.0\.0\.1:\d+: cannot connect|"
                     r"sso failed: refresh at the token endpoint: cannot connect",
                     uncached.stderr), uncached.stderr


def test_thirty_processes_with_an_expired_token_make_one_refresh_grant(
        signed_in: Provider, write_config: object, isolated_env: Path) -> None:
    # A generous deadline: 30 interpreters start at once on a small CI machine.
    write_config(config(signed_in, settings="deadline = 60"))  # type: ignore[operator]
    first = keyhelper("--profile", "work")
    assert first.returncode == 0, first.stderr
    assert signed_in.grants("refresh_token") == 1
    expire_cache_entry(isolated_env.parent / "cache")
    assert "expired" in keyhelper("cache", "status").stdout
    with ThreadPoolExecutor(30) as pool:
        runs = list(pool.map(lambda _: keyhelper("--profile", "work", timeout=90), range(30)))
    assert [r.returncode for r in runs] == [0] * 30, [r.stderr[:3000] for r in runs][:1]
    assert len({r.stdout for r in runs}) == 1
    assert runs[0].stdout != first.stdout
    assert signed_in.grants("refresh_token") == 2  # exactly one for the thirty
    assert signed_in.errors() == []  # no refresh token was ever spent twice


def test_login_in_a_real_headless_browser_through_BROWSER(oidc: Provider,
                                                         write_config: object,
                                                         tmp_path: Path) -> None:
    """`keyhelper login` opens the URL with $BROWSER: Debian's chromium, headless, driven by
    playwright, signs in at the provider's form and lands on keyhelper's loopback page."""
    import sys

    write_config(config(oidc))  # type: ignore[operator]
    trace = tmp_path / "pages.txt"
    script = Path(__file__).resolve().parents[1] / "support" / "headless_browser.py"
    login = Login(env={"BROWSER": f"{sys.executable} {script} %s",
                       "BROWSER_TRACE": str(trace), "SIGN_IN_USER": "carol"})
    code, out, err = login.finish(120)
    assert (code, out) == (0, f"keyhelper: sso: signed in to {oidc.issuer} as carol\n"), err
    assert err.startswith("A browser window opened to sign in. If none did, open this URL:\n")
    pages = trace.read_text().splitlines()
    assert pages[0].startswith(f"{oidc.issuer}/interaction/")  # the provider's login form
    assert pages[-1] == "callback: Signed in to keyhelper. You can close this window."
    run = keyhelper("--profile", "work")
    assert run.returncode == 0, run.stderr
    assert jwt.decode(run.stdout.strip(), options={"verify_signature": False})["sub"] == "carol"


def form_browser() -> str:
    import sys

    return f"{sys.executable} {Path(__file__).resolve().parents[1] / 'support'}/form_browser.py %s"


def test_open_browser_signs_in_detached_and_the_get_still_fails_fast(
        oidc: Provider, write_config: object, tmp_path: Path) -> None:
    write_config(config(oidc, extra="open_browser = true"))  # type: ignore[operator]
    cwd_file = tmp_path / "browser-cwd"
    env = {"BROWSER": form_browser(), "SIGN_IN_USER": "erin",
           "BROWSER_CWD_FILE": str(cwd_file)}
    checkout = tmp_path / "checkout"  # Claude Code runs us inside untrusted checkouts
    checkout.mkdir()
    started = time.monotonic()
    run = keyhelper("--profile", "work", env=env, cwd=str(checkout))
    assert time.monotonic() - started < 5
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.endswith(f"sso skipped: signed out of {oidc.issuer}: a browser window "
                               "opened to sign in; retry\n"), run.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # Claude Code's next try, once the person signed in
        run = keyhelper("--profile", "work", env=env)
        if run.returncode == 0:
            break
        time.sleep(0.2)
    assert run.returncode == 0, run.stderr
    assert jwt.decode(run.stdout.strip(), options={"verify_signature": False})["sub"] == "erin"
    assert oidc.grants("authorization_code") == 1  # one browser sign-in for all the tries
    # The detached sign-in ran outside the caller's checkout, as a background refresh does.
    assert cwd_file.read_text() == "/"


def test_a_token_dir_others_can_write_is_refused(oidc: Provider, write_config: object,
                                                 tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    write_config(config(oidc, extra=f'token_dir = "{shared}"'))  # type: ignore[operator]
    run = keyhelper("login", "--no-browser", "--profile", "work")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.endswith(
        f"sso: cannot keep the sign-in in {shared}: its mode is 777, not 700\n"), run.stderr
    assert list(shared.iterdir()) == []
    shared.chmod(0o700)
    code, out, err = login_code()
    assert (code, out) == (0, f"keyhelper: sso: signed in to {oidc.issuer} as alice\n"), err
    assert [p.name for p in shared.iterdir() if not p.name.endswith(".lock")] != []


def test_a_relative_token_dir_is_a_config_error(oidc: Provider, write_config: object) -> None:
    write_config(config(oidc, extra='token_dir = "tokens"'))  # type: ignore[operator]
    run = keyhelper("--profile", "work")
    assert (run.returncode, run.stdout) == (2, "")
    assert "token_dir: expected an absolute path (or one starting with ~)" in run.stderr


def test_interactive_context_signs_in_in_the_foreground(oidc: Provider,
                                                        write_config: object) -> None:
    """CLAUDE_HELPER_CONTEXT=interactive: a person is there (Claude Desktop): one call signs
    in and prints the key, within the run's deadline."""
    write_config(config(oidc, settings="deadline = 30"))  # type: ignore[operator]
    run = keyhelper("--profile", "work", env={"BROWSER": form_browser(),
                                              "CLAUDE_HELPER_CONTEXT": "interactive"})
    assert run.returncode == 0, run.stderr
    assert jwt.decode(run.stdout.strip(), options={"verify_signature": False})["sub"] == "alice"
    assert oidc.grants("authorization_code") == 1
    assert "refresh_token" not in run.stderr


def test_the_id_token_as_the_key(oidc: Provider, write_config: object) -> None:
    write_config(config(oidc, extra='token = "id_token"'))  # type: ignore[operator]
    assert login_code("frank")[0] == 0
    run = keyhelper("--profile", "work")
    assert run.returncode == 0, run.stderr
    keys = {k["kid"]: jwt.PyJWK.from_dict(k) for k in oidc.jwks()["keys"]}
    token = run.stdout.strip()
    claims = jwt.decode(token, keys[jwt.get_unverified_header(token)["kid"]],
                        algorithms=["RS256"], audience=CLIENT_ID, issuer=oidc.issuer)
    assert claims["sub"] == "frank"


def test_refresh_ahead_in_the_background_spends_the_refresh_token_once(
        write_config: object, isolated_env: Path) -> None:
    # Access tokens live 80 s: cached 20 s, refreshed in the background after 2 s.
    with start_provider(access_ttl=80) as provider:
        write_config(config(provider).replace(  # type: ignore[operator]
            "refresh_ahead = 0", "refresh_ahead = 0.9"))
        assert login_code()[0] == 0
        first = keyhelper("--profile", "work")
        assert first.returncode == 0, first.stderr
        deadline = time.monotonic() + 30
        while True:  # hits past the refresh point, until the background refresh stored
            later = keyhelper("--profile", "work")
            assert later.returncode == 0, later.stderr  # served at once, old or new
            if later.stdout != first.stdout:
                break
            assert time.monotonic() < deadline, "no background refresh"
            time.sleep(0.2)
        assert provider.grants("refresh_token") == 2
        assert provider.errors() == []


def test_no_token_in_verbose_output(signed_in: Provider, isolated_env: Path) -> None:
    [session] = state_files(isolated_env)
    old = re.search(r"refresh_token (\S+)", session.read_text())
    assert old is not None
    run = keyhelper("--profile", "work", "--no-cache", "-v")
    assert run.returncode == 0, run.stderr
    new = re.search(r"refresh_token (\S+)", session.read_text())
    assert new is not None
    for secret in (old.group(1), new.group(1), run.stdout.strip()):
        assert secret not in run.stderr
    assert re.search(r"sso ok in \d+ ms: sha256:[0-9a-f]{12}\n", run.stderr), run.stderr
    assert "oidc: refresh grant: refresh token rotated and kept in " in run.stderr


def test_without_the_cache_no_refresh_token_is_ever_spent_twice(
        signed_in: Provider, write_config: object) -> None:
    """--no-cache: no entry lock; the sign-in's own lock still puts the refresh grants in
    single file, each with the token the one before it kept."""
    write_config(config(signed_in, settings="deadline = 60"))  # type: ignore[operator]
    count = 8
    with ThreadPoolExecutor(count) as pool:
        runs = list(pool.map(lambda _: keyhelper("--profile", "work", "--no-cache",
                                                 timeout=90), range(count)))
    assert [r.returncode for r in runs] == [0] * count, [r.stderr for r in runs][:2]
    assert len({r.stdout for r in runs}) == count  # one grant each, in turn
    assert signed_in.grants("refresh_token") == count
    assert signed_in.errors() == []
