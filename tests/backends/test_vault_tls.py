"""The vault backend over TLS, against a real OpenBao ``-dev-tls`` server: CA bundles
(option and $VAULT_CACERT), a verification failure, and TLS client-certificate (cert) auth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from certs import TestCA
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from fixtures_openbao import OpenBao, start_openbao
from helpers import keyhelper

pytestmark = pytest.mark.vault


@pytest.fixture(scope="module")
def tls_openbao() -> Iterator[OpenBao]:
    with start_openbao(tls=True) as server:
        yield server


@dataclass(frozen=True)
class ClientCert:
    ca_pem: str
    cert_path: Path
    key_path: Path


def make_client_cert(directory: Path) -> ClientCert:
    """A CA and a client certificate it signed (EKU clientAuth), as PEM files."""
    ca = TestCA("keyhelper test CA")
    cert_path = directory / "client.pem"
    key_path = directory / "client-key.pem"
    ca.issue("ci-client", x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), cert_path,
             key_path)
    return ClientCert(ca.pem.decode(), cert_path, key_path)


def test_ca_cert_option_and_env(tls_openbao: OpenBao, write_config, tmp_path: Path):
    name = tls_openbao.unique()
    tls_openbao.kv_put(name, {"api_key": "sk-tls"})
    write_config(f'chain = ["opt", "env"]\n[backends.opt]\ntype = "vault"\n'
                 f'path = "secret/{name}"\nca_cert = "{tls_openbao.ca_cert}"\n'
                 f'[backends.env]\ntype = "vault"\npath = "secret/{name}"\n')
    env = {"VAULT_ADDR": tls_openbao.addr, "VAULT_TOKEN": "root"}

    by_option = keyhelper("--no-cache", "-b", "opt", env=env)
    by_env = keyhelper("--no-cache", "-b", "env",
                       env={**env, "VAULT_CACERT": str(tls_openbao.ca_cert)})

    assert (by_option.returncode, by_option.stdout, by_option.stderr) == (0, "sk-tls\n", "")
    assert (by_env.returncode, by_env.stdout, by_env.stderr) == (0, "sk-tls\n", "")


def test_unknown_ca_is_a_tls_failure(tls_openbao: OpenBao, write_config):
    write_config('chain = ["vault"]\n[backends.vault]\npath = "secret/x"\n')

    result = keyhelper(env={"VAULT_ADDR": tls_openbao.addr, "VAULT_TOKEN": "root"})

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"keyhelper: no key from vault\n  vault failed: TLS failure talking to Vault at "
        f"{tls_openbao.addr}: certificate verify failed: unable to get local issuer "
        "certificate (check ca_cert / $VAULT_CACERT)\n")


def test_cert_auth(tls_openbao: OpenBao, write_config, tmp_path: Path):
    name = tls_openbao.unique()
    tls_openbao.kv_put(name, {"api_key": "sk-cert"})
    tls_openbao.policy(f"read-{name}",
                       f'path "secret/data/{name}" {{ capabilities = ["read"] }}\n'
                       f'path "secret/metadata/{name}" {{ capabilities = ["list"] }}')
    client = make_client_cert(tmp_path)
    tls_openbao.enable_auth("cert")
    tls_openbao.api("POST", "auth/cert/certs/ci",
                    {"certificate": client.ca_pem, "token_policies": [f"read-{name}"],
                     "token_ttl": "1h"})
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n'
                 f'auth = "cert"\nrole = "ci"\nca_cert = "{tls_openbao.ca_cert}"\n'
                 f'client_cert = "{client.cert_path}"\nclient_key = "{client.key_path}"\n')

    result = keyhelper("--no-cache", env={"VAULT_ADDR": tls_openbao.addr})

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-cert\n", "")


def test_tls_skip_verify_over_https(tls_openbao: OpenBao, write_config):
    name = tls_openbao.unique()
    tls_openbao.kv_put(name, {"api_key": "sk-unverified"})
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n'
                 "tls_skip_verify = true\n")

    result = keyhelper("--no-cache", env={"VAULT_ADDR": tls_openbao.addr, "VAULT_TOKEN": "root"})

    assert (result.returncode, result.stdout) == (0, "sk-unverified\n")
    assert result.stderr == ("keyhelper: vault backend vault: TLS certificate verification is "
                             "off (tls_skip_verify); use it for tests only\n")


def test_ca_from_ssl_cert_file_as_the_system_store(tls_openbao: OpenBao, write_config):
    """Without ca_cert the system's store is used, which $SSL_CERT_FILE replaces."""
    name = tls_openbao.unique()
    tls_openbao.kv_put(name, {"api_key": "sk-system-store"})
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n')

    result = keyhelper("--no-cache", env={"VAULT_ADDR": tls_openbao.addr, "VAULT_TOKEN": "root",
                                          "SSL_CERT_FILE": str(tls_openbao.ca_cert)})

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-system-store\n", "")


def test_an_encrypted_client_key_is_refused_without_a_prompt(tls_openbao: OpenBao,
                                                              write_config, tmp_path: Path):
    from cryptography.hazmat.primitives import serialization

    client = make_client_cert(tmp_path)
    key = serialization.load_pem_private_key(client.key_path.read_bytes(), None)
    client.key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    client.key_path.chmod(0o600)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/x"\nauth = "cert"\n'
                 f'ca_cert = "{tls_openbao.ca_cert}"\nclient_cert = "{client.cert_path}"\n'
                 f'client_key = "{client.key_path}"\n')

    result = keyhelper("--no-cache", env={"VAULT_ADDR": tls_openbao.addr})

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"keyhelper: no key from vault\n  vault failed: cannot load the TLS client certificate "
        f"{client.cert_path} (PEM certificate and unencrypted key expected)\n")
