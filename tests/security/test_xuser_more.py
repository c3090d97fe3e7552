"""More files against another local user: the jwt backend's signing key file, the vault
backend's TLS files (a CA bundle someone else can write picks the server that gets the Vault
token), the refresh-ahead lock, and served-marker temp files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cache_entry import write_due_entry
from countingcmd import counting_command
from jwt_keys import key_pair
from xuser import FILE_OBSTACLES, OURS, REFUSALS, Attacker, Planter, run

from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

PEM = key_pair("rsa").private_pem


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_jwt_key_file_not_ours_and_private_is_refused(
        kind: str, attacker: Attacker, planter: Planter, write_config: Any) -> None:
    path = attacker.shared / "signing.pem"
    write_config(f'chain = ["minted"]\n[backends.minted]\ntype = "jwt"\nkey_file = "{path}"\n')
    planter.plant(kind, path, PEM.encode())
    result = run()
    if kind == OURS:
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.count(".") == 2  # a JWT
        return
    reason = REFUSALS[kind].format(path=path)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"keyhelper: no key from minted\n  minted failed: key_file {path} {reason}\n")


@pytest.mark.parametrize("option", ["ca_cert", "client_cert"])
def test_a_vault_tls_file_another_user_could_write_is_refused(
        option: str, attacker: Attacker, write_config: Any) -> None:
    path = attacker.write(attacker.shared / "vault-ca.pem", b"-----BEGIN CERTIFICATE-----\n",
                          0o644)
    write_config(f'chain = ["v"]\n[backends.v]\ntype = "vault"\npath = "secret/x"\n'
                 f'addr = "https://127.0.0.1:1"\n{option} = "{path}"\n')
    result = run(env={"VAULT_TOKEN": "s.not-used"})
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"keyhelper: no key from v\n  v failed: {option} {path} is owned by another "
               "user\n")


def test_a_vault_client_key_open_to_others_is_refused(tmp_path: Path, write_config: Any) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert\n")
    key.write_text("key\n")
    key.chmod(0o644)
    write_config(f'chain = ["v"]\n[backends.v]\ntype = "vault"\npath = "secret/x"\n'
                 f'addr = "https://127.0.0.1:1"\nclient_cert = "{cert}"\n'
                 f'client_key = "{key}"\n')
    result = run(env={"VAULT_TOKEN": "s.not-used"})
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"keyhelper: no key from v\n  v failed: client_key {key} is readable by group "
               f"or others (mode 644); run: chmod 600 {key}\n")


def entry_for_refresh(cache: Path) -> Path:
    path = cache / f"{kentry.entry_key(Selection(), os.environ)}.entry"
    write_due_entry(path)
    return path


def test_another_users_lock_does_not_start_or_hold_the_refresh(
        tmp_path: Path, attacker: Attacker, cache: Path, write_config: Any) -> None:
    fresh = counting_command(tmp_path, key="key-new", name="fresh")
    write_config('chain = ["src"]\n' + fresh.toml("src"))
    entry = entry_for_refresh(cache)
    lock = entry.with_suffix(".lock")
    attacker.write(lock, b"", 0o666)
    result = run()
    # Served at once from the entry; no refresh started on their lock (it could hold it).
    assert (result.returncode, result.stdout, result.stderr) == (0, "key-old\n", "")
    assert fresh.calls == 0
    assert os.stat(lock).st_uid == attacker.uid


def test_a_served_marker_that_cannot_be_written_leaves_no_temp_file(
        tmp_path: Path, cache: Path) -> None:
    marker = cache / "k.1-2.served"
    marker.mkdir()  # os.replace onto a directory fails
    kentry.write_marker(str(marker), 1.0, 2.0)
    assert sorted(p.name for p in cache.iterdir()) == ["k.1-2.served"]
