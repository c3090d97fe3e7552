#!/usr/bin/env python3
"""Benchmark: the cold Vault path of keyhelper against ``bao kv get`` on the same server.

Starts a real OpenBao dev server on loopback, seeds one KV v2 secret, then runs, interleaved
(A, B, C, D, A, B, ...), whole processes:

  A  the venv's ``python -c pass`` (the yardstick, see ../shared/performance.md)
  B  ``keyhelper --no-cache`` with a vault backend: one KV read (mount already remembered)
  C  ``bao kv get -field=api_key secret/...`` (the Go CLI) against the same server
  D  ``keyhelper`` cache hit, for reference

and prints medians in ms and as ratios to A. Run: ``.venv/bin/python scripts/bench_vault.py
[rounds]`` (default 15).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "support"))

from fixtures_openbao import bao_binary, start_openbao  # noqa: E402

KEY = "sk-bench-0123456789"


def timed(argv: Sequence[str], env: Mapping[str, str], expect: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or proc.stdout.strip() != expect:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    bindir = os.path.dirname(sys.executable)
    python, keyhelper = os.path.join(bindir, "python"), os.path.join(bindir, "keyhelper")
    with start_openbao() as server, tempfile.TemporaryDirectory() as scratch:
        server.kv_put("bench/claude-code", {"api_key": KEY})
        config = os.path.join(scratch, "config.toml")
        with open(config, "w") as handle:
            handle.write('chain = ["vault"]\n[backends.vault]\npath = '
                         '"secret/bench/claude-code"\n')
        env = {"PATH": os.environ.get("PATH", ""), "HOME": scratch,
               "KEYHELPER_CONFIG": config, "KEYHELPER_CACHE_DIR": os.path.join(scratch, "c"),
               "VAULT_ADDR": server.addr, "VAULT_TOKEN": server.root_token}
        cases = {
            "A python -c pass (venv)": ([python, "-c", "pass"], ""),
            "B keyhelper --no-cache, vault KV v2 read": ([keyhelper, "--no-cache"], KEY),
            "C bao kv get -field=api_key": ([bao_binary(), "kv", "get", "-field=api_key",
                                             "secret/bench/claude-code"], KEY),
            "D keyhelper cache hit": ([keyhelper], KEY),
        }
        for argv, expect in cases.values():  # warm-up: page cache, mount memo, cache entry
            timed(argv, env, expect)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (argv, expect) in cases.items():
                times[name].append(timed(argv, env, expect))
    base = statistics.median(times["A python -c pass (venv)"])
    print(f"OpenBao dev server on loopback, {rounds} interleaved rounds, medians:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<42} {median * 1000:7.1f} ms  {median / base:5.2f} x A")
    vault = statistics.median(times["B keyhelper --no-cache, vault KV v2 read"])
    bao = statistics.median(times["C bao kv get -field=api_key"])
    print(f"  keyhelper cold vault / bao kv get: {vault / bao:.2f}")


if __name__ == "__main__":
    main()
