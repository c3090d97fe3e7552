"""What a key from the OS keyring costs per call: file-cache hit, keyring-cache hit, no cache.

Runs a private gnome-keyring (tests/support/fixtures_keyring.py), then times whole processes,
interleaved with the yardstick A (the venv's ``python -c pass``), and prints medians.
Usage: .venv/bin/python scripts/bench_keyring.py [runs]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from fixtures_keyring import start_secret_service  # noqa: E402

KEY = "sk-ant-bench-0123456789abcdef"
SCRIPT = str(Path(sys.executable).parent / "keyhelper")


def main(runs: int) -> None:
    service = start_secret_service()
    home = Path(tempfile.mkdtemp(prefix="keyhelper-bench-"))
    try:
        service.store(KEY, service="keyhelper", username="bench")
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("XDG_", "KEYHELPER_", "DBUS_"))}
        base.update(service.env, HOME=str(home))
        configs = {}
        for name, cache in (("files", "files"), ("keyring", "keyring")):
            path = home / f"{name}.toml"
            path.write_text(f'cache = "{cache}"\nttl = 3600\nchain = ["keyring"]\n'
                            '[backends.keyring]\nusername = "bench"\n')
            configs[name] = path
        cases = {
            "A: venv python -c pass": [sys.executable, "-c", "pass"],
            "secret-tool lookup": ["secret-tool", "lookup", "service", "keyhelper",
                                   "username", "bench"],
            "keyhelper, file-cache hit": [SCRIPT, "--config", str(configs["files"])],
            "keyhelper, keyring-cache hit": [SCRIPT, "--config", str(configs["keyring"])],
            "keyhelper --no-cache (keyring read)": [SCRIPT, "--no-cache", "--config",
                                                    str(configs["files"])],
        }
        env = {**base, "KEYHELPER_CACHE_DIR": str(home / "cache")}
        for argv in cases.values():  # warm up, fill both caches
            subprocess.run(argv, env=env, check=True, capture_output=True)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, argv in cases.items():
                before = _children_cpu()
                started = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
                cpu[name].append(_children_cpu() - before)
                assert done.returncode == 0, (name, done.stderr)
                assert name.startswith("A:") or KEY in done.stdout, name
        a = statistics.median(times["A: venv python -c pass"])
        a_cpu = statistics.median(cpu["A: venv python -c pass"])
        print(f"median of {runs} runs each, interleaved; os.cpu_count()={os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'':40} {'wall':>9}  {'x A':>5}  {'CPU (user+sys)':>14}  {'x A':>5}")
        for name, values in times.items():
            wall, used = statistics.median(values), statistics.median(cpu[name])
            print(f"{name:40} {wall * 1000:6.1f} ms  {wall / a:5.1f}  {used * 1000:11.1f} ms  "
                  f"{used / a_cpu:5.1f}")
    finally:
        service.stop()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
