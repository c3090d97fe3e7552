"""The administrator's policy file: at a fixed system path, root's, and the user's config
(which the environment can replace) may narrow it, never widen it.

The policy lives at /etc/keyhelper/policy.toml, which only root can write: these tests run
as root (as CI does) and are skipped otherwise. Where this machine allows it, each run of
the console script gets a private mount namespace with the test's own directory mounted on
/etc/keyhelper, so no other process here (other test runs) ever sees a test policy; where it
does not, the real file is written and removed after each test, and a policy already there
stops the test. Either way nothing is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import helpers
import pytest
from countingcmd import counting_command
from helpers import keyhelper
from plugin_dists import make_distribution

from keyhelper import policy
from keyhelper.base import files as kpaths
from keyhelper.config import BackendSpec
from keyhelper.configfile import parsed_record_value
from keyhelper.redact import fingerprint as fp
from keyhelper.registry import narrow

POLICY = Path(kpaths.POLICY_PATH)
KEY = "sk-ant-Policy_0123456789"
OTHER_UID = 54321

as_root = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0,
    reason=f"writing the policy ({POLICY}) needs root; CI runs the suite as root")


@dataclass
class PolicyFile:
    """The file keyhelper reads as the policy, as the test sees it."""

    file: Path
    directory: Path

    def write(self, text: str) -> Path:
        self.file.write_text(text)
        self.file.chmod(0o644)
        return self.file


def _namespaces_work(tmp: Path) -> bool:
    """Whether a private mount namespace with a bind mount can be made here."""
    if shutil.which("unshare") is None:
        return False
    source, target = tmp / "ns-source", tmp / "ns-target"
    source.mkdir()
    target.mkdir()
    run = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                          "mount", "--bind", str(source), str(target)],
                         capture_output=True, check=False)
    return run.returncode == 0


@pytest.fixture(scope="session")
def private_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bool]:
    """True when runs get a private /etc/keyhelper; then an empty /etc/keyhelper must exist
    as the mount point (made here if missing, and removed at the end)."""
    if os.name != "posix" or os.geteuid() != 0:
        yield False
        return
    if not _namespaces_work(tmp_path_factory.mktemp("ns")):
        yield False
        return
    created = not POLICY.parent.exists()
    if created:
        POLICY.parent.mkdir(mode=0o755)
    try:
        yield True
    finally:
        if created:
            POLICY.parent.rmdir()


@pytest.fixture
def policy_file(private_mounts: bool, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[PolicyFile]:
    if private_mounts:
        private = tmp_path / "etc-keyhelper"
        private.mkdir(mode=0o755)
        wrapper = tmp_path / "keyhelper-in-namespace"
        mount = f'mount --bind "$0" {shlex.quote(str(POLICY.parent))} && exec "$@"'
        wrapper.write_text("#!/bin/sh\nexec unshare --mount --propagation private -- "
                           f"/bin/sh -c {shlex.quote(mount)} {shlex.quote(str(private))} "
                           f'{shlex.quote(helpers.SCRIPT)} "$@"\n')
        wrapper.chmod(0o755)
        monkeypatch.setattr(helpers, "SCRIPT", str(wrapper))
        yield PolicyFile(private / POLICY.name, private)
        return
    if os.path.lexists(POLICY):
        pytest.fail(f"{POLICY} exists and was not made by this test: not replacing it")
    created = not POLICY.parent.exists()
    if created:
        POLICY.parent.mkdir(mode=0o755)
    saved = POLICY.parent.stat()
    try:
        yield PolicyFile(POLICY, POLICY.parent)
    finally:
        if POLICY.is_dir() and not POLICY.is_symlink():
            shutil.rmtree(POLICY)
        elif os.path.lexists(POLICY):
            POLICY.unlink()
        if created:
            shutil.rmtree(POLICY.parent)
        else:
            os.chmod(POLICY.parent, stat.S_IMODE(saved.st_mode))
            os.chown(POLICY.parent, saved.st_uid, saved.st_gid)


def config_error(where: str, why: str) -> tuple[int, str, str]:
    return 2, "", f"keyhelper: config error: {where}: {why}\n"


def result(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    run = keyhelper(*args, env={"KEYHELPER_API_KEY": KEY, **(env or {})})
    return run.returncode, run.stdout, run.stderr


def doctor_lines(*args: str, env: dict[str, str] | None = None) -> list[str]:
    run = keyhelper("doctor", *args, env={"KEYHELPER_API_KEY": KEY, **(env or {})})
    assert (run.returncode, run.stderr) == (0, ""), run
    return run.stdout.splitlines()


# --- where it is and whether it can be trusted -------------------------------------------------

@as_root
def test_without_a_policy_doctor_says_so(policy_file: PolicyFile) -> None:
    assert f"policy file: none ({POLICY} does not exist)" in doctor_lines("-b", "env")


def _owned_by_another_user(policy_file: PolicyFile) -> str:
    os.chown(policy_file.file, OTHER_UID, -1)
    return f"owned by uid {OTHER_UID}, not by root"


def _writable_by_group(policy_file: PolicyFile) -> str:
    policy_file.file.chmod(0o664)
    return f"writable by group or others (mode 664); run: chmod go-w {POLICY}"


def _directory_open_to_all(policy_file: PolicyFile) -> str:
    policy_file.directory.chmod(0o777)
    return (f"directory {POLICY.parent} is writable by group or others (mode 777); "
            f"run: chmod go-w {POLICY.parent}")


def _directory_of_another_user(policy_file: PolicyFile) -> str:
    os.chown(policy_file.directory, OTHER_UID, -1)
    return f"directory {POLICY.parent} is owned by uid {OTHER_UID}, not by root"


def _a_fifo(policy_file: PolicyFile) -> str:
    policy_file.file.unlink()
    os.mkfifo(policy_file.file, 0o644)  # opened without blocking: no hang
    return "not a regular file"


def _a_directory(policy_file: PolicyFile) -> str:
    policy_file.file.unlink()
    policy_file.file.mkdir()
    return "not a regular file"


@as_root
@pytest.mark.parametrize("spoil", [_owned_by_another_user, _writable_by_group,
                                   _directory_open_to_all, _directory_of_another_user, _a_fifo,
                                   _a_directory])
def test_a_policy_that_cannot_be_trusted_stops_every_run(policy_file: PolicyFile,
                                                         spoil: object) -> None:
    """Fail closed: ignoring it would hand its rules to whoever could write it."""
    policy_file.write("max_ttl = 60\n")
    # --no-cache: no route is recorded, so the next run takes the full path even where the
    # policy file itself is unchanged (a directory above it spoiled).
    assert result("-b", "env", "--no-cache") == (0, KEY + "\n", "")
    why = spoil(policy_file)  # type: ignore[operator]
    assert result("-b", "env") == config_error(str(POLICY), why)
    run = keyhelper("doctor", "-b", "env")
    assert (run.returncode, run.stdout, run.stderr) == config_error(str(POLICY), why)
    run = keyhelper("backends")  # lists the built-ins, loads no third-party plugin
    assert run.returncode == 0
    assert run.stdout.splitlines()[0] == (f"config error: {POLICY}: {why}; third-party "
                                          "plugins not loaded")


@as_root
@pytest.mark.parametrize(("text", "why"), [
    ("bogus = 1\n", "bogus: unknown key (expected one of: audit, backends, command, max_ttl, "
                    "min_ttl, plugins)"),
    ('[backends]\nallowed_types = "env"\n',
     "backends.allowed_types: expected a list of strings, got a string"),
    ('[backends]\nallowed = ["env"]\n', "backends.allowed: unknown key (expected one of: "
                                        "allowed_types)"),
    ('[command]\nallowed = ["op"]\n', "command.allowed: expected absolute paths, got 'op'"),
    ("[plugins]\nallow = [1]\n", "plugins.allow: expected a list of strings, got a list"),
    ("[audit]\nkeep = 0\n", "audit.keep: expected a number of files from 1 to 100"),
    ('[audit]\npath = "audit.jsonl"\n',
     "audit.path: expected an absolute path (or one starting with ~/)"),
    ("min_ttl = 0\n", "min_ttl: expected a positive number of seconds"),
    ("max_ttl = nan\n", "max_ttl: expected a finite number, got nan"),
    ("min_ttl = inf\n", "min_ttl: expected a finite number, got inf"),
    ('max_ttl = "60"\n', "max_ttl: expected an integer or a number, got a string"),
    ("min_ttl = 600\nmax_ttl = 60\n", "min_ttl: greater than max_ttl (60)"),
    ("max_ttl = \n", "not valid TOML (Invalid value (at line 1, column 11))"),
])
def test_policy_errors_exit_2_naming_the_policy_file(policy_file: PolicyFile, text: str,
                                                     why: str) -> None:
    policy_file.write(text)
    assert result("-b", "env") == config_error(str(POLICY), why)


# --- backend types and commands ----------------------------------------------------------------

@as_root
def test_a_backend_type_the_policy_does_not_allow_is_refused(policy_file: PolicyFile,
                                                             write_config,
                                                             tmp_path: Path) -> None:
    source = counting_command(tmp_path)
    config = write_config('chain = ["team", "env"]\n' + source.toml("team"))
    policy_file.write('[backends]\nallowed_types = ["env", "keyring"]\n')
    refusal = ("backend type 'command' is not allowed by "
               f"{POLICY} (allowed: env, keyring)")
    assert result() == config_error(str(config), f"backend 'team': {refusal}")
    assert result("-b", "command") == config_error("--backend", refusal)
    assert result("-b", "env") == (0, KEY + "\n", "")
    # A config the environment names instead cannot widen it either.
    other = write_config('chain = ["team"]\n' + source.toml("team"), tmp_path / "project.toml")
    assert result(env={"KEYHELPER_CONFIG": str(other)}) == config_error(
        str(other), f"backend 'team': {refusal}")
    run = keyhelper("doctor")
    assert (run.returncode, run.stderr) == (2, f"keyhelper: config error: {config}: "
                                               f"backend 'team': {refusal}\n")
    assert source.calls == 0


@as_root
def test_the_policy_is_parsed_on_every_run(policy_file: PolicyFile, write_config,
                                          cache_dir: Path) -> None:
    """The config's parse is kept in the cache's state directory (test_parsed_config.py);
    the policy's never is: that directory is the environment's to move."""
    config = write_config('chain = ["env"]\n')
    policy_file.write('[backends]\nallowed_types = ["env"]\n')
    for _ in range(2):
        assert result() == (0, KEY + "\n", "")
    records = sorted((cache_dir / "state").glob("parsed-*"))
    content = hashlib.sha256(config.read_bytes()).hexdigest()
    assert [parsed_record_value(r.read_bytes(), content) for r in records] == [
        {"chain": ["env"]}]
    policy_file.write('[backends]\nallowed_types = ["keyring"]\n')  # and it applies at once
    refusal = f"backend type 'env' is not allowed by {POLICY} (allowed: keyring)"
    assert result() == config_error(f"{config}: chain", refusal)


@as_root
def test_a_backend_reached_through_another_is_checked_too(policy_file: PolicyFile,
                                                          write_config,
                                                          tmp_path: Path) -> None:
    """jwt's signing key from another backend (key = "signing"): that link is built too."""
    key_file = tmp_path / "signing.pem"
    key_file.write_text("not read: refused before\n")
    key_file.chmod(0o600)
    config = write_config('[backends.jwt]\nkey = "signing"\nissuer = "keyhelper"\n'
                          '[backends.signing]\ntype = "file"\n'
                          f'path = "{key_file}"\n')
    policy_file.write('[backends]\nallowed_types = ["jwt"]\n')
    assert result("-b", "jwt") == config_error(
        str(config), f"backend 'signing': backend type 'file' is not allowed by {POLICY} "
                     "(allowed: jwt)")


@as_root
def test_a_plugin_type_not_allowed_is_not_even_imported(policy_file: PolicyFile,
                                                        plugin_env: dict[str, str]) -> None:
    policy_file.write('[backends]\nallowed_types = ["env"]\n')
    env = {**plugin_env, "GOOD_KEY": "sk-ant-from-goodplug-0123456789"}
    assert result("-b", "good", env=env) == config_error(
        "--backend", f"backend type 'good' is not allowed by {POLICY} (allowed: env)")
    assert os.listdir(plugin_env["PLUGIN_MARKS"]) == []


@as_root
def test_the_command_backend_runs_only_the_programs_the_policy_allows(
        policy_file: PolicyFile, write_config, tmp_path: Path) -> None:
    source = counting_command(tmp_path)  # argv[0] is this interpreter, an absolute path
    config = write_config(source.toml("vault")
                          + '[backends.relative]\ntype = "command"\n'
                            'command = ["sh", "-c", "echo sk-ant-not-run-0000"]\n'
                          + '[backends.absolute]\ntype = "command"\n'
                            'command = ["/bin/sh", "-c", "echo sk-ant-not-run-0000"]\n')
    policy_file.write(f"[command]\nallowed = {json.dumps([sys.executable, '/usr/bin/op'])}\n")
    assert result("-b", "vault") == (0, source.key + "\n", "")
    allowed = f"(allowed: {sys.executable}, /usr/bin/op)"
    assert result("-b", "relative") == config_error(
        str(config), f"backends.relative.command: command 'sh' is not allowed by {POLICY} "
                     f"{allowed}; name it by its absolute path")
    assert result("-b", "absolute") == config_error(
        str(config), f"backends.absolute.command: command '/bin/sh' is not allowed by "
                     f"{POLICY} {allowed}")
    assert source.calls == 1


# --- TTL bounds --------------------------------------------------------------------------------

def ttl_and_life(*args: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    lines = doctor_lines(*args, env=env)
    ttl = next(line for line in lines if line.startswith("setting ttl: "))
    state = next(line for line in lines if line.startswith("cache entry state: "))
    return ttl, int(state.rsplit(", ", 1)[1].split()[0])


@as_root
@pytest.mark.parametrize(("config_ttl", "policy_text", "env", "expected", "life"), [
    ("ttl = 3600\n", "max_ttl = 60\n", {},
     "setting ttl: 60 s (clamped by policy max_ttl; config file: 3600)", 60),
    ("ttl = 5\n", "min_ttl = 120\nmax_ttl = 600\n", {},
     "setting ttl: 120 s (clamped by policy min_ttl; config file: 5)", 120),
    ("", "max_ttl = 90\n", {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "7200000"},
     "setting ttl: 90 s (clamped by policy max_ttl; $CLAUDE_CODE_API_KEY_HELPER_TTL_MS: 7200)",
     90),
    ("ttl = 200\n", "min_ttl = 100\nmax_ttl = 300\n", {}, "setting ttl: 200 s (config file)",
     200),
])
def test_the_cache_life_is_held_within_the_policy_bounds(
        policy_file: PolicyFile, write_config, tmp_path: Path, config_ttl: str,
        policy_text: str, env: dict[str, str], expected: str, life: int) -> None:
    source = counting_command(tmp_path)
    write_config(config_ttl + 'chain = ["vault"]\n' + source.toml("vault"))
    policy_file.write(policy_text)
    assert result(env=env) == (0, source.key + "\n", "")
    ttl, left = ttl_and_life(env=env)
    assert ttl == expected
    assert life - 5 <= left <= life


@as_root
def test_a_policy_change_takes_effect_on_the_next_call_even_with_a_key_cached(
        policy_file: PolicyFile, write_config, tmp_path: Path) -> None:
    source = counting_command(tmp_path)
    config = write_config('ttl = 3600\nchain = ["vault"]\n' + source.toml("vault"))
    for _ in range(2):
        assert result() == (0, source.key + "\n", "")
    assert source.calls == 1  # cached for an hour
    policy_file.write("max_ttl = 60\n")
    assert result() == (0, source.key + "\n", "")
    assert source.calls == 2  # a new policy: the old entry is not served
    assert ttl_and_life()[1] <= 60
    assert source.calls == 3  # doctor runs every backend
    policy_file.write('[backends]\nallowed_types = ["env"]\n')
    assert result() == config_error(
        str(config), f"backend 'vault': backend type 'command' is not allowed by {POLICY} "
                     "(allowed: env)")
    assert source.calls == 3


# --- audit -------------------------------------------------------------------------------------

def log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@as_root
def test_the_policys_audit_log_replaces_the_configs(policy_file: PolicyFile, write_config,
                                                    tmp_path: Path) -> None:
    forced, own = tmp_path / "policy-audit.jsonl", tmp_path / "user-audit.jsonl"
    source = counting_command(tmp_path)
    write_config(f'chain = ["vault"]\n[audit]\npath = "{own}"\n' + source.toml("vault"))
    policy_file.write(f'[audit]\npath = "{forced}"\nkeep = 2\n')
    for _ in range(2):  # a fetch, then a hit: the hit path writes the policy's log too
        assert result() == (0, source.key + "\n", "")
    assert source.calls == 1
    assert [(e["cache"], e["fingerprint"]) for e in log_lines(forced)] == [
        ("miss", fp(source.key)), ("hit", fp(source.key))]
    assert not own.exists()
    lines = doctor_lines()
    assert (f"setting audit: {forced} (policy; the config file's [audit] is ignored)"
            in lines)
    assert f"audit log: {forced} (rotated at 10485760 bytes, 2 old files kept)" in lines
    # Another config named by the environment, without [audit]: audited all the same.
    empty = write_config("", tmp_path / "elsewhere.toml")
    assert result("-b", "env", env={"KEYHELPER_CONFIG": str(empty)}) == (0, KEY + "\n", "")
    assert [(e["backend"], e["fingerprint"]) for e in log_lines(forced)][-1] == ("env", fp(KEY))


def test_a_tilde_in_the_policy_is_the_accounts_home_not_home(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the environment's to change
    account = pwd.getpwuid(os.getuid()).pw_dir
    assert policy._account_home("~/audit.jsonl") == account + "/audit.jsonl"
    assert policy._account_home("~") == account
    assert policy._account_home("/var/log/k.jsonl") == "/var/log/k.jsonl"


# --- plugins -----------------------------------------------------------------------------------

MARK = ('import os\nif os.environ.get("PLUGIN_MARKS"):\n'
        '    open(os.path.join(os.environ["PLUGIN_MARKS"], __name__), "a").close()\n')
PLUGIN = MARK + """
from keyhelper.backend import Backend, Token

class Plugin(Backend):
    summary = "a plugin"

    def fetch(self):
        return Token("sk-ant-from-a-plugin-0123456789")
"""


@pytest.fixture(scope="module")
def plugin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three distributions, laid out as pip does (dist-info and module) for PYTHONPATH."""
    root = tmp_path_factory.mktemp("site")
    for dist, backend in (("goodplug", "good"), ("boomplug", "boom"), ("evilplug", "evil")):
        make_distribution(root, dist, "1.0", {backend: f"{dist}:Plugin"}, PLUGIN)
    return root


@pytest.fixture
def plugin_env(plugin_root: Path, tmp_path: Path) -> dict[str, str]:
    marks = tmp_path / "imported"
    marks.mkdir()
    return {"PYTHONPATH": str(plugin_root), "PLUGIN_MARKS": str(marks)}


def usable(env: dict[str, str]) -> list[str]:
    run = keyhelper("backends", env=env)
    assert (run.returncode, run.stderr) == (0, ""), run
    return sorted(line.split()[0] for line in run.stdout.splitlines()
                  if line.split()[0] in ("good", "boom", "evil") and " usable " in line)


@as_root
@pytest.mark.parametrize(("config_allow", "env_allow", "expected", "origin"), [
    (None, None, ["boom", "good"], "policy"),
    (["goodplug", "evilplug"], None, ["good"], "policy, narrowed by the config file"),
    ([], None, [], "policy, narrowed by the config file"),
    (None, "evilplug,boomplug", ["boom"], "policy, narrowed by $KEYHELPER_PLUGINS_ALLOW"),
    (["goodplug", "evilplug"], "evilplug", [],
     "policy, narrowed by the config file and $KEYHELPER_PLUGINS_ALLOW"),
])
def test_the_plugin_allowlist_is_the_policys_narrowed_never_widened(
        policy_file: PolicyFile, write_config, plugin_env: dict[str, str],
        config_allow: list[str] | None, env_allow: str | None, expected: list[str],
        origin: str) -> None:
    policy_file.write('[plugins]\nallow = ["goodplug", "boomplug"]\n')
    if config_allow is not None:
        write_config(f"[plugins]\nallow = {json.dumps(config_allow)}\n")
    env = dict(plugin_env)
    if env_allow is not None:
        env["KEYHELPER_PLUGINS_ALLOW"] = env_allow
    assert usable(env) == expected
    assert sorted(os.listdir(plugin_env["PLUGIN_MARKS"])) == [f"{name}plug"
                                                              for name in expected]
    shown = ", ".join(f"{name}plug" for name in ("good", "boom") if name in expected)
    assert (f"setting plugin allowlist: {shown or 'none (built-ins only)'} ({origin})"
            in doctor_lines("-b", "env", env=env))


# --- doctor ------------------------------------------------------------------------------------

@as_root
def test_doctor_shows_each_setting_and_where_it_came_from(policy_file: PolicyFile,
                                                          write_config, tmp_path: Path,
                                                          cache_dir: Path) -> None:
    log = tmp_path / "audit.jsonl"
    config = write_config('deadline = 4\nrotation_detection = false\n'
                          '[plugins]\nallow = ["goodplug"]\n'
                          '[profiles.work]\nttl = 900\nrefresh_ahead = 0.5\n')
    policy_file.write(f'max_ttl = 600\n[backends]\nallowed_types = ["env", "vault"]\n'
                      f'[command]\nallowed = ["/usr/bin/op"]\n[audit]\npath = "{log}"\n'
                      "syslog = true\n")
    lines = doctor_lines("-p", "work", "-b", "env",
                         env={"KEYHELPER_PLUGINS_ALLOW": "goodplug,other"})
    assert lines[0] == f"config file: {config}"
    start = lines.index("stale keys served: 0") + 1
    assert lines[start:start + 13] == [
        f"policy file: {POLICY}",
        "policy backend types: env, vault",
        "policy commands: /usr/bin/op",
        "policy ttl: at most 600 s",
        "setting ttl: 600 s (clamped by policy max_ttl; profile work: 900)",
        "setting deadline: 4 s (config file)",
        "setting stale_grace: 3600 s (default)",
        "setting refresh_ahead: 0.5 (profile work)",
        "setting rotation_detection: false (config file)",
        "setting cache: files (default)",
        "setting plugin allowlist: goodplug (config file, narrowed by "
        "$KEYHELPER_PLUGINS_ALLOW)",
        f"setting audit: {log}, syslog /dev/log (policy)",
        "audit syslog: /dev/log (facility authpriv)",
    ]


# --- the rules, in-process ---------------------------------------------------------------------

def test_narrow_keeps_what_is_on_both_lists() -> None:
    assert narrow(None, None) is None
    assert narrow(["a", "b_c"], None) == ["a", "b_c"]
    assert narrow(None, ["x"]) == ["x"]
    assert narrow(["a", "b_c"], ["B.C", "z"]) == ["b_c"]
    assert narrow(["a"], []) == []


def test_clamp_and_checks_without_bounds_or_lists_change_nothing() -> None:
    rules = policy.Policy("/p")
    assert rules.clamp_ttl(1e6, "config file") == (1e6, "config file")
    rules.check_type(BackendSpec("x", "command", {}, "c"))
    rules.check_command(BackendSpec("x", "command", {}, "c"), {"command": ["sh"]})

