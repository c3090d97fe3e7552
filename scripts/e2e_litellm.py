"""Claude Code -> LiteLLM proxy, with the proxy's key served by keyhelper from OpenBao.

Run through scripts/e2e-litellm. Prints the figures: whether the key reached the gateway,
Vault reads for several concurrent sessions, and what a rotation does through LiteLLM.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from claude_cli import claude_env, claude_home, claude_p, vault_config  # noqa: E402
from fixtures_openbao import audit_reads, start_openbao  # noqa: E402
from litellm_proxy import start_litellm  # noqa: E402

KEYHELPER = Path(sys.executable).parent / "keyhelper"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="keyhelper-litellm-") as tmp:
        work = Path(tmp)
        audit = work / "audit.log"
        with start_openbao(audit_log=str(audit)) as server:
            path = "llm/claude-code"
            secret = f"secret/data/{path}"
            server.kv_put(path, {"api_key": "sk-litellm-master-one"})
            home = claude_home(work, str(KEYHELPER),
                               vault_config(work, server.addr, server.root_token, path))
            cache = work / "cache"
            with start_litellm(work / "one", None, master_key="sk-litellm-master-one") as proxy:
                url = proxy.url
                env = claude_env(home, url, KEYHELPER_CACHE_DIR=str(cache))
                started = time.monotonic()
                out, err = claude_p(env, work).communicate(timeout=120)
                print(f"one session: {out.strip()!r} in {time.monotonic() - started:.1f} s"
                      f"{'; stderr: ' + err.strip() if err.strip() else ''}")
                procs = [claude_p(env, work) for _ in range(3)]
                outs = [p.communicate(timeout=120)[0].strip() for p in procs]
                print(f"3 more concurrent sessions: {outs}; Vault reads in all: "
                      f"{audit_reads(audit, secret)}")
            # Rotation: the key changes in Vault and LiteLLM restarts with it.
            server.kv_put(path, {"api_key": "sk-litellm-master-two"})
            with start_litellm(work / "two", None, master_key="sk-litellm-master-two") as proxy:
                url = proxy.url
                env = claude_env(home, url, KEYHELPER_CACHE_DIR=str(cache))
                old = urllib.request.Request(f"{url}/v1/messages", method="POST",
                                             data=b'{"model":"m","max_tokens":5,"messages":[]}',
                                             headers={"x-api-key": "sk-litellm-master-one",
                                                      "content-type": "application/json"})
                try:
                    urllib.request.urlopen(old, timeout=10)
                    status = 200
                except urllib.error.HTTPError as exc:
                    status = exc.code
                print(f"LiteLLM's answer to the old key after rotation: HTTP {status} "
                      "(Claude Code re-runs its helper on 401/403 only)")
                out, _ = claude_p(env, work).communicate(timeout=120)
                print(f"a new session before the cache entry ends: {out.strip()[:80]!r}")
                subprocess.run([str(KEYHELPER), "cache", "clear", "--all"], env=env, check=True,
                               capture_output=True)
                out, _ = claude_p(env, work).communicate(timeout=120)
                print(f"after `keyhelper cache clear`: {out.strip()!r}; Vault reads in all: "
                      f"{audit_reads(audit, secret)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
