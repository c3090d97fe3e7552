"""The env, file and command backends: unit tests in process, then the README's examples
through the real console script."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import keyhelper
from keyhelper_plugins.command import CommandBackend
from keyhelper_plugins.env import EnvBackend
from keyhelper_plugins.file import FileBackend

from keyhelper.backend import Backend, Context, Option, Token, option_fits
from keyhelper.errors import BackendError, ConfigError, DeadlineExceeded, Skip

KEY = "sk-ant-Core_0123456789abcdef"


def make(cls: type[Backend], options: Mapping[str, Any] | None = None,
         env: Mapping[str, str] | None = None, deadline: float = 10.0) -> Backend:
    checked = cls.validate(options or {}, source="test.toml", key="backends.b")
    context = Context(None, dict(env or {}), time.monotonic() + deadline, "")
    return cls("b", checked, context)


# --- env --------------------------------------------------------------------------------------

def test_env_default_variable() -> None:
    backend = make(EnvBackend, env={"KEYHELPER_API_KEY": KEY})
    token = backend.fetch()
    assert (token.value, token.expires_at, dict(token.metadata)) == (
        KEY, None, {"source": "$KEYHELPER_API_KEY"})
    assert backend.watched_env() == ("KEYHELPER_API_KEY",)
    assert EnvBackend.cacheable is False


def test_env_named_variable_trimmed() -> None:
    backend = make(EnvBackend, {"var": "MY_GATEWAY_KEY"}, {"MY_GATEWAY_KEY": f" {KEY}\n"})
    assert backend.fetch().value == KEY
    assert backend.watched_env() == ("MY_GATEWAY_KEY",)


@pytest.mark.parametrize("env", [{}, {"KEYHELPER_API_KEY": ""}])
def test_env_unset_or_empty_skips(env: dict[str, str]) -> None:
    with pytest.raises(Skip) as caught:
        make(EnvBackend, env=env).fetch()
    assert caught.value.message == "$KEYHELPER_API_KEY is not set"


def test_token_repr_never_shows_the_value() -> None:
    token = make(EnvBackend, env={"KEYHELPER_API_KEY": KEY}).fetch()
    assert KEY not in repr(token) and KEY not in str(token)
    assert token.fingerprint in repr(token)


# --- file -------------------------------------------------------------------------------------

def key_file(tmp_path: Path, content: bytes | str, mode: int = 0o600,
             name: str = "key") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("content", [f"{KEY}\n", KEY, f"{KEY}\r\n", f"  {KEY}  \nsecond\n"])
def test_file_first_line(tmp_path: Path, content: str) -> None:
    path = key_file(tmp_path, content)
    token = make(FileBackend, {"path": str(path)}).fetch()
    assert (token.value, dict(token.metadata)) == (KEY, {"source": str(path)})


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_file_private_modes_are_fine(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, KEY, mode)
    assert make(FileBackend, {"path": str(path)}).fetch().value == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, KEY, mode)
    with pytest.raises(BackendError) as caught:
        make(FileBackend, {"path": str(path)}).fetch()
    assert not isinstance(caught.value, Skip)
    assert caught.value.message == (f"{path} is readable by group or others (mode {mode:o}); "
                                    f"run: chmod 600 {path}")
    assert KEY not in caught.value.message


def test_file_tilde_expands(isolated_env: Path) -> None:
    key_file(isolated_env, KEY, name="anthropic.key")
    assert make(FileBackend, {"path": "~/anthropic.key"}).fetch().value == KEY


def test_file_missing_skips(tmp_path: Path) -> None:
    with pytest.raises(Skip) as caught:
        make(FileBackend, {"path": str(tmp_path / "nope")}).fetch()
    assert caught.value.message == f"{tmp_path / 'nope'} does not exist"


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "is empty"), (b"\n\n  \n", "is empty"), (b"\xff\xfe\n", "is not UTF-8 text")])
def test_file_unusable_content(tmp_path: Path, content: bytes, reason: str) -> None:
    path = key_file(tmp_path, content)
    with pytest.raises(BackendError) as caught:
        make(FileBackend, {"path": str(path)}).fetch()
    assert caught.value.message == f"{path} {reason}"


def test_file_that_is_a_directory_or_fifo_fails_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    for path in (fifo, directory):
        with pytest.raises(BackendError) as caught:
            make(FileBackend, {"path": str(path)}).fetch()
        assert caught.value.message == f"{path} is not a regular file"
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_file_path_is_required() -> None:
    with pytest.raises(ConfigError) as caught:
        make(FileBackend, {})
    assert caught.value.describe() == ("config error: test.toml: backends.b.path: missing; "
                                       "expected a string")


# --- command ----------------------------------------------------------------------------------

PATH_ENV = {"PATH": os.environ["PATH"]}


def run_command(argv: list[str], env: Mapping[str, str] | None = None,
                **options: Any) -> Token:
    return make(CommandBackend, {"command": argv, **options}, {**PATH_ENV, **(env or {})}
                ).fetch()


def test_command_first_line_of_stdout() -> None:
    token = run_command(["printf", f"  {KEY}  \\nsecond line\\n"])
    assert (token.value, dict(token.metadata)) == (KEY, {"source": "printf"})


def test_command_runs_without_a_shell() -> None:
    assert run_command(["echo", "$HOME;x"]).value == "$HOME;x"


def test_command_sees_the_variables_it_names() -> None:
    backend = make(CommandBackend, {"command": ["sh", "-c", "echo $GATEWAY_TOKEN"],
                                    "env": ["GATEWAY_TOKEN"]}, {**PATH_ENV, "GATEWAY_TOKEN": KEY})
    assert backend.fetch().value == KEY
    assert backend.watched_env() == ("GATEWAY_TOKEN",)


def test_command_stdin_is_closed() -> None:
    """`cat` would wait forever on an open stdin (Claude Code never closes ours)."""
    with pytest.raises(BackendError) as caught:
        run_command(["cat"], timeout=5)
    assert caught.value.message == "cat printed nothing"


@pytest.mark.parametrize(("argv", "message"), [
    (["sh", "-c", "echo first >&2; echo 'token expired, run: login' >&2; exit 3"],
     "sh exited 3: token expired, run: login"),
    (["false"], "false exited 1"),
    (["/nonexistent/op"], "command not found: /nonexistent/op"),
    (["true"], "true printed nothing"),
    (["printf", "\\377\\376"], "printf printed something that is not UTF-8"),
    ([], "option 'command' is an empty list"),
])
def test_command_failures(argv: list[str], message: str) -> None:
    with pytest.raises(BackendError) as caught:
        run_command(argv)
    assert not isinstance(caught.value, Skip)
    assert caught.value.message == message


def test_command_not_executable(tmp_path: Path) -> None:
    script = key_file(tmp_path, "#!/bin/sh\necho x\n", 0o644, "script")
    with pytest.raises(BackendError) as caught:
        run_command([str(script)])
    assert caught.value.message == f"command not executable: {script}"


def test_command_timeout_and_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        run_command(["sleep", "30"], timeout=0.3)
    assert caught.value.message == "sleep did not finish within 0.3 s"
    backend = make(CommandBackend, {"command": ["sleep", "30"], "timeout": 600}, PATH_ENV,
                   deadline=0.5)
    with pytest.raises(DeadlineExceeded):
        backend.fetch()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("options", "message"), [
    ({}, "backends.b.command: missing; expected a list of strings"),
    ({"command": "op read x"}, "backends.b.command: expected a list of strings, got a string"),
    ({"command": ["op", 1]}, "backends.b.command: expected a list of strings, got a list"),
    ({"command": ["op"], "timeout": "5"}, "backends.b.timeout: expected a number, got a string"),
    ({"command": ["op"], "shell": True}, "backends.b.shell: unknown option (known: command, "
                                         "env, timeout)"),
])
def test_command_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make(CommandBackend, options)
    assert caught.value.describe() == f"config error: test.toml: {message}"


def test_command_timeout_accepts_an_integer() -> None:
    backend = make(CommandBackend, {"command": ["true"], "timeout": 5})
    assert backend.config["timeout"] == 5.0 and isinstance(backend.config["timeout"], float)


# --- the README's examples, end to end --------------------------------------------------------
# `op`, `aws` and `gcloud` cannot run here (no accounts, no network): small stand-ins with
# the same names and output shape sit first on PATH. Everything else is real.

FAKE_TOOLS = {
    "op": f'[ "$1 $2" = "read op://Private/Anthropic/credential" ] && echo {KEY}-op',
    "aws": (f'[ "$*" = "secretsmanager get-secret-value --secret-id prod/anthropic '
            f'--query SecretString --output text" ] && echo {KEY}-aws'),
    "gcloud": f'[ "$*" = "auth print-access-token" ] && printf "{KEY}-gcloud\\n"',
}

README_CONFIG = """\
chain = ["env", "onepassword"]

[backends.onepassword]
type = "command"
command = ["op", "read", "op://Private/Anthropic/credential"]
timeout = 20

[backends.aws]
type = "command"
command = ["aws", "secretsmanager", "get-secret-value", "--secret-id", "prod/anthropic",
           "--query", "SecretString", "--output", "text"]

[backends.gcloud]
type = "command"
command = ["gcloud", "auth", "print-access-token"]

[backends.keyfile]
type = "file"
path = "~/.config/keyhelper/anthropic.key"

[profiles.gcp]
chain = ["gcloud"]
ttl = 1800
"""


@pytest.fixture
def fake_tools(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_TOOLS.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_readme_examples(write_config, fake_tools: dict[str, str], isolated_env: Path) -> None:
    write_config(README_CONFIG)
    key_file(isolated_env / ".config" / "keyhelper", f"{KEY}-file\n", name="anthropic.key")
    cases = [((), f"{KEY}-op"), (("-b", "aws"), f"{KEY}-aws"), (("-p", "gcp"), f"{KEY}-gcloud"),
             (("-b", "keyfile"), f"{KEY}-file"), (("-b", "gcloud", "-b", "aws"), f"{KEY}-gcloud")]
    for args, expected in cases:
        run = keyhelper(*args, env=fake_tools)
        assert (run.returncode, run.stdout, run.stderr) == (0, expected + "\n", ""), args
    run = keyhelper(env={**fake_tools, "KEYHELPER_API_KEY": KEY})
    assert run.stdout == KEY + "\n"


def test_python_of_this_venv_as_a_command(write_config, tmp_path: Path) -> None:
    """A backend command may be any program; the venv's own python is a handy one."""
    write_config('[backends.py]\ntype = "command"\n'
                 f'command = ["{sys.executable}", "-c", "print(\'{KEY}\')"]\n')
    run = keyhelper("-b", "py")
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


# --- the contract: errors and option declarations -------------------------------------------

def test_skip_is_beside_backend_error_not_under_it() -> None:
    from keyhelper.errors import KeyhelperError, Unavailable

    assert not issubclass(Skip, BackendError) and not issubclass(BackendError, Skip)
    assert issubclass(Unavailable, Skip) and not issubclass(Unavailable, BackendError)
    for cls in (Skip, Unavailable, BackendError):
        error = cls("why", backend="b")
        assert isinstance(error, KeyhelperError)
        assert (error.message, error.backend, error.describe(), str(error)) == (
            "why", "b", "b: why", "b: why")


@pytest.mark.parametrize("raised", [Skip("s"), BackendError("f")])
def test_handler_order_no_longer_matters(raised: Exception) -> None:
    def failure_first() -> str:
        try:
            raise raised
        except BackendError:
            return "failed"
        except Skip:
            return "skipped"

    def skip_first() -> str:
        try:
            raise raised
        except Skip:
            return "skipped"
        except BackendError:
            return "failed"

    expected = "skipped" if isinstance(raised, Skip) else "failed"
    assert failure_first() == skip_first() == expected


@pytest.mark.parametrize(("spec", "good", "bad", "message"), [
    (Option(str, choices=("kv", "logical")), "kv", "pki", 'expected "kv" or "logical"'),
    (Option(int, choices=(1, 2)), 2, 3, "expected 1 or 2"),
    (Option(float, min=0, max=1, max_exclusive=True), 0, 1, "expected a number from 0 to "
                                                            "below 1"),
    (Option(int, min=1024), 1024, 1023, "expected an integer at least 1024"),
    (Option(float, min=0, min_exclusive=True), 0.5, 0, "expected a number above 0"),
    (Option(int, max=9), 9, 10, "expected an integer at most 9"),
    (Option(str, choices=("a", "b"), message="no {value} here"), "a", "c", "no 'c' here"),
])
def test_option_choices_and_bounds(spec: Option, good: Any, bad: Any, message: str) -> None:
    class Declared(EnvBackend):
        options: ClassVar = {"x": spec}

    assert Declared.validate({"x": good}, source="f.toml", key="backends.b")["x"] == good
    with pytest.raises(ConfigError) as caught:
        Declared.validate({"x": bad}, source="f.toml", key="backends.b")
    assert str(caught.value) == f"config error: f.toml: backends.b.x: {message}"
    assert option_fits(good, spec) and not option_fits(bad, spec)


def test_a_bad_engine_is_a_config_error_even_when_an_earlier_backend_answers(
        write_config: Any) -> None:
    """Options are checked when the chain is built, whichever backend answers first."""
    path = write_config('chain = ["env", "v"]\n[backends.v]\ntype = "vault"\n'
                        'path = "secret/x"\nengine = "bogus"\n')
    result = keyhelper("--no-cache", env={"KEYHELPER_API_KEY": KEY})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"keyhelper: config error: {path}: backends.v.engine: "
                             "expected \"kv\" or \"logical\", got 'bogus'\n")


def test_env_vars_of_an_older_plugin_still_key_the_cache() -> None:
    with pytest.warns(DeprecationWarning, match="define watched_env"):
        class Older(EnvBackend):
            env_vars = ("OLD_PROFILE",)

    backend = Older("b", {"var": "X"}, Context(None, {}, time.monotonic() + 5, ""))
    assert backend.watched_env() == ("OLD_PROFILE",)
