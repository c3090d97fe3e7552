#!/usr/bin/env python3
"""Benchmark: the oidc backend against the yardstick A = the venv's ``python -c pass``.

Starts a real OpenID provider (panva's oidc-provider, scripts/install-oidc-provider) on
loopback, signs in once (`keyhelper login`, the form driven over HTTP), then runs whole
processes, interleaved (A, B, C, A, B, C, ...):

  A  the venv's ``python -c pass`` (see ../shared/performance.md)
  B  ``keyhelper`` cache hit on the OIDC entry (the access token)
  C  ``keyhelper --no-cache``: one refresh grant each (the rotated refresh token kept in a
     0600 file before printing; the ID token's signature checked; discovery and JWKS from
     the state directory)
  D  ``keyhelper --no-cache --backend env``: the full path of any miss, without a network
     call, to tell keyhelper's own miss cost from the refresh grant's

and prints medians in ms and as ratios to A, and the refresh grants the provider counted.
Run: ``.venv/bin/python scripts/bench_oidc.py [rounds]`` (default 15).
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

from fixtures_oidc import CLIENT_ID, login_code, start_provider  # noqa: E402


def timed(argv: Sequence[str], env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    bindir = os.path.dirname(sys.executable)
    python, keyhelper = os.path.join(bindir, "python"), os.path.join(bindir, "keyhelper")
    with start_provider() as provider, tempfile.TemporaryDirectory() as scratch:
        config = os.path.join(scratch, "config.toml")
        with open(config, "w") as handle:
            handle.write(f'chain = ["sso"]\n[backends.sso]\ntype = "oidc"\n'
                         f'issuer = "{provider.issuer}"\nclient_id = "{CLIENT_ID}"\n'
                         'scopes = "openid offline_access api"\ntoken_store = "file"\n')
        env = {"PATH": os.environ.get("PATH", ""), "HOME": scratch,
               "KEYHELPER_API_KEY": "sk-bench-0123456789",
               "KEYHELPER_CONFIG": config, "KEYHELPER_CACHE_DIR": os.path.join(scratch, "c")}
        os.environ.update(env)  # for `keyhelper login`, run by login_code
        code, _, err = login_code("bench", selection=())
        if code != 0:
            raise SystemExit(f"keyhelper login failed: {err}")
        timed([keyhelper], env)  # the entry the hits read
        cases = {
            "A python -c pass (venv)": [python, "-c", "pass"],
            "B keyhelper, a hit on the OIDC entry": [keyhelper],
            "C keyhelper --no-cache: one refresh grant": [keyhelper, "--no-cache"],
            "D full path, no network: --no-cache --backend env": [
                keyhelper, "--no-cache", "--backend", "env"],
        }
        before = provider.grants("refresh_token")
        samples: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for i in range(rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                samples[name].append(timed(cases[name], env))
        grants = provider.grants("refresh_token") - before
    base = statistics.median(samples[names[0]])
    print(f"{rounds} rounds, interleaved; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'what':48} {'median ms':>10} {'x A':>6}")
    for name in names:
        median = statistics.median(samples[name])
        print(f"{name:48} {median * 1000:10.1f} {median / base:6.2f}")
    print(f"refresh grants counted by the provider: {grants} for {rounds} runs of C "
          f"(B made none); provider errors: {provider.errors() or 'none'}")


if __name__ == "__main__":
    main()
