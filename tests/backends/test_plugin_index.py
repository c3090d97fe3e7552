"""The index of entry points (keyhelper.registry.found): a miss reads the backend types from
it instead of scanning with importlib.metadata, and it follows every install, upgrade and
removal (real dist-info directories on PYTHONPATH, as pip lays them out)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from helpers import SCRIPT, keyhelper, loaded
from plugin_dists import PLUGINS, make_distribution

from keyhelper import registry

GOOD_KEY = "sk-ant-from-goodplug-0123456789"


def test_a_miss_reads_the_index_and_follows_installs_and_removals(
        tmp_path: Path, cache_dir: Path, hook: dict[str, str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = {**hook, "PYTHONPATH": f"{hook['PYTHONPATH']}:{site}", "GOOD_KEY": GOOD_KEY}
    # The first miss scans and writes the index (0600, in the private state directory).
    first = keyhelper("--no-cache", "-b", "env", env={**env, "KEYHELPER_API_KEY": "sk-a-1"})
    assert (first.returncode, first.stdout, first.stderr) == (0, "sk-a-1\n", "")
    index = cache_dir / "state" / registry.INDEX_NAME
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert b"keyhelper_plugins.env:EnvBackend" in index.read_bytes()
    # The next miss reads it: no importlib.metadata at all.
    run_env = {**env, "KEYHELPER_API_KEY": "sk-a-2"}
    extra = loaded(run_env, [SCRIPT, "--no-cache", "-b", "env"])
    assert "keyhelper.resolver" in extra and "importlib.metadata" not in extra
    # A plugin installed after the index was written is found on the next miss.
    version, eps, source = PLUGINS["goodplug"]
    make_distribution(site, "goodplug", version, eps, source)
    good = keyhelper("--no-cache", "-b", "good", env=env)
    assert (good.returncode, good.stdout, good.stderr) == (0, GOOD_KEY + "\n", "")
    # Removed: the index said it, but it is not loaded from a stale index.
    for path in site.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    gone = keyhelper("--no-cache", "-b", "good", env=env)
    assert (gone.returncode, gone.stdout) == (2, "")
    assert "unknown backend 'good'" in gone.stderr or "no backend type 'good'" in gone.stderr


def test_a_damaged_index_is_scanned_again(cache_dir: Path) -> None:
    run = keyhelper("--no-cache", "-b", "env", env={"KEYHELPER_API_KEY": "sk-a-1"})
    assert run.returncode == 0
    index = cache_dir / "state" / registry.INDEX_NAME
    index.write_bytes(index.read_bytes().replace(b"EnvBackend", b"Nothing", 1)[:-5])
    again = keyhelper("--no-cache", "-b", "env", env={"KEYHELPER_API_KEY": "sk-a-2"})
    assert (again.returncode, again.stdout, again.stderr) == (0, "sk-a-2\n", "")
    assert b"keyhelper_plugins.env:EnvBackend" in index.read_bytes()
