"""What keyhelper's gateway verifier costs per request, and what it does to a real LiteLLM
proxy's throughput. Run through scripts/bench-gateway (the LiteLLM venv's python, this
checkout first on PYTHONPATH).

  1. verification per request, in process (µs, median): cold (a token never seen: header,
     key lookup, signature, claims) for RS256, ES256 and EdDSA; warm (the same token again:
     SHA-256 and a cache lookup); and the LiteLLM hook itself, warm (adds LiteLLM's
     UserAPIKeyAuth object).
  2. the real proxy (mock model), requests per second with N concurrent clients: the master
     key without custom_auth (LiteLLM's own check) versus keyhelper tokens through
     custom_auth (one token per simulated user, so the cache is warm after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from keyhelper_plugins.jwt import public_jwk, thumbprint  # noqa: E402
from litellm_proxy import MASTER_KEY, start_litellm  # noqa: E402

from keyhelper.gateway import settings as gateway_settings  # noqa: E402
from keyhelper.gateway.verify import Verifier  # noqa: E402

ISSUER, AUDIENCE = "https://keyhelper.bench", "litellm"
BODY = (b'{"model":"claude-mock","max_tokens":5,'
        b'"messages":[{"role":"user","content":"hi"}]}')


def keys() -> dict[str, Any]:
    return {"RS256": rsa.generate_private_key(65537, 2048),
            "ES256": ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate()}


def jwks(signers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    document, kids = [], {}
    for alg, private in signers.items():
        jwk = public_jwk(private.public_key())
        jwk.update(kid=thumbprint(jwk), use="sig", alg=alg)
        document.append(jwk)
        kids[alg] = jwk["kid"]
    return {"keys": document}, kids


def mint(private: Any, alg: str, kid: str, user: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "user": user, "team": "bench",
                       "sub": user, "iat": now, "nbf": now, "exp": now + 3600}, private,
                      algorithm=alg, headers={"kid": kid})


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def verification(work: Path, rounds: int) -> None:
    signers = keys()
    document, kids = jwks(signers)
    (work / "jwks.json").write_text(json.dumps(document))
    settings = gateway_settings.from_mapping({
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(work / "jwks.json"),
        "claims": {"user_id": "user", "team_id": "team", "metadata": ["sub"]}})
    verifier = Verifier(settings).start()
    print(f"verification per request, median of {rounds} (µs):")
    for alg, private in signers.items():
        tokens = [mint(private, alg, kids[alg], f"user{i}") for i in range(rounds)]
        cold = []
        for token in tokens:
            started = time.perf_counter()
            verifier.verify(token)
            cold.append(time.perf_counter() - started)
        warm = []
        for token in tokens:
            started = time.perf_counter()
            verifier.verify(token)
            warm.append(time.perf_counter() - started)
        print(f"  {alg:6}  cold {median_us(cold):7.1f}   warm {median_us(warm):5.1f}")

    os.environ["KEYHELPER_GATEWAY_CONFIG"] = str(work / "gateway.toml")
    (work / "gateway.toml").write_text(
        f'issuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'jwks_file = "{work / "jwks.json"}"\n[claims]\nuser_id = "user"\nteam_id = "team"\n')
    from keyhelper.gateway import litellm as hook

    token = mint(signers["ES256"], "ES256", kids["ES256"], "hook")

    async def timed() -> list[float]:
        await hook.user_api_key_auth(None, token)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            await hook.user_api_key_auth(None, token)
            samples.append(time.perf_counter() - started)
        return samples

    print(f"  the LiteLLM hook, warm (with LiteLLM's UserAPIKeyAuth): "
          f"{median_us(asyncio.run(timed())):.1f}")


def load(url: str, keys_: list[str], total: int, concurrency: int) -> tuple[float, int]:
    """``total`` POST /v1/messages over ``concurrency`` threads: (requests/s, failures)."""
    counter = iter(range(total))
    lock = threading.Lock()
    failures = [0]

    def worker(index: int) -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            key = keys_[(index + n) % len(keys_)]
            request = urllib.request.Request(
                f"{url}/v1/messages", data=BODY, method="POST",
                headers={"x-api-key": key, "content-type": "application/json",
                         "anthropic-version": "2023-06-01"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
            except OSError:
                with lock:
                    failures[0] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total / (time.perf_counter() - started), failures[0]


def throughput(work: Path, total: int, concurrency: int, repeats: int) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    document, kids = jwks({"ES256": private})
    (work / "proxy-jwks.json").write_text(json.dumps(document))
    config = work / "proxy-gateway.toml"
    config.write_text(f'issuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                      f'jwks_file = "{work / "proxy-jwks.json"}"\n'
                      '[claims]\nuser_id = "user"\nteam_id = "team"\n')
    tokens = [mint(private, "ES256", kids["ES256"], f"user{i}") for i in range(50)]
    print(f"\nLiteLLM proxy (1 worker, mock model), {total} requests, {concurrency} clients, "
          f"{repeats} runs each, interleaved:")
    with start_litellm(work / "plain", None) as plain, \
            start_litellm(work / "custom-auth", config) as checked:
        rows = (("master key, no custom_auth", plain.url, [MASTER_KEY]),
                ("keyhelper tokens via custom_auth", checked.url, tokens))
        for _, url, presented in rows:
            load(url, presented, min(total, 100), concurrency)  # warm up
        rates: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        for _ in range(repeats):  # alternate, so that drift in load hits both alike
            for label, url, presented in rows:
                rate, failed = load(url, presented, total, concurrency)
                assert failed == 0, f"{failed} requests failed"
                rates[label].append(rate)
    for label, values in rates.items():
        print(f"  {label:34} {statistics.median(values):7.1f} req/s "
              f"(runs: {', '.join(f'{r:.1f}' for r in values)})")
    base, ours = (statistics.median(v) for v in rates.values())
    print(f"  ratio with/without: {ours / base:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-proxy", action="store_true", help="skip the proxy figures")
    args = parser.parse_args()
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    with tempfile.TemporaryDirectory(prefix="keyhelper-bench-gateway-") as tmp:
        verification(Path(tmp), args.rounds)
        if not args.no_proxy:
            throughput(Path(tmp), args.requests, args.concurrency, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
