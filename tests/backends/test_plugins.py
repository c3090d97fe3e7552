"""Plugins: the contract kit run on the built-in backends, discovery with distribution and
version, the allowlist, and broken plugins that must not break the chain.

Third-party plugins are real distributions: a dist-info directory (METADATA and
entry_points.txt) and a module, put on PYTHONPATH for the real console script, exactly as
pip would lay them out in site-packages.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers import keyhelper
from plugin_dists import PLUGINS, make_distribution

from keyhelper import registry
from keyhelper.registry import Registry, allowlist
from keyhelper.testing import (
    BackendContract,
    DeadlineContract,
    FailureContract,
    Setup,
    SkipContract,
)

VERSION = metadata.version("keyhelper")
GOOD_KEY = "sk-ant-from-goodplug-0123456789"

# --- the kit on the built-ins ---------------------------------------------------------------


class TestEnvBackendContract(BackendContract, SkipContract):
    backend_type = "env"
    distribution = "keyhelper"

    def configured(self, key: str, tmp_path: Path) -> Setup:
        return Setup({"var": "MY_TEAM_KEY"}, {"MY_TEAM_KEY": key})

    def unconfigured(self, tmp_path: Path) -> Setup:
        return Setup({"var": "MY_TEAM_KEY"})


class TestFileBackendContract(BackendContract, SkipContract, FailureContract):
    backend_type = "file"
    distribution = "keyhelper"

    def configured(self, key: str, tmp_path: Path) -> Setup:
        path = tmp_path / "key.txt"
        path.write_text(key + "\n")
        path.chmod(0o600)
        return Setup({"path": str(path)})

    def unconfigured(self, tmp_path: Path) -> Setup:
        return Setup({"path": str(tmp_path / "absent.txt")})

    def failing(self, key: str, tmp_path: Path) -> Setup:
        path = tmp_path / "open-to-all.txt"
        path.write_text(key + "\n")
        path.chmod(0o644)  # the key is there, but others could read it: refused
        return Setup({"path": str(path)})


class TestCommandBackendContract(BackendContract, FailureContract, DeadlineContract):
    backend_type = "command"
    distribution = "keyhelper"

    def configured(self, key: str, tmp_path: Path) -> Setup:
        path = tmp_path / "key.txt"
        path.write_text(key + "\n")
        return Setup({"command": ["cat", str(path)]})

    def failing(self, key: str, tmp_path: Path) -> Setup:
        # Prints the key, then exits non-zero: the key must not reach the error text.
        script = f"import sys; print({key!r}); sys.exit(3)"
        return Setup({"command": [sys.executable, "-c", script]})

    def hanging(self, tmp_path: Path) -> Setup:
        return Setup({"command": ["sleep", "60"], "timeout": 30.0})


# --- plugin distributions on PYTHONPATH -----------------------------------------------------

@pytest.fixture(scope="session")
def plugin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    for name, (version, eps, source) in PLUGINS.items():
        make_distribution(root, name, version, eps, source)
    return root


@pytest.fixture
def plugin_env(plugin_root: Path, tmp_path: Path) -> dict[str, str]:
    """The environment that puts the plugins on the path and records their imports."""
    marks = tmp_path / "imported"
    marks.mkdir()
    return {"PYTHONPATH": str(plugin_root), "PLUGIN_MARKS": str(marks)}


def imported(env: dict[str, str]) -> list[str]:
    return sorted(os.listdir(env["PLUGIN_MARKS"]))


def backends_lines(env: dict[str, str]) -> dict[str, str]:
    run = keyhelper("backends", env=env)
    assert (run.returncode, run.stderr) == (0, ""), run
    return {line.split()[0]: line for line in run.stdout.splitlines()}


# --- keyhelper backends ---------------------------------------------------------------------

def test_backends_shows_distribution_and_version_of_each(plugin_env: dict[str, str]) -> None:
    lines = backends_lines(plugin_env)
    assert lines["env"] == f"{'env':10} {'keyhelper ' + VERSION:24} usable  an environment variable"
    assert lines["good"] == f"{'good':10} {'goodplug 2.5':24} usable  a well-behaved plugin"
    assert lines["boom"] == f"{'boom':10} {'boomplug 1.0':24} usable  a plugin whose fetch raises"
    assert lines["broken"] == (
        f"{'broken':10} {'brokenplug 0.1':24} unusable: plugin brokenplug:BrokenBackend failed "
        "to load: ImportError: brokenplug needs libfoo, which is not installed")
    assert lines["exiting"] == (f"{'exiting':10} {'exitplug 0.2':24} unusable: plugin "
                                "exitplug:ExitBackend failed to load: SystemExit: 3")


def test_a_plugin_cannot_take_a_built_in_name(plugin_env: dict[str, str]) -> None:
    assert backends_lines(plugin_env)["env"].split()[1:3] == ["keyhelper", VERSION]
    run = keyhelper("-b", "env", env={**plugin_env, "KEYHELPER_API_KEY": GOOD_KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, GOOD_KEY + "\n", "")
    assert "shadowplug" not in imported(plugin_env)


def test_allowlist_in_config_lists_others_but_never_imports_them(
        plugin_env: dict[str, str], write_config) -> None:
    write_config('[plugins]\nallow = ["goodplug"]\n')
    lines = backends_lines(plugin_env)
    assert lines["evil"] == (f"{'evil':10} {'evilplug 6.6':24} unusable: plugin distribution "
                             "'evilplug' is not in the plugin allowlist; not loaded")
    assert lines["good"].endswith("usable  a well-behaved plugin")
    assert lines["env"].endswith("usable  an environment variable")  # built-ins always load
    assert imported(plugin_env) == ["goodplug"]

    run = keyhelper("-b", "evil", "-b", "good", env={**plugin_env, "GOOD_KEY": GOOD_KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, GOOD_KEY + "\n", "")
    assert imported(plugin_env) == ["goodplug"]


def test_allowlist_from_the_environment(plugin_env: dict[str, str]) -> None:
    env = {**plugin_env, "KEYHELPER_PLUGINS_ALLOW": " GoodPlug , other_dist "}
    lines = backends_lines(env)
    assert "not in the plugin allowlist" in lines["boom"]
    assert "not in the plugin allowlist" not in lines["good"]
    assert imported(env) == ["goodplug"]
    run = keyhelper("-b", "evil", env=env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from evil\n  evil skipped: plugin distribution "
                          "'evilplug' is not in the plugin allowlist; not loaded\n")


def test_environment_narrows_the_config_allowlist_never_widens_it(
        plugin_env: dict[str, str], write_config) -> None:
    write_config('[plugins]\nallow = ["goodplug", "boomplug"]\n')
    env = {**plugin_env, "KEYHELPER_PLUGINS_ALLOW": "boomplug,evilplug"}
    lines = backends_lines(env)
    assert "usable  a plugin whose fetch raises" in lines["boom"]
    assert "not in the plugin allowlist" in lines["evil"]
    assert "not in the plugin allowlist" in lines["good"]
    assert imported(env) == ["boomplug"]


def test_allowlist_rules() -> None:
    assert allowlist(None, {}) is None
    assert allowlist({"allow": []}, {}) == []
    assert allowlist({"allow": ["a", "b_c"]}, {}) == ["a", "b_c"]
    assert allowlist(None, {registry.ALLOW_ENV: "a, ,b"}) == ["a", "b"]
    assert allowlist({"allow": ["a", "b_c"]}, {registry.ALLOW_ENV: "B.C,z"}) == ["b_c"]


def test_a_broken_config_loads_no_third_party_plugin(plugin_env: dict[str, str],
                                                     write_config) -> None:
    path = write_config('[plugins]\nallow = "goodplug"\n')
    run = keyhelper("backends", env=plugin_env)
    assert run.returncode == 0
    first, *rest = run.stdout.splitlines()
    assert first == (f"config error: {path}: plugins.allow: expected a list of strings, got a "
                     "string; third-party plugins not loaded")
    assert all("not in the plugin allowlist" in line for line in rest
               if line.split()[1] != "keyhelper")
    assert imported(plugin_env) == []


def test_plugins_table_is_validated(write_config) -> None:
    path = write_config('[plugins]\nallowed = ["goodplug"]\n')
    run = keyhelper("-b", "env", env={"KEYHELPER_API_KEY": GOOD_KEY})
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (f"keyhelper: config error: {path}: plugins.allowed: unknown key "
                          "(expected one of: allow)\n")


# --- broken plugins do not break the chain (the real console script) -----------------------

def test_plugin_failing_at_import_is_skipped_and_the_chain_goes_on(
        plugin_env: dict[str, str]) -> None:
    env = {**plugin_env, "GOOD_KEY": GOOD_KEY}
    run = keyhelper("-b", "broken", "-b", "exiting", "-b", "good", env=env)
    assert (run.returncode, run.stdout, run.stderr) == (0, GOOD_KEY + "\n", "")
    assert imported(env) == ["brokenplug", "exitplug", "goodplug"]


def test_plugin_whose_fetch_raises_is_reported_and_the_chain_goes_on(
        plugin_env: dict[str, str]) -> None:
    env = {**plugin_env, "GOOD_KEY": GOOD_KEY}
    run = keyhelper("-b", "boom", "-b", "good", env=env)
    assert (run.returncode, run.stdout, run.stderr) == (0, GOOD_KEY + "\n", "")

    run = keyhelper("-b", "boom", "-b", "broken", env=plugin_env)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == (
        "keyhelper: no key from boom, broken\n"
        "  boom failed: RuntimeError: boom: the store's client crashed\n"
        "  broken skipped: plugin brokenplug:BrokenBackend failed to load: ImportError: "
        "brokenplug needs libfoo, which is not installed\n")


def test_plugin_calling_sys_exit_in_fetch_does_not_end_the_run(
        plugin_env: dict[str, str]) -> None:
    run = keyhelper("-b", "quitter", "-b", "good", env={**plugin_env, "GOOD_KEY": GOOD_KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, GOOD_KEY + "\n", "")
    run = keyhelper("-b", "quitter", env=plugin_env)
    assert (run.returncode, run.stdout, run.stderr) == (
        1, "", "keyhelper: no key from quitter\n  quitter failed: called sys.exit(7)\n")


def test_doctor_runs_past_broken_plugins(plugin_env: dict[str, str]) -> None:
    run = keyhelper("doctor", "-b", "broken", "-b", "boom", "-b", "good",
                    env={**plugin_env, "GOOD_KEY": GOOD_KEY})
    assert run.returncode == 0, run.stderr
    lines = [line.rsplit(" [", 1)[0] for line in run.stdout.splitlines()]
    assert lines[3:6] == [
        "  broken: skipped: plugin brokenplug:BrokenBackend failed to load: ImportError: "
        "brokenplug needs libfoo, which is not installed",
        "  boom: failed: RuntimeError: boom: the store's client crashed",
        "  good: ok: sha256:" + hashlib.sha256(GOOD_KEY.encode()).hexdigest()[:12] + " (used)"]


# --- the registry in-process ----------------------------------------------------------------

def test_built_ins_are_registered_as_entry_points() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group=registry.GROUP)
           if ep.dist is not None and ep.dist.name == "keyhelper"}
    assert {"env", "file", "command", "vault", "jwt", "keyring"} <= set(eps)
    assert eps["env"].value == "keyhelper_plugins.env:EnvBackend"


def test_registry_loads_nothing_until_asked(plugin_root: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("PLUGIN_MARKS", str(marks))
    eps = [ep for dist in metadata.distributions(path=[str(plugin_root)])
           for ep in dist.entry_points if ep.group == registry.GROUP]
    monkeypatch.syspath_prepend(str(plugin_root))
    reg = Registry(eps, allow=["goodplug"])
    assert reg.names() == ["boom", "broken", "env", "evil", "exiting", "good", "leaky",
                           "quitter"]
    assert [reg.info(n).allowed for n in ("good", "evil")] == [True, False]
    assert os.listdir(marks) == []
    assert reg.load("good").summary == "a well-behaved plugin"
    assert os.listdir(marks) == ["goodplug"]

