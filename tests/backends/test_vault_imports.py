"""What a cold Vault read imports (issue 16: a cold read within ``bao kv get``): guarded by
modules, not by timing. The real console script reads from the real OpenBao with a
``sitecustomize`` hook that writes ``sys.modules`` at exit (as tests/cache/test_hot_path.py);
a bare ``python -c pass`` under the same hook is the baseline."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fixtures_openbao import OpenBao, start_openbao
from helpers import SCRIPT, keyhelper, loaded

pytestmark = pytest.mark.vault

# hvac and requests cost more to import than bao's whole run (plugins/vault_http.py),
# http.client half of it (plugins/vault_wire.py).
HTTP_LIBRARIES = {"hvac", "requests", "urllib3", "certifi", "idna", "charset_normalizer",
                  "http.client"}


def test_a_cold_read_imports_no_http_library(openbao: OpenBao, write_config,
                                             hook: dict[str, str]) -> None:
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-stdlib-only"})
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n')
    env = {**hook, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": "root"}
    baseline = loaded(hook, [sys.executable, "-c", "pass"])

    for _ in range(2):  # the mount asked of Vault, then remembered
        modules = loaded(env, [SCRIPT, "--no-cache", "--backend", "vault"]) - baseline
        assert {"keyhelper_plugins.vault_wire", "socket", "json"} <= modules
        assert not modules & HTTP_LIBRARIES, sorted(modules & HTTP_LIBRARIES)
        # An http:// address on loopback: no TLS, and judged without ipaddress.
        assert not modules & {"ssl", "_ssl", "ipaddress"}, sorted(modules)
    done = keyhelper("--no-cache", "--backend", "vault",
                     env={"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": "root"})
    assert (done.returncode, done.stdout, done.stderr) == (0, "sk-stdlib-only\n", "")


def test_https_brings_ssl_and_nothing_more(write_config, hook: dict[str, str]) -> None:
    with start_openbao(tls=True) as server:
        name = server.unique()
        server.kv_put(name, {"api_key": "sk-over-tls"})
        write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n'
                     f'ca_cert = "{server.ca_cert}"\n')
        env = {"VAULT_ADDR": server.addr, "VAULT_TOKEN": "root"}
        baseline = loaded(hook, [sys.executable, "-c", "pass"])
        modules = loaded({**hook, **env}, [SCRIPT, "--no-cache", "--backend", "vault"])
        done = keyhelper("--no-cache", "--backend", "vault", env=env)

    assert (done.returncode, done.stdout, done.stderr) == (0, "sk-over-tls\n", "")
    assert {"ssl", "keyhelper_plugins.vault_wire"} <= modules - baseline
    assert not (modules - baseline) & HTTP_LIBRARIES


def test_importing_the_vault_plugins_adds_only_their_own_modules() -> None:
    """Beyond what the contract (keyhelper.backend) loads, the plugin's modules import
    nothing at module level: no typing, dataclasses, re, logging, hashlib, http.client."""
    code = ("import sys, keyhelper.backend, keyhelper.errors, keyhelper.redact\n"
            "before = set(sys.modules)\n"
            "import keyhelper_plugins.vault, keyhelper_plugins.vault_aws\n"
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split()

    assert set(out) == {"keyhelper_plugins", "keyhelper_plugins.vault",
                        "keyhelper_plugins.vault_auth", "keyhelper_plugins.vault_aws",
                        "keyhelper_plugins.vault_http", "keyhelper_plugins.vault_kv"}, out
