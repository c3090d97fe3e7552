"""The real LiteLLM proxy (scripts/install-litellm puts it in .deps/litellm-venv) on a free
loopback port, with a ``mock_response`` model, keyhelper's ``custom_auth`` (or not), and a
real LiteLLM callback that records who each request was attributed to (shared by
tests/gateway, scripts/bench-gateway and scripts/e2e-litellm)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".deps" / "litellm-venv"
LITELLM = VENV / "bin" / "litellm"
READY_WITHIN = 120.0
MASTER_KEY = "sk-litellm-master-test"

CONFIG = """\
model_list:
  - model_name: "*"
    litellm_params:
      model: "anthropic/claude-mock"
      api_key: "not-used"
      mock_response: "hi from litellm"
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
{custom_auth}
litellm_settings:
  callbacks: recorder.recorder
"""
CUSTOM_AUTH = "  custom_auth: keyhelper.gateway.litellm.user_api_key_auth"

# A LiteLLM callback (its CustomLogger API): one JSON line per request, naming the user and
# team LiteLLM attributed it to, as its spend tracking sees them.
RECORDER = '''\
import json, os
from litellm.integrations.custom_logger import CustomLogger

class Recorder(CustomLogger):
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        meta = (kwargs.get("standard_logging_object") or {}).get("metadata") or {}
        line = {"user": meta.get("user_api_key_user_id"),
                "team": meta.get("user_api_key_team_id"),
                "key": meta.get("user_api_key_hash"),
                "metadata": meta.get("user_api_key_auth_metadata")}
        with open(os.environ["RECORDER_LOG"], "a") as out:
            out.write(json.dumps(line) + "\\n")

recorder = Recorder()
'''


@dataclass
class Proxy:
    url: str
    log: Path  # the proxy's stdout and stderr
    records: Path  # the recorder's lines

    def attributions(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines()]

    def post(self, key: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        """POST /v1/messages as Claude Code does (x-api-key): (status, JSON body)."""
        request = urllib.request.Request(
            f"{self.url}/v1/messages", method="POST",
            data=body or b'{"model":"claude-mock","max_tokens":5,'
                         b'"messages":[{"role":"user","content":"hi"}]}',
            headers={"x-api-key": key, "content-type": "application/json",
                     "anthropic-version": "2023-06-01"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def free_port() -> int:
    # Not fixtures_openbao's: that module needs pytest, which the LiteLLM venv (where
    # scripts/bench_gateway.py runs) does not have.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def installed() -> bool:
    return LITELLM.exists()


@contextlib.contextmanager
def start_litellm(work: Path, gateway_config: Path | None, *, master_key: str = MASTER_KEY,
                  extra_env: dict[str, str] | None = None) -> Iterator[Proxy]:
    """Start the proxy (with keyhelper's custom_auth when ``gateway_config`` is given) and
    wait for /health/liveliness; stop it on exit."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "recorder.py").write_text(RECORDER)
    config = work / "litellm.yaml"
    config.write_text(CONFIG.format(custom_auth=CUSTOM_AUTH if gateway_config else ""))
    port = free_port()
    records, log_path = work / "records.jsonl", work / "litellm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM_", "KEYHELPER_"))}
    # This checkout's keyhelper first: the venv's installed copy only brings dependencies.
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=master_key,
               RECORDER_LOG=str(records), PYTHONPATH=str(ROOT), **(extra_env or {}))
    if gateway_config is not None:
        env["KEYHELPER_GATEWAY_CONFIG"] = str(gateway_config)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([str(LITELLM), "--config", str(config), "--host", "127.0.0.1",
                                 "--port", str(port), "--num_workers", "1"],
                                env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_ready(proc, url, log_path)
        yield Proxy(url, log_path, records)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    give_up = time.monotonic() + READY_WITHIN
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > give_up:
            raise ProxyDidNotStart(log_path.read_text(errors="replace")[-3000:])
        # Poll interval, not synchronisation: the loop ends on the health answer.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)


class ProxyDidNotStart(RuntimeError):
    pass
