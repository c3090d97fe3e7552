"""The vault backend through a real ``bao proxy`` (OpenBao's Vault Proxy) with AppRole
auto-auth and caching, as companies deploy it to laptops: keyhelper is given the proxy's
address ($VAULT_AGENT_ADDR, as the Vault CLI reads it, or ``agent_addr``) and no token."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_openbao import OpenBao, approle, bao_binary, free_port, seed
from helpers import keyhelper

pytestmark = pytest.mark.vault

KEY = "sk-ant-through-the-proxy-0123456789"


@contextlib.contextmanager
def bao_proxy(openbao: OpenBao, workdir: Path, role_id: str,
              secret_id: str) -> Iterator[tuple[str, Path]]:
    """A running ``bao proxy``: its address, and its log."""
    workdir.mkdir(mode=0o700)
    (workdir / "role_id").write_text(role_id)
    (workdir / "secret_id").write_text(secret_id)
    port = free_port()
    config = workdir / "proxy.hcl"
    config.write_text(f"""\
vault {{
  address = "{openbao.addr}"
}}
auto_auth {{
  method "approle" {{
    config = {{
      role_id_file_path = "{workdir / 'role_id'}"
      secret_id_file_path = "{workdir / 'secret_id'}"
      remove_secret_id_file_after_reading = false
    }}
  }}
}}
cache {{}}
api_proxy {{
  use_auto_auth_token = true
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_disable = true
}}
""")
    log = workdir / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([bao_binary(), "proxy", f"-config={config}"],
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=workdir,
                                env={"HOME": str(workdir),
                                     "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    addr = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 20
        while not _auto_authed(addr, log):
            if proc.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"bao proxy did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)  # poll interval, not synchronisation
        yield addr, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _auto_authed(addr: str, log: Path) -> bool:
    """The proxy listens and has logged in (it says so in its log)."""
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1):
            pass
    except urllib.error.HTTPError:
        pass
    except (urllib.error.URLError, OSError):
        return False
    return "authentication successful" in log.read_text(errors="replace")


@pytest.fixture
def proxy(openbao: OpenBao, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the proxy's address, the secret's path) for a secret only the AppRole may read."""
    path, policy = seed(openbao, KEY)
    role_id, secret_id = approle(openbao, policy)
    with bao_proxy(openbao, tmp_path / "proxy", role_id, secret_id) as (addr, _):
        yield addr, path


def backend(write_config, path: str, extra: str = "") -> None:  # type: ignore[no-untyped-def]
    write_config('chain = ["vault"]\n[backends.vault]\ntype = "vault"\n'
                 f"path = {json.dumps(path)}\n{extra}")


def test_vault_agent_addr_reads_through_the_proxy_without_a_token(
        proxy: tuple[str, str], write_config, openbao: OpenBao) -> None:  # type: ignore[no-untyped-def]
    addr, path = proxy
    backend(write_config, path)
    # VAULT_ADDR names the server itself: as for the Vault CLI, the agent's address wins.
    run = keyhelper(env={"VAULT_AGENT_ADDR": addr, "VAULT_ADDR": openbao.addr})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    assert not any(Path(os.environ["HOME"]).glob(".vault-token"))


def test_agent_addr_option(proxy: tuple[str, str], write_config) -> None:  # type: ignore[no-untyped-def]
    addr, path = proxy
    backend(write_config, path, f'agent_addr = "{addr}"\n')
    run = keyhelper()
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


def test_without_the_agent_no_token_is_a_skip(proxy: tuple[str, str], write_config,  # type: ignore[no-untyped-def]
                                              openbao: OpenBao) -> None:
    _, path = proxy
    backend(write_config, path)
    run = keyhelper(env={"VAULT_ADDR": openbao.addr})
    assert (run.returncode, run.stdout) == (1, "")
    assert "no Vault token" in run.stderr


def test_a_token_given_still_goes_through_the_agent(proxy: tuple[str, str], write_config,  # type: ignore[no-untyped-def]
                                                    openbao: OpenBao) -> None:
    addr, path = proxy
    backend(write_config, path)
    run = keyhelper(env={"VAULT_AGENT_ADDR": addr, "VAULT_TOKEN": openbao.root_token})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
