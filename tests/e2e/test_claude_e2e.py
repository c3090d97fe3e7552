"""End to end: the real Claude Code CLI (pinned 2.1.332, installed by scripts/install-claude)
runs keyhelper as its apiKeyHelper, with keys from a real OpenBao server.

The gateway is a stand-in on loopback (tests/support/fake_anthropic.py says why); Claude Code, the
helper, the cache and Vault are all real. Vault reads are counted by OpenBao's own file audit
device. Figures (backend calls per request, rotation-to-success time) are printed; run
``scripts/e2e-claude`` to see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from claude_cli import CLAUDE, ROOT, claude_env, claude_home, claude_p, vault_config
from fake_anthropic import serve_gateway
from fixtures_openbao import OpenBao, audit_reads, start_openbao
from helpers import SCRIPT

from keyhelper.base import files as kpaths
from keyhelper.base import records as kentry

pytestmark = pytest.mark.claude

@pytest.fixture(scope="module", autouse=True)
def claude_installed() -> None:
    if not CLAUDE.exists():
        subprocess.run([str(ROOT / "scripts" / "install-claude")], check=True, timeout=600)


class Vault:
    """One test's secret in OpenBao, and the count of its reads from the audit device."""

    def __init__(self, server: OpenBao, audit_log: Path):
        self.server = server
        self.path = server.unique("claude")
        self.audit_log = audit_log

    def put(self, key: str) -> None:
        self.server.kv_put(self.path, {"api_key": key})

    def reads(self) -> int:
        """Reads of this secret that OpenBao answered, from its file audit device."""
        return audit_reads(self.audit_log, f"secret/data/{self.path}")


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenBao, Path]]:
    """An OpenBao server of this module's own, with a file audit device."""
    audit_log = tmp_path_factory.mktemp("openbao-audit") / "audit.log"
    with start_openbao(audit_log=str(audit_log)) as server:
        yield server, audit_log


def claude_setup(tmp: Path, server: OpenBao, vault: Vault) -> tuple[Path, Path]:
    config = vault_config(tmp, server.addr, server.root_token, vault.path)
    return claude_home(tmp, SCRIPT, config), config


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture
def e2e(audited: tuple[OpenBao, Path], tmp_path: Path) -> tuple[Vault, Path, Path]:
    server, audit_log = audited
    vault = Vault(server, audit_log)
    home, config = claude_setup(tmp_path, server, vault)
    return vault, home, config


def test_claude_sends_the_key_from_vault(e2e: tuple[Vault, Path, Path], tmp_path: Path) -> None:
    vault, home, _ = e2e
    vault.put("sk-gw-E2E-one")
    with serve_gateway({"sk-gw-E2E-one"}) as gateway:
        code, out, err = finish(claude_p(claude_env(home, gateway.url), tmp_path))
    assert (code, out.strip()) == (0, "hi"), err
    seen = gateway.messages()
    assert seen, "Claude Code sent no request"
    assert {(r.x_api_key, r.authorization, r.status) for r in seen} == {
        ("sk-gw-E2E-one", "Bearer sk-gw-E2E-one", 200)}
    assert vault.reads() == 1


def test_concurrent_sessions_cost_one_vault_read(e2e: tuple[Vault, Path, Path],
                                                 tmp_path: Path) -> None:
    vault, home, _ = e2e
    vault.put("sk-gw-E2E-many")
    sessions = 4
    with serve_gateway({"sk-gw-E2E-many"}) as gateway:
        env = claude_env(home, gateway.url)
        results = [finish(p) for p in [claude_p(env, tmp_path) for _ in range(sessions)]]
    assert [(code, out.strip()) for code, out, _ in results] == [(0, "hi")] * sessions
    requests = gateway.messages()
    assert {r.x_api_key for r in requests} == {"sk-gw-E2E-many"}
    assert vault.reads() == 1
    print(f"\nFIGURE concurrent sessions: {sessions} claude -p, {len(requests)} model "
          f"requests, {vault.reads()} Vault read(s): "
          f"{vault.reads() / len(requests):.2f} backend calls per request")


def _send(stdin: IO[str], text: str) -> None:
    stdin.write(json.dumps({"type": "user", "message": {"role": "user", "content": text}}) + "\n")
    stdin.flush()


def _until_result(stdout: IO[str]) -> dict[str, Any]:
    for line in stdout:
        event = json.loads(line)
        if event.get("type") == "result":
            return dict(event)
    raise AssertionError("Claude Code ended without a result")


def test_rotation_reaches_a_running_session(e2e: tuple[Vault, Path, Path],
                                            tmp_path: Path) -> None:
    """Ops rotate the key in Vault; the gateway refuses the old one; the session already
    running succeeds on its next request with no restart and no cache clear."""
    vault, home, _ = e2e
    vault.put("sk-gw-E2E-old")
    with serve_gateway({"sk-gw-E2E-old"}) as gateway:
        proc = subprocess.Popen(
            [str(CLAUDE), "-p", "--input-format", "stream-json", "--output-format",
             "stream-json", "--verbose"], env=claude_env(home, gateway.url), cwd=tmp_path,
            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _send(proc.stdin, "first")
            assert _until_result(proc.stdout)["subtype"] == "success"
            assert vault.reads() == 1

            vault.put("sk-gw-E2E-new")
            gateway.valid_keys = {"sk-gw-E2E-new"}
            rotated = time.monotonic()
            _send(proc.stdin, "second")
            result = _until_result(proc.stdout)
            to_success = time.monotonic() - rotated
        finally:
            proc.stdin.close()
            proc.wait(60)
    assert result["subtype"] == "success" and result["result"] == "hi"
    statuses = [(r.x_api_key, r.status) for r in gateway.messages()]
    assert statuses[0] == ("sk-gw-E2E-old", 200)
    assert statuses[-1] == ("sk-gw-E2E-new", 200)
    assert ("sk-gw-E2E-old", 401) in statuses
    assert vault.reads() == 2
    print(f"\nFIGURE rotation: {to_success:.2f} s from rotation to the first successful "
          f"request; requests {statuses}; Vault reads {vault.reads()}")


def test_vault_down_with_a_valid_cached_key(tmp_path: Path) -> None:
    """Its own OpenBao, stopped mid-test: the expired cache entry is served (stale-if-error)."""
    with start_openbao() as server:
        vault = Vault(server, tmp_path / "no-audit.log")
        home, config = claude_setup(tmp_path, server, vault)
        vault.put("sk-gw-E2E-kept")
        with serve_gateway({"sk-gw-E2E-kept"}) as gateway:
            env = claude_env(home, gateway.url)
            assert finish(claude_p(env, tmp_path))[0] == 0
    # The cache entry's life ends, as it would after the TTL.
    entry_file = next(Path(kpaths.cache_dir(os.environ)).glob("*.entry"))
    entry = kentry.parse_entry(entry_file.read_bytes())
    assert entry is not None
    entry.expires = entry.refresh = time.time() - 1
    entry_file.write_bytes(entry.serialize())
    with serve_gateway({"sk-gw-E2E-kept"}) as gateway:
        code, out, err = finish(claude_p(claude_env(home, gateway.url), tmp_path))
    assert (code, out.strip()) == (0, "hi"), err
    assert {r.x_api_key for r in gateway.messages()} == {"sk-gw-E2E-kept"}
    assert config.exists()
