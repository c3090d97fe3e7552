"""The aws_secrets backend against a real moto server: keyhelper's contract kit, the
backend's own cases, and the installed plugin through the real keyhelper console script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_test_support import CREDENTIALS, REGION

from keyhelper.errors import BackendError, Skip
from keyhelper.testing import (
    BackendContract,
    DeadlineContract,
    FailureContract,
    Setup,
    SkipContract,
)

KEYHELPER = shutil.which("keyhelper", path=os.path.dirname(sys.executable)) or "keyhelper"


def client(url: str) -> Any:
    return boto3.client("secretsmanager", endpoint_url=url, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def new_secret(url: str, **value: Any) -> str:
    name = f"team/claude-{uuid.uuid4().hex[:8]}"
    client(url).create_secret(Name=name, **value)
    return name


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class TestSecretsManagerContract(BackendContract, SkipContract, FailureContract,
                                 DeadlineContract):
    backend_type = "aws_secrets"
    distribution = "keyhelper-aws-secretsmanager"
    lazy_modules = ("boto3", "botocore")

    @pytest.fixture(autouse=True)
    def _server(self, moto: str, silent_server: str) -> None:
        self.url, self.silent = moto, silent_server

    def configured(self, key: str, tmp_path: Path) -> Setup:
        name = new_secret(self.url, SecretString=key)
        return Setup({"secret_id": name, "endpoint_url": self.url}, dict(CREDENTIALS))

    def unconfigured(self, tmp_path: Path) -> Setup:
        # No credentials anywhere (and no instance metadata to ask: not on EC2).
        return Setup({"secret_id": "team/claude", "endpoint_url": self.url, "region": REGION},
                     {"AWS_EC2_METADATA_DISABLED": "true"})

    def failing(self, key: str, tmp_path: Path) -> Setup:
        name = new_secret(self.url, SecretString=json.dumps({"api_key": key}))
        return Setup({"secret_id": name, "endpoint_url": self.url, "field": "apikey"},
                     dict(CREDENTIALS))

    def hanging(self, tmp_path: Path) -> Setup:
        return Setup({"secret_id": "team/claude", "endpoint_url": self.silent},
                     dict(CREDENTIALS))


class TestSecretsManager:
    """The backend's own cases, built with the kit's helpers."""

    kit = TestSecretsManagerContract()

    def fetch(self, options: dict[str, Any], tmp_path: Path,
              env: dict[str, str] | None = None) -> Any:
        setup = Setup(options, dict(CREDENTIALS) if env is None else env)
        return self.kit.fetch(self.kit.make_backend(setup, tmp_path))

    def test_field_of_a_json_secret(self, moto: str, tmp_path: Path) -> None:
        name = new_secret(moto, SecretString=json.dumps({"api_key": "sk-ant-json-1",
                                                         "note": "x"}))
        token = self.fetch({"secret_id": name, "endpoint_url": moto, "field": "api_key"},
                           tmp_path)
        assert token.value == "sk-ant-json-1"
        assert token.metadata["secret_id"] == name
        assert token.metadata["version_id"]

    def test_missing_field_names_the_fields_never_their_values(self, moto: str,
                                                               tmp_path: Path) -> None:
        name = new_secret(moto, SecretString=json.dumps({"api_key": "sk-ant-json-2"}))
        with pytest.raises(BackendError) as raised:
            self.fetch({"secret_id": name, "endpoint_url": moto, "field": "key"}, tmp_path)
        assert str(raised.value) == f"secret {name!r} has no field 'key' (fields: api_key)"

    def test_not_json_is_a_failure_without_a_piece_of_the_secret(self, moto: str,
                                                                 tmp_path: Path) -> None:
        name = new_secret(moto, SecretString="sk-ant-not-json")
        with pytest.raises(BackendError) as raised:
            self.fetch({"secret_id": name, "endpoint_url": moto, "field": "k"}, tmp_path)
        assert str(raised.value) == (f"secret {name!r} is not a JSON object; cannot read "
                                     "field 'k'")

    def test_missing_secret_is_a_failure(self, moto: str, tmp_path: Path) -> None:
        with pytest.raises(BackendError) as raised:
            self.fetch({"secret_id": "team/absent", "endpoint_url": moto}, tmp_path)
        assert not isinstance(raised.value, Skip)
        assert str(raised.value) == "secret 'team/absent' not found"

    def test_binary_secret_is_refused(self, moto: str, tmp_path: Path) -> None:
        name = new_secret(moto, SecretBinary=b"\x00\x01")
        with pytest.raises(BackendError) as raised:
            self.fetch({"secret_id": name, "endpoint_url": moto}, tmp_path)
        assert str(raised.value) == f"secret {name!r} holds binary data, not a string"

    def test_profile_from_the_aws_files(self, moto: str, tmp_path: Path) -> None:
        name = new_secret(moto, SecretString="sk-ant-profile-3")
        config, creds = tmp_path / "config", tmp_path / "credentials"
        config.write_text(f"[profile team]\nregion = {REGION}\n")
        creds.write_text("[team]\naws_access_key_id = a\naws_secret_access_key = b\n")
        env = {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(creds),
               "AWS_EC2_METADATA_DISABLED": "true"}
        options = {"secret_id": name, "endpoint_url": moto, "profile": "team"}
        assert self.fetch(options, tmp_path, env).value == "sk-ant-profile-3"
        with pytest.raises(Skip) as raised:
            self.fetch({**options, "profile": "other"}, tmp_path, env)
        assert str(raised.value) == "AWS profile 'other' is not configured here"

    def test_no_region_is_a_skip(self, moto: str, tmp_path: Path) -> None:
        env = {k: v for k, v in CREDENTIALS.items() if k != "AWS_REGION"}
        with pytest.raises(Skip) as raised:
            self.fetch({"secret_id": "x", "endpoint_url": moto}, tmp_path, env)
        assert str(raised.value) == ("no AWS region: set region, $AWS_REGION or the "
                                     "profile's region")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KEYHELPER, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL, check=False)


def test_through_the_keyhelper_console_script(moto: str, isolated_env: Path) -> None:
    name = new_secret(moto, SecretString="sk-ant-e2e-0123456789")
    config = isolated_env / ".config" / "keyhelper" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'chain = ["aws"]\n\n[backends.aws]\ntype = "aws_secrets"\n'
                      f'secret_id = "{name}"\nendpoint_url = "{moto}"\n')
    first = run(env=CREDENTIALS)
    assert (first.returncode, first.stdout, first.stderr) == (0, "sk-ant-e2e-0123456789\n", "")
    client(moto).delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    cached = run(env=CREDENTIALS)  # served from the cache: the secret is gone from the store
    assert (cached.returncode, cached.stdout) == (0, "sk-ant-e2e-0123456789\n")
    fresh = run("--no-cache", env=CREDENTIALS)
    assert (fresh.returncode, fresh.stdout) == (1, "")
    assert fresh.stderr == f"keyhelper: no key from aws\n  aws failed: secret {name!r} not found\n"

    listing = run("backends", env={})
    line = next(x for x in listing.stdout.splitlines() if x.startswith("aws_secrets"))
    assert line.split()[1:4] == ["keyhelper-aws-secretsmanager", "0.1.0", "usable"]
