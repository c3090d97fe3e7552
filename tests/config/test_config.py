"""Configuration: where it is found, profiles, and every kind of error.

A configuration error exits 2 with nothing on stdout and one line on stderr naming the
file, the key and what was expected; never a traceback. Run through the real console
script (stdin an open pipe).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from countingcmd import counting_command
from helpers import keyhelper

from keyhelper.base import records as kentry
from keyhelper.base.files import Selection
from keyhelper.registry import GROUP

KEY = "sk-ant-Config_0123456789"
# Every backend type installed (the built-ins, plus any plugin in this environment).
TYPES = ", ".join(sorted({ep.name for ep in metadata.entry_points(group=GROUP)}))
TOP_KEYS = ("audit, backends, cache, chain, deadline, headers, mcp, plugins, profiles, "
            "refresh_ahead, rotation_detection, stale_grace, ttl")
PROFILE_KEYS = ("cache, chain, deadline, headers, refresh_ahead, rotation_detection, "
                "stale_grace, ttl")


def assert_config_error(run_args: tuple[str, ...], expected: str,
                        env: dict[str, str] | None = None) -> None:
    run = keyhelper(*run_args, env={"KEYHELPER_API_KEY": KEY, **(env or {})})
    assert run.returncode == 2, run
    assert run.stdout == ""
    assert run.stderr == f"keyhelper: config error: {expected}\n"
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(("text", "args", "expected"), [
    ("chain = [\n", (), "{path}: not valid TOML (Invalid value (at end of document))"),
    ('ttl = 300\nttl = 60\n', (), "{path}: not valid TOML (Cannot overwrite a value "
                                  "(at line 2, column 9))"),
    ("bogus = 1\n", (), f"{{path}}: bogus: unknown key (expected one of: {TOP_KEYS})"),
    ('ttl = "300"\n', (), "{path}: ttl: expected an integer or a number, got a string"),
    ("ttl = true\n", (), "{path}: ttl: expected an integer or a number, got a boolean"),
    ("ttl = 0\n", (), "{path}: ttl: expected a positive number of seconds"),
    ("deadline = -1\n", (), "{path}: deadline: expected a positive number of seconds"),
    ("refresh_ahead = 1.5\n", (), "{path}: refresh_ahead: expected a fraction from 0 to below 1"),
    ('cache = "redis"\n', (), '{path}: cache: expected "files" or "keyring"'),
    ('chain = "env"\n', (), "{path}: chain: expected a list of strings, got a string"),
    ("chain = [1]\n", (), "{path}: chain: expected a list of strings, got a list"),
    ("chain = []\n", (), "{path}: chain: the chain is empty"),
    ('chain = ["nope"]\n', (),
     f"{{path}}: chain: unknown backend 'nope' (configured: none; types: {TYPES})"),
    ("", ("--backend", "nope"),
     f"--backend: unknown backend 'nope' (configured: none; types: {TYPES})"),
    ('[backends.mine]\ntype = "nope"\n', ("--backend", "mine"),
     f"{{path}}: unknown backend 'mine' (configured: mine; types: {TYPES})"),
    ("backends = 3\n", (), "{path}: backends: expected a table, got an integer"),
    ("[backends]\nenv = 3\n", (), "{path}: backends.env: expected a table"),
    ("[backends.env]\ntype = 3\n", (), "{path}: backends.env.type: expected a string"),
    ('[backends.env]\nvariable = "X"\n', ("-b", "env"),
     "{path}: backends.env.variable: unknown option (known: var)"),
    ('[backends.env]\nvar = 3\n', ("-b", "env"),
     "{path}: backends.env.var: expected a string, got an integer"),
    ('[backends.c]\ntype = "command"\n', ("-b", "c"),
     "{path}: backends.c.command: missing; expected a list of strings"),
    ('[backends.c]\ntype = "command"\ncommand = ["x"]\ntimeout = "5"\n', ("-b", "c"),
     "{path}: backends.c.timeout: expected a number, got a string"),
    ('[backends.c]\ntype = "command"\ncmd = ["x"]\n', ("-b", "c"),
     "{path}: backends.c.cmd: unknown option (known: command, env, timeout)"),
    ("", ("--profile", "work"), "{path}: profiles.work: unknown profile (configured: none)"),
    ("[profiles.home]\n", ("--profile", "work"),
     "{path}: profiles.work: unknown profile (configured: home)"),
    ("[profiles]\nwork = 3\n", (), "{path}: profiles.work: expected a table"),
    ("[profiles.work]\nchain = []\n", ("--profile", "work"),
     "{path}: profiles.work.chain: the chain is empty"),
    ("[profiles.work]\nbackends = {}\n", (),
     f"{{path}}: profiles.work.backends: unknown key (expected one of: {PROFILE_KEYS})"),
    ("[profiles.work]\nttl = -5\n", (), "{path}: profiles.work.ttl: expected a positive number "
                                        "of seconds"),
    ('[profiles.work]\nchain = ["ghost"]\n', ("-p", "work"),
     f"{{path}}: profiles.work.chain: unknown backend 'ghost' (configured: none; "
     f"types: {TYPES})"),
    # inf and nan are TOML numbers, but no setting means anything with one
    ("ttl = nan\n", (), "{path}: ttl: expected a finite number, got nan"),
    ("stale_grace = inf\n", (), "{path}: stale_grace: expected a finite number, got inf"),
    ("deadline = +inf\n", (), "{path}: deadline: expected a finite number, got inf"),
    ("refresh_ahead = -nan\n", (), "{path}: refresh_ahead: expected a finite number, got nan"),
    ("[profiles.work]\nttl = -inf\n", (),
     "{path}: profiles.work.ttl: expected a finite number, got -inf"),
    ('[backends.c]\ntype = "command"\ncommand = ["x"]\ntimeout = inf\n', ("-b", "c"),
     "{path}: backends.c.timeout: expected a finite number, got inf"),
    ('[backends.j]\ntype = "jwt"\nkey_file = "/k"\nclaims = {a = [1.0, nan]}\n', ("-b", "j"),
     "{path}: backends.j.claims.a[1]: expected a finite number, got nan"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", (),
     "{path}: not usable: lists or tables nested too deeply"),
    ("[a]\n" + "b = {" * 3000 + "}" * 3000 + "\n", (),
     "{path}: not usable: lists or tables nested too deeply"),
])
def test_config_errors_exit_2_naming_file_key_and_expectation(
        write_config, text: str, args: tuple[str, ...], expected: str) -> None:
    path = write_config(text)
    assert_config_error(args, expected.format(path=path))


def test_an_error_in_the_file_stops_even_an_explicit_backend(write_config) -> None:
    path = write_config("bogus = 1\n")
    assert_config_error(("--backend", "env"),
                        f"{path}: bogus: unknown key (expected one of: {TOP_KEYS})")


def test_file_that_is_not_utf8(write_config) -> None:
    path = write_config("")
    path.write_bytes(b'ttl = "\xff"\n')
    assert_config_error((), f"{path}: not UTF-8 text")


def test_explicit_config_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert_config_error(("--config", str(missing)), f"{missing}: no such file")


def test_keyhelper_config_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert_config_error((), f"{missing}: no such file", env={"KEYHELPER_CONFIG": str(missing)})


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    assert_config_error(("-c", str(tmp_path)), f"{tmp_path}: not a regular file")


def test_no_file_at_the_default_location_is_fine() -> None:
    run = keyhelper(env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


# --- which file ---------------------------------------------------------------------------

def env_backend_config(var: str) -> str:
    return f'chain = ["k"]\n[backends.k]\ntype = "env"\nvar = "{var}"\n'


def test_config_precedence(write_config, tmp_path: Path) -> None:
    write_config(env_backend_config("FROM_DEFAULT"))
    via_env = write_config(env_backend_config("FROM_ENV"), tmp_path / "env.toml")
    via_flag = write_config(env_backend_config("FROM_FLAG"), tmp_path / "flag.toml")
    values = {"FROM_DEFAULT": "key-default", "FROM_ENV": "key-env", "FROM_FLAG": "key-flag"}
    assert keyhelper(env=values).stdout == "key-default\n"
    assert keyhelper(env={**values, "KEYHELPER_CONFIG": str(via_env)}).stdout == "key-env\n"
    assert keyhelper("--config", str(via_flag),
                     env={**values, "KEYHELPER_CONFIG": str(via_env)}).stdout == "key-flag\n"


def test_xdg_config_home_unset_falls_back_to_home(isolated_env: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    target = isolated_env / ".config" / "keyhelper" / "config.toml"
    target.parent.mkdir(parents=True)
    target.write_text(env_backend_config("HOME_VAR"))
    assert keyhelper(env={"HOME_VAR": "key-home"}).stdout == "key-home\n"


@pytest.mark.parametrize("value", ["project-config", "./project-config", "."])
def test_a_relative_xdg_config_home_is_ignored(isolated_env: Path, tmp_path: Path,
                                               value: str) -> None:
    """The XDG spec: a relative path is invalid and ignored. It would mean the caller's
    working directory: the checkout of a project that sets it in its settings' env."""
    project = tmp_path / "project"
    for base in (project / "project-config", project):
        (base / "keyhelper").mkdir(parents=True, exist_ok=True)
        (base / "keyhelper" / "config.toml").write_text(env_backend_config("PROJECT_VAR"))
    home_config = isolated_env / ".config" / "keyhelper" / "config.toml"
    home_config.parent.mkdir(parents=True)
    home_config.write_text(env_backend_config("HOME_VAR"))
    run = keyhelper(env={"XDG_CONFIG_HOME": value, "HOME_VAR": "key-home",
                         "PROJECT_VAR": "key-project"}, cwd=str(project))
    assert (run.returncode, run.stdout, run.stderr) == (0, "key-home\n", "")


def test_relative_xdg_cache_and_runtime_dirs_are_ignored(write_config, isolated_env: Path,
                                                         tmp_path: Path) -> None:
    source = counting_command(tmp_path)
    write_config('chain = ["vault"]\n' + source.toml("vault"))
    project = tmp_path / "project"
    project.mkdir()
    env = {"KEYHELPER_CACHE_DIR": "", "XDG_RUNTIME_DIR": "run", "XDG_CACHE_HOME": "cache"}
    for _ in range(2):
        run = keyhelper(env=env, cwd=str(project))
        assert (run.returncode, run.stdout, run.stderr) == (0, source.key + "\n", "")
    assert source.calls == 1  # cached, and found again
    assert list(project.iterdir()) == []  # nothing in the caller's working directory
    assert [p.suffix for p in (isolated_env / ".cache" / "keyhelper").glob("*.entry")] == [
        ".entry"]


def test_tilde_in_config_path_expands(isolated_env: Path) -> None:
    (isolated_env / "kh.toml").write_text(env_backend_config("TILDE_VAR"))
    assert keyhelper("--config", "~/kh.toml", env={"TILDE_VAR": "key-t"}).stdout == "key-t\n"


# --- profiles -----------------------------------------------------------------------------

def stored_ttl(cache: Path, backends: tuple[str, ...] = (), profile: str | None = None) -> float:
    key = kentry.entry_key(Selection(backends, profile), os.environ)
    entry = kentry.parse_entry((cache / f"{key}.entry").read_bytes())
    assert entry is not None
    return entry.expires - entry.stored


def test_profile_chain_and_ttl(write_config, tmp_path: Path, cache_dir: Path) -> None:
    source = counting_command(tmp_path)
    write_config('chain = ["env"]\nttl = 60\n\n'
                 '[profiles.work]\nchain = ["vault"]\nttl = 120\n\n'
                 '[profiles.short]\nchain = ["vault"]\n\n'
                 '[profiles.ttl_only]\nttl = 30\n\n' + source.toml("vault"))
    assert keyhelper(env={"KEYHELPER_API_KEY": KEY}).stdout == KEY + "\n"
    run = keyhelper("--profile", "work", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, source.key + "\n", "")
    assert stored_ttl(cache_dir, profile="work") == 120
    assert keyhelper("-p", "short").stdout == source.key + "\n"
    assert stored_ttl(cache_dir, profile="short") == 60  # the top-level ttl
    assert source.calls == 2
    # A profile without a chain uses the top-level chain.
    assert keyhelper("-p", "ttl_only", env={"KEYHELPER_API_KEY": KEY}).stdout == KEY + "\n"
    # --backend overrides the profile's chain; the profile's ttl still applies.
    assert keyhelper("-p", "ttl_only", "-b", "vault").stdout == source.key + "\n"
    assert stored_ttl(cache_dir, ("vault",), "ttl_only") == 30


def test_profile_without_chain_and_no_top_chain_uses_the_default_chain(write_config) -> None:
    write_config("[profiles.p]\nttl = 10\n")
    run = keyhelper("-p", "p", env={"KEYHELPER_API_KEY": KEY})
    assert (run.returncode, run.stdout, run.stderr) == (0, KEY + "\n", "")


def test_editing_the_config_invalidates_the_cache(write_config, tmp_path: Path) -> None:
    first = counting_command(tmp_path, key="sk-first-key-0001", name="first")
    second = counting_command(tmp_path, key="sk-second-key-0002", name="second")
    path = write_config(first.toml("vault"))
    assert keyhelper("-b", "vault").stdout == "sk-first-key-0001\n"
    assert keyhelper("-b", "vault").stdout == "sk-first-key-0001\n"
    path.write_text(second.toml("vault"))
    assert keyhelper("-b", "vault").stdout == "sk-second-key-0002\n"
    assert (first.calls, second.calls) == (1, 1)
