"""The command backend's child gets a minimal environment, not keyhelper's (issue 10): no
VAULT_TOKEN, secret id or KEYHELPER_API_KEY, only what programs need to run plus the variables
the backend's ``env`` option names, which also key its cache entry. Runs the real console
script; the command records the environment it was started with (/proc/self/environ, which
the interpreter's own locale coercion does not touch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import SCRIPT, Run, keyhelper

KEY = "sk-ant-CommandEnv_0123456789"
RECORDER = """\
import json, sys
raw = open("/proc/self/environ", "rb").read().split(b"\\0")
env = dict(item.decode().split("=", 1) for item in raw if item)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(env) + "\\n")
print(sys.argv[2])
"""
SECRETS = {"VAULT_TOKEN": "hvs.not-for-children", "VAULT_SECRET_ID": "secret-id-x",
           "KEYHELPER_API_KEY": "sk-ant-Env_0123456789abcdef",
           "ANTHROPIC_API_KEY": "sk-ant-Other_0123456789", "SSH_AUTH_SOCK": "/tmp/agent.sock",
           "AWS_SECRET_ACCESS_KEY": "aws-secret", "PYTHONPATH": "/somewhere"}


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    return tmp_path / "environments.jsonl"


def config(tmp_path: Path, recorded: Path, extra: str = "") -> str:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    argv = [sys.executable, str(script), str(recorded), KEY]
    return f'[backends.cmd]\ntype = "command"\ncommand = {json.dumps(argv)}\n{extra}'


def environments(recorded: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in recorded.read_text().splitlines()]


def run_exactly(env: dict[str, str], *args: str) -> Run:
    """keyhelper with exactly ``env`` (helpers.keyhelper adds the test's own environment)."""
    proc = subprocess.run([SCRIPT, *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_the_command_gets_a_minimal_environment(tmp_path: Path, recorded: Path,
                                                isolated_env: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(config(tmp_path, recorded))
    passed = {"PATH": "/usr/bin:/bin", "HOME": str(isolated_env), "USER": "root",
              "LOGNAME": "root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "LC_TIME": "C",
              "TZ": "UTC", "TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path),
              "HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost"}
    env = {**passed, **SECRETS, "KEYHELPER_CONFIG": str(config_file),
           "KEYHELPER_CACHE_DIR": str(tmp_path / "cache"), "SHELL": "/bin/bash",
           "TERM": "xterm", "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "300000"}
    run = run_exactly(env, "-b", "cmd")
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    assert environments(recorded) == [passed]


def test_named_variables_are_passed_and_key_the_cache(write_config: Any, tmp_path: Path,
                                                      recorded: Path) -> None:
    write_config(config(tmp_path, recorded,
                        'env = ["AWS_PROFILE", "OP_SERVICE_ACCOUNT_TOKEN"]\n'))
    token = {"OP_SERVICE_ACCOUNT_TOKEN": "ops_0123456789"}
    for profile in ("dev", "dev", "prod"):
        run = keyhelper("-b", "cmd", env={**SECRETS, **token, "AWS_PROFILE": profile})
        assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")
    # dev fetched, dev again from the cache, prod fetched anew: the cache is keyed on them
    seen = environments(recorded)
    assert [env["AWS_PROFILE"] for env in seen] == ["dev", "prod"]
    for env in seen:
        assert env["OP_SERVICE_ACCOUNT_TOKEN"] == "ops_0123456789"
        assert not set(env) & set(SECRETS)
        assert env["PATH"] == os.environ["PATH"]
        assert env["HOME"] == os.environ["HOME"]


def test_a_named_variable_that_is_not_set_is_left_out(write_config: Any, tmp_path: Path,
                                                      recorded: Path) -> None:
    write_config(config(tmp_path, recorded, 'env = ["AWS_PROFILE"]\n'))
    run = keyhelper("-b", "cmd", env={"PYTHONPATH": "/x"})
    assert (run.returncode, run.stdout) == (0, KEY + "\n")
    assert "AWS_PROFILE" not in environments(recorded)[0]


@pytest.mark.parametrize(("value", "message"), [
    ('"AWS_PROFILE"', "expected a list of strings, got a string"),
    ('["A=B"]', "not an environment variable name: 'A=B'"),
    ('["A,B"]', "not an environment variable name: 'A,B'"),
    ('["A B"]', "not an environment variable name: 'A B'"),
    ('[""]', "not an environment variable name: ''"),
])
def test_env_option_is_validated(write_config: Any, value: str, message: str) -> None:
    path = write_config(f'[backends.cmd]\ntype = "command"\ncommand = ["true"]\nenv = {value}\n')
    run = keyhelper("-b", "cmd")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"keyhelper: config error: {path}: backends.cmd.env: {message}\n"
