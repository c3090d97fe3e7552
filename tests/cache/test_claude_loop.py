"""The Claude Code loop without Claude Code: rotation detection, refresh ahead, stale-if-error,
shared failure backoff, the run's deadline, and ``keyhelper setup claude-code``.

Claude Code is played by the processes that run keyhelper: the caller keyhelper identifies is
its nearest ancestor that is not a shell, so a test process (or a small Python wrapper, for
"another session") stands in for one Claude Code process. The real CLI runs in
test_claude_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cache_entry import entry_path, wait_for_refresh_lock
from countingcmd import CountingCommand, counting_command, rotating_command
from helpers import SCRIPT, keyhelper

from keyhelper import cachepolicy
from keyhelper.base import files as kpaths
from keyhelper.base import records as kentry

CLAUDE_ENV = {"AI_AGENT": "claude-code_2.1.332_harness", "CLAUDE_CODE_ENTRYPOINT": "sdk-cli"}


def config_for(write_config, command: CountingCommand, extra: str = "") -> None:  # type: ignore[no-untyped-def]
    write_config(f'chain = ["src"]\n{extra}\n' + command.toml("src"))


def rewrite_entry(**times: float) -> None:
    """Move an entry's times, as if its life had run on (a subprocess cannot be frozen)."""
    path = entry_path()
    entry = kentry.parse_entry(path.read_bytes())
    assert entry is not None
    for name, value in times.items():
        setattr(entry, name, value)
    path.write_bytes(entry.serialize())


def as_other_session(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run keyhelper from a fresh Python process: another Claude Code process, to keyhelper."""
    code = ("import subprocess, sys; r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL,"
            " capture_output=True, text=True); print(r.stdout, end=''); sys.exit(r.returncode)")
    return subprocess.run([sys.executable, "-c", code, SCRIPT, *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=30, check=False)


# --- rotation: a repeat call from the same Claude Code process ------------------------------

def test_repeat_call_from_same_claude_process_fetches_anew(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command)
    assert keyhelper(env=CLAUDE_ENV).stdout == "key-1\n"
    # Same caller (this test process) asks again well inside its TTL: its key was refused.
    second = keyhelper(env=CLAUDE_ENV)
    assert (second.returncode, second.stdout, second.stderr) == (0, "key-2\n", "")
    assert command.calls == 2


def test_retry_storm_costs_one_fetch_per_interval(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command)
    outputs = [keyhelper(env=CLAUDE_ENV).stdout for _ in range(5)]
    # The first refusal refetches at once; the refetched key refused again is kept for
    # REFETCH_INTERVAL (5 s), whatever the number of retries.
    assert outputs == ["key-1\n", "key-2\n", "key-2\n", "key-2\n", "key-2\n"]
    assert command.calls == 2


def test_other_sessions_get_the_cache(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command)
    runs = [as_other_session(env=CLAUDE_ENV) for _ in range(3)]
    assert [r.stdout for r in runs] == ["key-1\n"] * 3
    assert command.calls == 1


def test_people_and_scripts_calling_twice_get_the_cache(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command)
    assert [keyhelper().stdout for _ in range(3)] == ["key-1\n"] * 3
    assert command.calls == 1


def test_repeat_after_claude_ttl_is_a_plain_hit(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command, "ttl = 3600")
    env = {**CLAUDE_ENV, "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "60000"}
    assert keyhelper(env=env).stdout == "key-1\n"
    marker = next(Path(kpaths.cache_dir(os.environ)).glob("*.served"))
    seen = kentry.read_marker(str(marker))
    assert seen is not None
    stored, served = seen
    kentry.write_marker(str(marker), stored, served - 61)  # Claude's 60 s TTL has run out
    assert keyhelper(env=env).stdout == "key-1\n"
    assert command.calls == 1


def test_rotation_detection_can_be_switched_off(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command, "rotation_detection = false")
    assert [keyhelper(env=CLAUDE_ENV).stdout for _ in range(2)] == ["key-1\n"] * 2
    assert command.calls == 1


def test_another_process_rotated_first_no_extra_fetch(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    config_for(write_config, command)
    assert keyhelper(env=CLAUDE_ENV).stdout == "key-1\n"
    # Another session refreshed the entry (its key was refused first) ...
    assert keyhelper("cache", "clear").returncode == 0
    assert as_other_session(env=CLAUDE_ENV).stdout == "key-2\n"
    # ... so this session's repeat call gets the new entry without another fetch.
    assert keyhelper(env=CLAUDE_ENV).stdout == "key-2\n"
    assert command.calls == 2


# --- refresh ahead ----------------------------------------------------------------------------

def test_refresh_ahead_serves_at_once_and_refreshes_in_background(tmp_path: Path,
                                                                 write_config) -> None:  # type: ignore[no-untyped-def]
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    slow = counting_command(tmp_path, key="key-new", gate=gate, name="slow")
    write_config('chain = ["src"]\n' + slow.toml("src"))
    entry = kentry.Entry("key-old", "src", time.time(), time.time() + 300, time.time() - 1,
                        None, [], kentry.env_digest([], os.environ))
    cache = Path(kpaths.cache_dir(os.environ))
    cache.mkdir(mode=0o700)
    entry_path().write_bytes(entry.serialize())
    entry_path().chmod(0o600)

    started = time.monotonic()
    run = keyhelper()  # reads stdout to EOF: an inherited stdout would block until release
    elapsed = time.monotonic() - started
    assert (run.returncode, run.stdout, run.stderr) == (0, "key-old\n", "")
    assert elapsed < 5
    # The background refresh holds the lock while its backend waits on the gate.
    with open(gate, "w") as release:
        release.write("go")
    wait_for_refresh_lock()
    assert slow.calls == 1
    assert keyhelper().stdout == "key-new\n"


# --- stale-if-error and shared backoff -----------------------------------------------------------

def test_stale_key_served_when_every_backend_fails(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    command.argv += ["2", "3"]  # calls 2 and 3 fail
    config_for(write_config, command)
    assert keyhelper().stdout == "key-1\n"
    rewrite_entry(expires=time.time() - 10, refresh=time.time() - 20)
    run = keyhelper()
    assert (run.returncode, run.stdout) == (0, "key-1\n")
    assert run.stderr.startswith("keyhelper: every backend failed; serving the cached key sha256:")
    assert "s past its cache life" in run.stderr
    doctor = keyhelper("doctor")
    assert "stale keys served: 1" in doctor.stdout


def test_no_stale_key_past_its_own_expiry(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    command.argv += ["2"]
    config_for(write_config, command)
    assert keyhelper().stdout == "key-1\n"
    rewrite_entry(expires=time.time() - 10, refresh=time.time() - 20,
                  token_expires=time.time() - 1)
    run = keyhelper()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from src\n"
                          f"  src failed: {sys.executable}"
                          " exited 1: backend down\n")


def test_no_stale_key_past_the_grace(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    command.argv += ["2"]
    config_for(write_config, command, "stale_grace = 60")
    assert keyhelper().stdout == "key-1\n"
    rewrite_entry(expires=time.time() - 61, refresh=time.time() - 70)
    assert keyhelper().returncode == 1


def test_failure_is_remembered_across_processes(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    command = rotating_command(tmp_path)
    command.argv += ["1", "2", "3"]
    config_for(write_config, command)
    first = keyhelper()
    second = keyhelper()
    assert command.calls == 1  # the second process did not hammer the broken backend
    assert (first.returncode, second.returncode) == (1, 1)
    assert second.stderr.startswith(first.stderr.rstrip("\n"))
    assert re.search(r"\n  \(failed \d s ago; retried in \d s; `keyhelper cache clear` "
                     r"retries now\)\n$", second.stderr)
    assert keyhelper("cache", "clear").returncode == 0
    keyhelper()
    assert command.calls == 2


# --- the run's deadline -------------------------------------------------------------------------

def test_whole_run_ends_by_the_deadline(tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(60)\n")
    write_config(f'deadline = 1\nchain = ["slow"]\n[backends.slow]\ntype = "command"\n'
                 f'command = {json.dumps([sys.executable, str(hang)])}\n')
    started = time.monotonic()
    run = keyhelper()
    assert time.monotonic() - started < 4
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.startswith("keyhelper: no key from slow\n  slow failed: ")
    assert "did not finish within" in run.stderr


# --- setup claude-code ----------------------------------------------------------------------------

def test_setup_merges_backs_up_and_is_idempotent(isolated_env: Path) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"model": "opus", "env": {"FOO": "1"}}))
    run = keyhelper("setup", "claude-code", "--profile", "work", "--ttl-ms", "600000")
    assert run.returncode == 0, run.stderr
    data = json.loads(settings.read_text())
    assert data == {"model": "opus", "apiKeyHelper": f"{SCRIPT} --profile work",
                    "env": {"FOO": "1", "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "600000"}}
    assert os.path.isabs(data["apiKeyHelper"].split()[0])
    backups = list(settings.parent.glob("settings.json.bak-*"))
    assert [json.loads(b.read_text()) for b in backups] == [{"model": "opus", "env": {"FOO": "1"}}]
    again = keyhelper("setup", "claude-code", "--profile", "work", "--ttl-ms", "600000")
    assert again.stdout == f"{settings}: already set up, nothing to change\n"
    assert len(list(settings.parent.glob("settings.json.bak-*"))) == 1


def test_setup_dry_run_writes_nothing(isolated_env: Path) -> None:
    run = keyhelper("setup", "claude-code", "--dry-run")
    assert run.returncode == 0
    assert f'+  "apiKeyHelper": "{SCRIPT}"' in run.stdout
    assert run.stdout.endswith("dry run: nothing written\n")
    assert not (isolated_env / ".claude").exists()


def test_setup_project_scope_warns(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    run = keyhelper("setup", "claude-code", "--scope", "project", cwd=str(project))
    assert run.returncode == 0
    assert "runs without any trust prompt" in run.stderr
    assert json.loads((project / ".claude" / "settings.json").read_text()) == {
        "apiKeyHelper": SCRIPT}


def test_setup_refuses_broken_settings(isolated_env: Path) -> None:
    settings = isolated_env / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text("{not json")
    run = keyhelper("setup", "claude-code")
    assert run.returncode == 2
    assert run.stderr.startswith(f"keyhelper: config error: {settings}: not valid JSON")
    assert settings.read_text() == "{not json"


@pytest.mark.parametrize("value", ["", "abc", "-5", "1e3"])
def test_non_numeric_claude_ttl_is_ignored(value: str) -> None:
    assert cachepolicy.claude_ttl({"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": value}) is None


def test_remembered_failure_is_not_applied_in_another_environment(tmp_path: Path,
                                                                  write_config) -> None:  # type: ignore[no-untyped-def]
    """Fixing the environment (VAULT_ADDR, say) retries at once, without waiting."""
    command = rotating_command(tmp_path)
    command.argv += ["1"]
    write_config('chain = ["probe", "src"]\n[backends.probe]\ntype = "env"\nvar = "PROBE"\n'
                 + command.toml("src"))
    assert keyhelper().returncode == 1
    assert keyhelper().returncode == 1
    assert command.calls == 1  # remembered
    fixed = keyhelper(env={"PROBE": ""})  # another environment: empty, so probe still skips
    assert (fixed.returncode, fixed.stdout) == (0, "key-2\n")
    assert command.calls == 2
