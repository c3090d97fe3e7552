"""The vault backend against a real OpenBao dev server, through the real console script:
KV v1 and v2, version pins, logical reads, rotation, and the errors people see."""

from __future__ import annotations

import re
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_openbao import KV1_MOUNT, OpenBao, free_port, start_openbao
from helpers import Run, keyhelper
from keyhelper_plugins.vault_kv import MOUNT_MEMO_FORMAT

from keyhelper.backend import dump_record
from keyhelper.base import records as kentry

pytestmark = pytest.mark.vault


def vault_config(path: str, extra: str = "", top: str = "") -> str:
    return f'{top}\nchain = ["vault"]\n[backends.vault]\npath = "{path}"\n{extra}\n'


def run(openbao: OpenBao, *args: str, token: str = "root", **env: str) -> Run:  # noqa: S107
    return keyhelper(*args, env={"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": token, **env})


def entries(cache_dir: Path) -> list[kentry.Entry]:
    found = [kentry.read_entry(str(cache_dir), p.name[: -len(".entry")])
             for p in sorted(cache_dir.glob("*.entry"))]
    return [e for e in found if e is not None]


def state_files(cache_dir: Path, prefix: str) -> list[Path]:
    return sorted((cache_dir / "state").glob(f"{prefix}*"))


# --- reading -------------------------------------------------------------------------------

def test_kv2_latest_version_and_remembered_mount(openbao: OpenBao, write_config, cache_dir):
    name = openbao.unique()
    openbao.kv_put(f"llm/{name}", {"api_key": "sk-first"})
    openbao.kv_put(f"llm/{name}", {"api_key": "sk-second", "other": "x"})
    write_config(vault_config(f"secret/llm/{name}"))

    result = run(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-second\n", "")
    [memo] = state_files(cache_dir, "vault-mount-")
    assert stat.S_IMODE(memo.stat().st_mode) == 0o600
    assert memo.read_bytes() == dump_record(MOUNT_MEMO_FORMAT,
                                            [("mount", "secret"), ("kv_version", "2")])
    [entry] = entries(cache_dir)
    assert entry.key == "sk-second" and entry.backend == "vault"
    assert entry.token_expires is None  # KV v2 has no lease


def test_kv2_version_pin(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-v1"})
    openbao.kv_put(name, {"api_key": "sk-v2"})
    write_config(vault_config(f"secret/{name}", "version = 1"))
    latest = openbao.client.secrets.kv.v2.read_secret_version(
        path=name, raise_on_deleted_version=True)

    result = run(openbao)

    assert latest["data"]["data"] == {"api_key": "sk-v2"}  # so the pin is what picks v1
    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-v1\n", "")


def test_kv1_ttl_key_caps_the_cache(openbao: OpenBao, write_config, cache_dir):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-kv1", "ttl": "2m"}, mount=KV1_MOUNT, kv_version=1)
    write_config(vault_config(f"{KV1_MOUNT}/{name}"))

    result = run(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-kv1\n", "")
    [entry] = entries(cache_dir)
    assert entry.token_expires is not None
    assert entry.token_expires - entry.stored == pytest.approx(120, abs=2)
    # The core drops an entry 60 s before the key's own expiry.
    assert entry.expires - entry.stored == pytest.approx(60, abs=2)
    assert state_files(cache_dir, "vault-mount-")[0].read_bytes() == dump_record(
        MOUNT_MEMO_FORMAT, [("mount", "kv1"), ("kv_version", "1")])


def test_mount_and_kv_version_skip_detection(openbao: OpenBao, write_config, cache_dir):
    name = openbao.unique()
    openbao.kv_put(f"team/{name}", {"token": "sk-field"}, mount=KV1_MOUNT, kv_version=1)
    write_config(vault_config(f"team/{name}",
                              f'mount = "{KV1_MOUNT}"\nkv_version = 1\nfield = "token"'))

    result = run(openbao)

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-field\n", "")
    assert state_files(cache_dir, "vault-mount-") == []


def test_logical_read_of_any_path(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-logical-1"}, mount=KV1_MOUNT, kv_version=1)
    openbao.kv_put(name, {"password": "sk-logical-2"})
    write_config(f'''chain = ["v1", "v2"]
[backends.v1]
type = "vault"
engine = "logical"
path = "{KV1_MOUNT}/{name}"
[backends.v2]
type = "vault"
engine = "logical"
path = "secret/data/{name}"
field = "password"
''')

    first = run(openbao, "--no-cache", "-b", "v1")
    second = run(openbao, "--no-cache", "-b", "v2")

    assert (first.returncode, first.stdout, first.stderr) == (0, "sk-logical-1\n", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, "sk-logical-2\n", "")


def test_missing_field_names_the_fields_not_their_values(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"token": "sk-hidden", "user": "bob"})
    write_config(vault_config(f"secret/{name}"))

    result = run(openbao)

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "keyhelper: no key from vault\n"
        f"  vault failed: secret/data/{name} has no field 'api_key' (fields: token, user)\n")


# --- rotation ------------------------------------------------------------------------------

def test_rotation_after_cache_clear(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-old"})
    write_config(vault_config(f"secret/{name}"))
    assert run(openbao).stdout == "sk-old\n"

    openbao.kv_put(name, {"api_key": "sk-new"})
    assert run(openbao).stdout == "sk-old\n"  # still cached
    cleared = keyhelper("cache", "clear")

    assert (cleared.returncode, cleared.stdout) == (0, "removed 1 entry\n")
    assert run(openbao).stdout == "sk-new\n"


def test_rotation_when_the_cache_entry_ends(openbao: OpenBao, write_config, cache_dir):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-before"})
    write_config(vault_config(f"secret/{name}", top="ttl = 600"))
    assert run(openbao).stdout == "sk-before\n"
    openbao.kv_put(name, {"api_key": "sk-after"})
    assert run(openbao).stdout == "sk-before\n"

    # The entry's end, without waiting 600 s: move its times into the past.
    [path] = cache_dir.glob("*.entry")
    entry = kentry.parse_entry(path.read_bytes())
    assert entry is not None
    entry.stored, entry.expires, entry.refresh = entry.stored - 700, entry.stored - 100, 0.0
    path.write_bytes(entry.serialize())

    assert run(openbao).stdout == "sk-after\n"


# --- errors --------------------------------------------------------------------------------

def test_not_found_says_the_mount_exists(openbao: OpenBao, write_config):
    write_config(vault_config("secret/llm/absent"))

    result = run(openbao)

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("keyhelper: no key from vault\n  vault failed: secret/llm/absent "
                             "not found (the mount secret/ exists, KV v2)\n")


def test_not_found_version(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-only"})
    write_config(vault_config(f"secret/{name}", "version = 7"))

    result = run(openbao)

    assert result.stderr == (f"keyhelper: no key from vault\n  vault failed: version 7 of "
                             f"secret/{name} not found (the mount secret/ exists, KV v2)\n")


def test_not_found_without_a_mount(openbao: OpenBao, write_config):
    write_config(vault_config("llm/key", 'mount = "nomount"\nkv_version = 2'))

    result = run(openbao)

    assert result.stderr == ("keyhelper: no key from vault\n  vault failed: nomount/llm/key "
                             "not found: no secrets engine is mounted there\n")


def test_detection_on_a_path_without_mount(openbao: OpenBao, write_config):
    write_config(vault_config("nomount/key"))

    result = run(openbao)

    assert result.stderr == (
        "keyhelper: no key from vault\n  vault failed: cannot find the mount of nomount/key: "
        "no secrets engine is mounted there, or the token from $VAULT_TOKEN has no access "
        "to it; set mount and kv_version to skip this lookup\n")


def test_permission_denied_invalid_token(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-guarded"})
    write_config(vault_config(f"secret/{name}"))

    result = run(openbao, token="s.not-a-real-token-value")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"keyhelper: no key from vault\n  vault failed: permission denied reading "
        f"secret/{name}: the token from $VAULT_TOKEN is not valid (expired, revoked or "
        "mistyped)\n")
    assert "not-a-real-token-value" not in result.stderr


def test_permission_denied_by_policy_with_token_file(openbao: OpenBao, write_config,
                                                     isolated_env: Path):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-guarded"})
    # May list the path (so the mount lookup answers) but not read it.
    openbao.policy(f"list-{name}", f'path "secret/metadata/{name}" {{ capabilities = ["list"] }}')
    token = openbao.child_token([f"list-{name}"])
    (isolated_env / ".vault-token").write_text(token + "\n")
    (isolated_env / ".vault-token").chmod(0o600)  # as `vault login` writes it
    write_config(vault_config(f"secret/{name}"))

    result = keyhelper(env={"VAULT_ADDR": openbao.addr})

    assert result.stderr == (
        f"keyhelper: no key from vault\n  vault failed: permission denied reading "
        f"secret/{name}: the policies of the token from ~/.vault-token do not allow it\n")
    assert token not in result.stderr


def test_no_address_skips(write_config):
    write_config(vault_config("secret/x"))

    result = keyhelper(env={"VAULT_TOKEN": "root"})

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("keyhelper: no key from vault\n  vault skipped: no Vault address: "
                             "set addr or $VAULT_ADDR\n")


def test_no_token_skips(openbao: OpenBao, write_config):
    write_config(vault_config("secret/x"))

    result = keyhelper(env={"VAULT_ADDR": openbao.addr})

    assert result.stderr == (
        "keyhelper: no key from vault\n  vault skipped: no Vault token: $VAULT_TOKEN is not "
        "set, no token_file option, no ~/.vault-token (run: vault login)\n")


def test_server_down(write_config):
    port = free_port()  # nothing listens there
    write_config(vault_config("secret/x"))

    started = time.monotonic()
    result = keyhelper(env={"VAULT_ADDR": f"http://127.0.0.1:{port}", "VAULT_TOKEN": "root"})
    elapsed = time.monotonic() - started

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"keyhelper: no key from vault\n  vault failed: cannot connect to "
                             f"Vault at http://127.0.0.1:{port} (connection refused: is it "
                             "running?)\n")
    assert elapsed < 5  # two retries with short backoff, far from Claude Code's 10 s warning


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_server_that_never_answers_ends_within_the_deadline(silent_server: str, write_config):
    write_config(vault_config("secret/x", top="deadline = 2"))

    started = time.monotonic()
    result = keyhelper(env={"VAULT_ADDR": silent_server, "VAULT_TOKEN": "root"})
    elapsed = time.monotonic() - started

    assert (result.returncode, result.stdout) == (1, "")
    assert re.fullmatch(r"keyhelper: no key from vault\n  vault failed: Vault at "
                        + re.escape(silent_server) + r" did not answer within 1\.\d s\n",
                        result.stderr), result.stderr
    # The deadline counts from the start of the run, after the interpreter started.
    assert 1.0 < elapsed < 2 + 1.5


def test_tls_failure(openbao: OpenBao, write_config):
    https = openbao.addr.replace("http://", "https://")  # TLS to a plain-HTTP listener
    write_config(vault_config("secret/x"))

    result = keyhelper(env={"VAULT_ADDR": https, "VAULT_TOKEN": "root"})

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"keyhelper: no key from vault\n  vault failed: TLS failure talking "
                             f"to Vault at {https}: it does not speak TLS there (an http:// "
                             "address?)\n")


def test_sealed(write_config):
    with start_openbao() as server:
        server.api("PUT", "sys/seal")
        write_config(vault_config("secret/x"))

        result = keyhelper(env={"VAULT_ADDR": server.addr, "VAULT_TOKEN": "root"})

    assert result.stderr == (f"keyhelper: no key from vault\n  vault failed: Vault at "
                             f"{server.addr} is sealed; ask its operators to unseal it\n")


def test_tls_skip_verify_warns(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-plain"})
    write_config(vault_config(f"secret/{name}", "tls_skip_verify = true"))

    result = run(openbao)

    assert (result.returncode, result.stdout) == (0, "sk-plain\n")
    assert result.stderr == ("keyhelper: vault backend vault: TLS certificate verification is "
                             "off (tls_skip_verify); use it for tests only\n")


def test_env_vars_key_the_cache(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-root-view"})
    write_config(vault_config(f"secret/{name}"))
    assert run(openbao).stdout == "sk-root-view\n"

    # Another token must not be served the entry fetched with the first one.
    other = run(openbao, token="s.other-token")

    assert (other.returncode, other.stdout) == (1, "")
    assert "permission denied reading secret/" in other.stderr  # it asked Vault, not the cache


def test_missing_ca_cert_file(write_config, tmp_path: Path):
    write_config(vault_config("secret/x", f'ca_cert = "{tmp_path}/nope.pem"'))

    result = keyhelper(env={"VAULT_ADDR": "https://127.0.0.1:9", "VAULT_TOKEN": "root"})

    assert result.stderr == (f"keyhelper: no key from vault\n  vault failed: ca_cert "
                             f"{tmp_path}/nope.pem does not exist or is not a file\n")


def test_address_without_scheme_is_a_config_error(write_config):
    write_config(vault_config("secret/x"))

    result = keyhelper(env={"VAULT_ADDR": "vault.example.com:8200", "VAULT_TOKEN": "root"})

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("keyhelper: config error: $VAULT_ADDR: expected a URL like "
                             "https://vault:8200, got 'vault.example.com:8200'\n")


def test_namespace_from_env_and_option(openbao: OpenBao, write_config):
    namespace = openbao.unique("ns")
    openbao.api("POST", f"sys/namespaces/{namespace}", {})
    openbao.api("POST", "sys/mounts/team-kv", {"type": "kv", "options": {"version": "2"}},
                namespace=namespace)
    openbao.kv_put("llm", {"api_key": "sk-in-namespace"}, mount="team-kv", namespace=namespace)
    write_config(f'[backends.by_env]\ntype = "vault"\npath = "team-kv/llm"\n'
                 f'[backends.by_option]\ntype = "vault"\npath = "team-kv/llm"\n'
                 f'namespace = "{namespace}"\n')

    by_env = run(openbao, "--no-cache", "-b", "by_env", VAULT_NAMESPACE=namespace)
    by_option = run(openbao, "--no-cache", "-b", "by_option")
    outside = run(openbao, "--no-cache", "-b", "by_env")

    assert (by_env.returncode, by_env.stdout, by_env.stderr) == (0, "sk-in-namespace\n", "")
    assert (by_option.returncode, by_option.stdout) == (0, "sk-in-namespace\n")
    assert outside.returncode == 1 and "cannot find the mount of team-kv/llm" in outside.stderr
