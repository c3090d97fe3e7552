"""The route: keys from env and file backends are never cached, so the hit path reads them
itself, following a route file (names of variables and files, never a key) that the full
path wrote. On any doubt the full path decides and reports exactly as before.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from countingcmd import counting_command
from helpers import SCRIPT, keyhelper, loaded
from hit_path import FORBIDDEN, on_the_hit_path

from keyhelper.base import files as kpaths
from keyhelper.base import records as kentry
from keyhelper.base.files import Selection

KEY = "sk-ant-Routed_0123456789"


def route_file(*backends: str) -> Path:
    key = kentry.entry_key(Selection(backends), os.environ)
    return Path(kpaths.cache_dir(os.environ)) / f"{key}.route"


def lean_run(hook: dict[str, str], args: list[str], env: dict[str, str]) -> set[str]:
    """The keyhelper modules and forbidden modules a run loaded, beyond a bare interpreter."""
    baseline = loaded(hook, [sys.executable, "-c", "pass"])
    modules = loaded({**hook, **env}, [SCRIPT, *args]) - baseline
    return {m for m in modules if m.startswith("keyhelper") or m in FORBIDDEN}


def test_env_key_is_read_on_the_hit_path(hook: dict[str, str]) -> None:
    env = {"KEYHELPER_API_KEY": KEY}
    first = keyhelper("--backend", "env", env=env)
    assert (first.returncode, first.stdout, first.stderr) == (0, KEY + "\n", "")
    route = route_file("env")
    assert route.read_text() == "keyhelper-route 2\nenv KEYHELPER_API_KEY\n"
    assert stat.S_IMODE(route.stat().st_mode) == 0o600
    assert not list(route.parent.glob("*.entry"))  # the key itself is never cached
    assert all(map(on_the_hit_path, lean_run(hook, ["--backend", "env"], env)))
    # A new value is read at once: nothing of the key is remembered.
    assert keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": "sk-ant-New_42"}).stdout == (
        "sk-ant-New_42\n")


def test_route_falls_through_to_the_cached_backend(write_config, tmp_path: Path,
                                                   hook: dict[str, str]) -> None:
    source = counting_command(tmp_path)
    write_config('chain = ["env", "vault"]\n' + source.toml("vault"))
    assert keyhelper().stdout == source.key + "\n"  # env unset: the command, cached
    assert route_file().read_text() == "keyhelper-route 2\nenv KEYHELPER_API_KEY\n"
    assert all(map(on_the_hit_path, lean_run(hook, [], {})))  # env unset, then the cache entry
    assert source.calls == 1
    assert keyhelper(env={"KEYHELPER_API_KEY": KEY}).stdout == KEY + "\n"  # env wins again
    assert all(map(on_the_hit_path, lean_run(hook, [], {"KEYHELPER_API_KEY": KEY})))


@pytest.mark.parametrize("value, reason", [
    ("sk-ant with space", "the key contains whitespace, which Claude Code cannot send"),
    ("   ", "the key is empty"),
])
def test_a_value_the_chain_would_refuse_goes_to_the_full_path(value: str, reason: str) -> None:
    assert keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": KEY}).returncode == 0
    run = keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": value})
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"keyhelper: no key from env\n  env failed: refused: {reason}\n"


def test_file_key_is_read_on_the_hit_path(write_config, tmp_path: Path,
                                          hook: dict[str, str]) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\nsecond line ignored\n")
    key_file.chmod(0o600)
    write_config(f'chain = ["kf"]\n[backends.kf]\ntype = "file"\npath = "{key_file}"\n')
    assert keyhelper().stdout == KEY + "\n"
    assert route_file().read_text() == f"keyhelper-route 2\nfile {key_file}\n"
    assert all(map(on_the_hit_path, lean_run(hook, [], {})))
    key_file.chmod(0o644)  # now refused: the full path says why, as always
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert f"kf failed: {key_file} is readable by group or others (mode 644)" in run.stderr
    key_file.unlink()  # missing: skipped, on either path
    run = keyhelper()
    assert run.stderr == f"keyhelper: no key from kf\n  kf skipped: {key_file} does not exist\n"


def test_no_route_when_auditing(write_config, tmp_path: Path) -> None:
    write_config(f'chain = ["env"]\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    assert keyhelper(env={"KEYHELPER_API_KEY": KEY}).stdout == KEY + "\n"
    assert not route_file().exists()  # every issuance goes through the audited full path


def test_a_corrupt_route_is_a_miss_for_the_full_path() -> None:
    assert keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": KEY}).returncode == 0
    route_file("env").write_text("keyhelper-route 2\nshell rm -rf /\n")
    run = keyhelper("--backend", "env", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    assert route_file("env").read_text() == "keyhelper-route 2\nenv KEYHELPER_API_KEY\n"


def test_route_parser_accepts_only_known_steps() -> None:
    assert kentry.parse_route(b"keyhelper-route 2\nenv A\nfile /x y\n") == [("env", "A"),
                                                                           ("file", "/x y")]
    for bad in (b"", b"keyhelper-route 9\n", b"keyhelper-route 2\nenv\n",
                b"keyhelper-route 2\ncommand ls\n", b"keyhelper-route 2\nenv A", b"\xff"):
        assert kentry.parse_route(bad) is None
