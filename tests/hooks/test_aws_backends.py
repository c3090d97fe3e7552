"""The AWS backends for Bedrock's awsCredentialExport: ``aws_sts`` against moto's real STS
server (AssumeRoleWithWebIdentity with a JWT minted by the jwt backend of the same chain),
``vault_aws`` against a real OpenBao. Output through ``keyhelper aws-credentials``."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from fixtures_openbao import OpenBao, free_port
from helpers import keyhelper
from jwt_keys import signing_material, write_key_file

from keyhelper.base import records
from keyhelper.base.files import Selection

ROLE = "arn:aws:iam::123456789012:role/claude-code-bedrock"
TOKEN_BACKEND = 'token_backend = "idtoken"'  # the jwt backend below mints the web identity


def bedrock_config(write_config, tmp_path: Path, endpoint: str, extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    key_file = write_key_file(tmp_path / "signing.key", signing_material("RS256"))
    return write_config(
        f'[profiles.bedrock]\nchain = ["sts"]\nttl = 3000\n'
        f'[backends.sts]\ntype = "aws_sts"\nrole_arn = "{ROLE}"\nendpoint = "{endpoint}"\n'
        f'{extra or TOKEN_BACKEND}\n'
        f'[backends.idtoken]\ntype = "jwt"\nalgorithm = "RS256"\nkey_file = "{key_file}"\n'
        'audience = "sts.amazonaws.com"\n')


def credentials(stdout: str) -> dict[str, str]:
    doc = json.loads(stdout)
    assert list(doc) == ["Credentials"] and stdout.count("\n") == 1
    inner = doc["Credentials"]
    assert list(inner) == ["AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"]
    assert all(isinstance(v, str) and v for v in inner.values())
    return dict(inner)


def expiration(creds: dict[str, str]) -> float:
    assert creds["Expiration"].endswith("Z") and len(creds["Expiration"]) == 20
    return datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00")).timestamp()


@pytest.mark.usefixtures("moto")
def test_sts_web_identity_credentials_are_cached_until_before_expiration(
        write_config, tmp_path: Path, moto_url: str, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    bedrock_config(write_config, tmp_path, moto_url)
    before = time.time()
    first = keyhelper("aws-credentials", "--profile", "bedrock")
    assert (first.returncode, first.stderr) == (0, "")
    creds = credentials(first.stdout)
    assert creds["AccessKeyId"].startswith("ASIA")
    assert before + 3600 - 5 <= expiration(creds) <= time.time() + 3600 + 5  # duration 3600
    # moto issues new random credentials on every call: the same ones again is the cache.
    again = keyhelper("aws-credentials", "--profile", "bedrock")
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")
    # The entry: the compact document as its key, dropped 6 minutes before Expiration
    # (Claude Code asks again 5 minutes before it).
    name = records.entry_key(Selection((), "bedrock"), {"XDG_CONFIG_HOME": str(
        tmp_path / "home" / ".config"), "HOME": str(tmp_path / "home")})
    entry = records.read_entry(str(cache_dir), name)
    assert entry is not None and entry.key == first.stdout.strip()
    assert entry.token_expires == expiration(creds) - 300
    assert entry.expires == min(entry.stored + 3000, expiration(creds) - 360)


@pytest.mark.usefixtures("moto")
def test_sts_token_from_a_file(write_config, tmp_path: Path, moto_url: str) -> None:  # type: ignore[no-untyped-def]
    token = tmp_path / "web-identity"
    write_key_file(token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n")
    bedrock_config(write_config, tmp_path, moto_url, f'token_file = "{token}"')
    run = keyhelper("aws-credentials", "-p", "bedrock")
    assert (run.returncode, run.stderr) == (0, "")
    credentials(run.stdout)


def test_sts_unreachable_leaves_stdout_empty(write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    endpoint = f"http://127.0.0.1:{free_port()}"
    bedrock_config(write_config, tmp_path, endpoint)
    run = keyhelper("aws-credentials", "-p", "bedrock")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (f"keyhelper: no key from sts\n  sts failed: STS at {endpoint}: "
                          "Connection refused\n")


def test_sts_over_plain_http_elsewhere_is_refused(write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = bedrock_config(write_config, tmp_path, "http://sts.example.com")
    run = keyhelper("aws-credentials", "-p", "bedrock")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == ("keyhelper: config error: backends.sts.endpoint: plain http would "
                          "send the token unencrypted: use https\n")
    assert path.exists()


def test_sts_error_answer_is_reported(write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from aws_sts_stub import sts_error_server

    with sts_error_server() as url:
        bedrock_config(write_config, tmp_path, url)
        run = keyhelper("aws-credentials", "-p", "bedrock")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from sts\n  sts failed: STS refused (400 "
                          "InvalidIdentityToken): Couldn't retrieve verification key from "
                          "your identity provider\n")


# --- vault_aws ----------------------------------------------------------------------------

@pytest.mark.vault
def test_vault_aws_credentials_with_their_lease(write_config, openbao: OpenBao) -> None:  # type: ignore[no-untyped-def]
    # OpenBao 2.7.2 ships no AWS secrets engine (it is an external plugin there, and its
    # binary cannot be fetched here): a KV v1 mount answers in the engine's shape instead,
    # access_key/secret_key/security_token with a lease_duration (KV v1's "ttl").
    mount = openbao.unique("aws")
    openbao.api("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "1"}})
    openbao.kv_put("creds/bedrock", {"access_key": "ASIAVAULTEXAMPLE", "secret_key": "vs/+=",
                                     "security_token": "vtok//+=", "ttl": "1h"},
                   mount=mount, kv_version=1)
    write_config(f'chain = ["vault-aws"]\nttl = 3000\n[backends.vault-aws]\ntype = "vault_aws"\n'
                 f'addr = "{openbao.addr}"\npath = "{mount}/creds/bedrock"\n')
    before = time.time()
    run = keyhelper("aws-credentials", env={"VAULT_TOKEN": openbao.root_token})
    assert (run.returncode, run.stderr) == (0, "")
    creds = credentials(run.stdout)
    assert (creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]) == (
        "ASIAVAULTEXAMPLE", "vs/+=", "vtok//+=")
    assert int(before) + 3600 - 1 <= expiration(creds) <= time.time() + 3600 + 1
    # An IAM user's credentials have no session token: left out, not empty.
    openbao.kv_put("creds/user", {"access_key": "AKIAUSER", "secret_key": "us", "ttl": "1h"},
                   mount=mount, kv_version=1)
    write_config(f'chain = ["vault-aws"]\n[backends.vault-aws]\ntype = "vault_aws"\n'
                 f'addr = "{openbao.addr}"\npath = "{mount}/creds/user"\n')
    user = keyhelper("aws-credentials", env={"VAULT_TOKEN": openbao.root_token})
    assert (user.returncode, user.stderr) == (0, "")
    assert list(json.loads(user.stdout)["Credentials"]) == [
        "AccessKeyId", "SecretAccessKey", "Expiration"]
    # Not an AWS path: said so.
    openbao.kv_put("creds/other", {"api_key": "x"}, mount=mount, kv_version=1)
    write_config(f'chain = ["vault-aws"]\n[backends.vault-aws]\ntype = "vault_aws"\n'
                 f'addr = "{openbao.addr}"\npath = "{mount}/creds/other"\n')
    other = keyhelper("aws-credentials", env={"VAULT_TOKEN": openbao.root_token})
    assert (other.returncode, other.stdout) == (1, "")
    assert other.stderr == (f"keyhelper: no key from vault-aws\n  vault-aws failed: "
                            f"{mount}/creds/other holds no AWS credentials (is it an AWS "
                            "secrets engine's creds or sts path?)\n")
