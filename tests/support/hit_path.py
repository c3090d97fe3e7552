"""What the cache-hit path may import: shared by the hot-path and route tests."""

from __future__ import annotations

FORBIDDEN = {
    "click", "json", "argparse", "logging", "pathlib", "tomllib", "importlib.metadata",
    "cachetools", "hvac", "jwt", "keyring", "requests", "subprocess", "tempfile",
    "dataclasses", "typing", "threading", "secrets", "hashlib",
    # os and what it loads (~2.5 ms without site): the hit uses posix or nt (keyhelper.base.oslite)
    "os", "posixpath", "ntpath", "genericpath", "stat", "_collections_abc",
    # native calls (caller walk on macOS and Windows) go through _ctypes alone
    "ctypes", "ctypes.util",
    # keyhelper's own heavy side: only the hit path (hit, cachepolicy, base) may serve a hit
    "keyhelper.resolver", "keyhelper.chain", "keyhelper.config", "keyhelper.cli",
    "keyhelper.app", "keyhelper.registry", "keyhelper.stores", "keyhelper.backend",
    "keyhelper.errors", "keyhelper_plugins",
}

# keyhelper modules written for the hit path (each imports only os/sys/time and builtins).
HIT_MODULES = {"keyhelper", "keyhelper.console", "keyhelper.cachepolicy"}


def on_the_hit_path(module: str) -> bool:
    return module in HIT_MODULES or module == "keyhelper.base" or module.startswith(
        "keyhelper.base.")
