"""Vault's files against another local user, with a real OpenBao server: the login tokens
and KV mount memos keyhelper keeps in ``state/``, and the credential files it reads
(``token_file``, ``~/.vault-token``, ``secret_id_file``, ``jwt_file``, the Kubernetes
service-account token).

Every planted credential is one that works, so using it would show (a key printed, no new
login). Credential files sit in a shared sticky directory, as /tmp, except
``~/.vault-token`` and ``state/``, which the other user cannot reach: planted there by the
test and handed over with lchown.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_openbao import OpenBao, approle, seed
from helpers import Run
from keyhelper_plugins.vault_auth import LoginToken
from keyhelper_plugins.vault_kv import MOUNT_MEMO_FORMAT
from xuser import (
    DIRECTORY,
    FIFO,
    FILE_OBSTACLES,
    HARDLINK_TO_OURS,
    OPEN_TO_OTHERS,
    OURS,
    PLANTED_BY_OTHER,
    REFUSALS,
    SYMLINK_TO_OURS,
    Attacker,
    Planter,
    private_file,
    run,
)

from keyhelper.backend import dump_record
from keyhelper.registry import INDEX_NAME

pytestmark = pytest.mark.vault

REAL = "sk-ant-Kept_in_vault_0000"
PLANTED = "sk-ant-Planted_by_another_user_0000"
READABLE = "readable_by_others"  # ours, mode 644 (the vault CLI writes 600)

REASONS = {
    **REFUSALS,
    READABLE: "is readable by group or others (mode 644); run: chmod 600 {path}",
}


class Seeded:
    """One secret, a policy reading it, an AppRole role with that policy."""

    def __init__(self, openbao: OpenBao):
        self.openbao = openbao
        self.path, self.policy = seed(openbao, REAL)
        self.role_id, self.secret_id = approle(openbao, self.policy)

    def token(self) -> str:
        """A new Vault token that may read the secret."""
        return self.openbao.child_token([self.policy])


@pytest.fixture(scope="module")
def seeded(openbao: OpenBao) -> Seeded:
    return Seeded(openbao)


def vault(openbao: OpenBao, *args: str, **env: str) -> Run:
    return run("--no-cache", *args, env={"VAULT_ADDR": openbao.addr, **env})


def plant(planter: Planter, kind: str, path: Path, value: str) -> Path:
    if kind == READABLE:
        return _chmod(planter.plant(OURS, path, value.encode() + b"\n"), 0o644)
    return planter.plant(kind, path, value.encode() + b"\n")


def _chmod(path: Path, mode: int) -> Path:
    path.chmod(mode)
    return path


def refused(result: Run, lines: dict[str, str], verbose: bool = False) -> None:
    """Exit 1 with each backend's reason (``lines``: backend name -> its message). A run
    of many backends is verbose (-v), whose report is not cut at Claude Code's 500
    characters: its debug lines come first."""
    report = "".join(f"  {name} failed: {message}\n" for name, message in lines.items())
    expected = f"keyhelper: no key from {', '.join(lines)}\n{report}"
    stderr = result.stderr
    if verbose:
        stderr = stderr[stderr.index("keyhelper: no key from"):]
    assert (result.returncode, result.stdout, stderr) == (1, "", expected)


def one_backend_per_case(kinds: list[str], options: str, option: str,
                         shared: Path) -> tuple[str, dict[str, Path]]:
    """A config whose chain has one vault backend per case, each reading its own file
    ``option`` (named after the case): one run reports every refusal."""
    paths = {kind: shared / f"{option}.{kind}" for kind in kinds}
    text = f"chain = {json.dumps(kinds)}\n" + "".join(
        f'[backends.{kind}]\ntype = "vault"\n{options}\n{option} = "{paths[kind]}"\n'
        for kind in kinds)
    return text, paths


# --- credential files -------------------------------------------------------------------

CASES = [*FILE_OBSTACLES, READABLE]


@pytest.mark.parametrize("option", ["token_file", "secret_id_file"])
def test_a_credential_file_not_ours_and_private_is_refused(
        option: str, seeded: Seeded, openbao: OpenBao, attacker: Attacker, planter: Planter,
        write_config: Any) -> None:
    """A Vault token or AppRole secret ID of the other user's would make keyhelper read
    with their rights; a link to one of ours could send it where it does not belong. Each
    planted credential works: the control (ours, 600) gets the key with it."""
    options = f'path = "{seeded.path}"'
    if option == "secret_id_file":
        options += f'\nauth = "approle"\nrole_id = "{seeded.role_id}"'
    text, paths = one_backend_per_case([OURS, *CASES], options, option, attacker.shared)
    secrets = {kind: seeded.token() if option == "token_file" else seeded.secret_id
               for kind in paths}
    for kind, path in paths.items():
        plant(planter, kind, path, secrets[kind])
    write_config(text.replace(f"chain = {json.dumps([OURS, *CASES])}",
                              f"chain = {json.dumps(CASES)}"))
    lines = {kind: f"{option} {path} {REASONS[kind].format(path=path)}"
             for kind, path in paths.items() if kind != OURS}
    result = vault(openbao, "-v")
    refused(result, lines, verbose=True)
    assert not any(secret in result.stderr for secret in secrets.values())
    # The control last: its login is kept in state/, where the others would find it.
    control = vault(openbao, "-b", OURS)
    assert (control.returncode, control.stdout, control.stderr) == (0, REAL + "\n", "")


@pytest.mark.parametrize("kind", [OURS, PLANTED_BY_OTHER, SYMLINK_TO_OURS, READABLE])
def test_a_home_vault_token_not_ours_and_private_is_refused(
        kind: str, seeded: Seeded, openbao: OpenBao, planter: Planter, write_config: Any,
        isolated_env: Path) -> None:
    path = isolated_env / ".vault-token"
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{seeded.path}"\n')
    plant(planter, kind, path, seeded.token())
    result = vault(openbao)
    if kind == OURS:
        assert (result.returncode, result.stdout, result.stderr) == (0, REAL + "\n", "")
        return
    refused(result, {"vault": f"~/.vault-token {path} {REASONS[kind].format(path=path)}"})


def test_a_jwt_file_not_ours_and_private_is_refused(
        openbao: OpenBao, attacker: Attacker, planter: Planter, write_config: Any) -> None:
    """No jwt auth is mounted at kh-no-jwt: reading the file is all that can succeed, and
    the control (ours) is read and sent to a login that fails for its own reason."""
    options = 'path = "secret/x"\nauth = "jwt"\nrole = "ci"\nauth_mount = "kh-no-jwt"'
    text, paths = one_backend_per_case([OURS, *CASES], options, "jwt_file", attacker.shared)
    for kind, path in paths.items():
        plant(planter, kind, path, "eyJhbGciOiJSUzI1NiJ9.e30.planted")
    write_config(text)
    lines = {kind: f"jwt_file {path} {REASONS[kind].format(path=path)}"
             for kind, path in paths.items() if kind != OURS}
    refused(vault(openbao, "-v"),
            {OURS: "jwt login at auth/kh-no-jwt refused: permission denied", **lines},
            verbose=True)


def test_a_kubernetes_token_may_be_roots_and_shared_never_another_users(
        openbao: OpenBao, attacker: Attacker, planter: Planter, write_config: Any) -> None:
    """Kubernetes mounts the service-account token root's, mode 644: that is accepted, and
    sent to a login that fails for its own reason. (The suite runs as root, so root's is
    the user's own here too.)"""
    options = ('path = "secret/x"\nauth = "kubernetes"\nrole = "kh"\n'
               'auth_mount = "kh-no-k8s"')
    kinds = ["roots_mode_644", PLANTED_BY_OTHER, SYMLINK_TO_OURS, HARDLINK_TO_OURS, FIFO,
             OPEN_TO_OTHERS]
    text, paths = one_backend_per_case(kinds, options, "token_file", attacker.shared)
    for kind, path in paths.items():
        if kind == "roots_mode_644":
            _chmod(planter.plant(OURS, path, b"eyJhbGciOiJSUzI1NiJ9.e30.sa\n"), 0o644)
        else:
            planter.plant(kind, path, b"eyJhbGciOiJSUzI1NiJ9.e30.sa\n")
    write_config(text)
    reasons = {**REASONS, OPEN_TO_OTHERS: "is writable by group or others (mode 666); "
                                          "run: chmod go-w {path}"}
    lines = {kind: f"service-account token {path} {reasons[kind].format(path=path)}"
             for kind, path in paths.items() if kind != "roots_mode_644"}
    refused(vault(openbao, "-v"), {
        "roots_mode_644": "kubernetes login at auth/kh-no-k8s refused: permission denied",
        **lines}, verbose=True)


# --- state/: login tokens and mount memos -----------------------------------------------

def state_dir(cache_dir: Path) -> Path:
    state = cache_dir / "state"
    cache_dir.mkdir(mode=0o700)
    state.mkdir(mode=0o700)
    return state


def login_path(state: Path, openbao: OpenBao, role_id: str) -> Path:
    """Where keyhelper keeps the login token of this AppRole backend (no namespace, default
    mount); the OURS case shows the name is right."""
    parts = (openbao.addr.rstrip("/"), "", "approle", "approle", "", role_id, "", "", "", "")
    return state / f"vault-login-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:32]}"


def memo_path(state: Path, openbao: OpenBao, full_path: str) -> Path:
    parts = (openbao.addr.rstrip("/"), "", full_path)
    return state / f"vault-mount-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:32]}"


def approle_config(seeded: Seeded, tmp_path: Path) -> str:
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(seeded.secret_id + "\n")
    secret_file.chmod(0o600)
    return (f'chain = ["vault"]\n[backends.vault]\npath = "{seeded.path}"\nauth = "approle"\n'
            f'role_id = "{seeded.role_id}"\nsecret_id_file = "{secret_file}"\n')


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_login_token_not_ours_and_private_is_not_used(
        kind: str, seeded: Seeded, openbao: OpenBao, planter: Planter, cache_dir: Path,
        write_config: Any, tmp_path: Path) -> None:
    """A planted login token would make every read run with the other user's token. It is
    a working token here: used, it would save the login."""
    write_config(approle_config(seeded, tmp_path))
    path = login_path(state_dir(cache_dir), openbao, seeded.role_id)
    planted = seeded.token()
    login = LoginToken(planted, time.time() + 3600, 3600.0, False)
    planter.plant(kind, path, login.serialize())
    links = planter.targets()
    tokens = openbao.token_count()
    result = vault(openbao)
    if kind == OURS:  # control: the planted token is used, no login
        assert (result.returncode, result.stdout, result.stderr) == (0, REAL + "\n", "")
        assert openbao.token_count() == tokens
        return
    note = (f"keyhelper: cannot keep the Vault login token in {path} (Is a directory)\n"
            if kind == DIRECTORY else "")
    assert (result.returncode, result.stdout, result.stderr) == (0, REAL + "\n", note)
    assert openbao.token_count() == tokens + 1  # logged in instead
    assert planter.targets() == links
    if kind != DIRECTORY:
        assert private_file(path) and planted not in path.read_text()


@pytest.mark.parametrize("kind", [OURS, *FILE_OBSTACLES])
def test_a_mount_memo_not_ours_and_private_is_not_used(
        kind: str, seeded: Seeded, openbao: OpenBao, planter: Planter, cache_dir: Path,
        write_config: Any) -> None:
    """A planted memo naming another mount redirects the read: "kv1" for secret/NAME reads
    kv1/ret/NAME, where the other user put a key of their choosing."""
    inside = seeded.path.split("/", 1)[1]
    openbao.kv_put(f"ret/{inside}", {"api_key": PLANTED}, mount="kv1", kv_version=1)
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{seeded.path}"\n')
    path = memo_path(state_dir(cache_dir), openbao, seeded.path)
    planter.plant(kind, path, dump_record(MOUNT_MEMO_FORMAT,
                                          [("mount", "kv1"), ("kv_version", "1")]))
    links = planter.targets()
    result = vault(openbao, VAULT_TOKEN=openbao.root_token)
    if kind == OURS:  # control: the planted memo is followed when ours
        assert (result.returncode, result.stdout) == (0, PLANTED + "\n")
        return
    assert (result.returncode, result.stdout, result.stderr) == (0, REAL + "\n", "")
    assert planter.targets() == links
    if kind != DIRECTORY:
        assert private_file(path)
        assert path.read_bytes() == dump_record(MOUNT_MEMO_FORMAT,
                                                [("mount", "secret"), ("kv_version", "2")])


@pytest.mark.parametrize("mask", [0o000, 0o077])
def test_vault_state_is_private_whatever_the_umask(mask: int, seeded: Seeded,
                                                   openbao: OpenBao, cache_dir: Path,
                                                   write_config: Any, tmp_path: Path) -> None:
    write_config(approle_config(seeded, tmp_path))
    result = run(env={"VAULT_ADDR": openbao.addr}, mask=mask)
    assert (result.returncode, result.stdout, result.stderr) == (0, REAL + "\n", "")
    state = cache_dir / "state"
    made = sorted(p.name.split("-")[1] for p in state.iterdir()
                  if p.name != INDEX_NAME and not p.name.startswith("parsed-"))
    assert made == ["login", "mount"]
    # The config's parse, kept between runs (keyhelper.configfile): private like the rest.
    assert len([p for p in state.iterdir() if p.name.startswith("parsed-")]) == 1
    assert (state / INDEX_NAME).exists()  # the entry-point index: private like the rest
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert all(private_file(p) for p in state.iterdir())
    assert os.listdir(cache_dir) and all(
        stat.S_IMODE(p.lstat().st_mode) == (0o700 if p.is_dir() else 0o600)
        for p in cache_dir.iterdir())
