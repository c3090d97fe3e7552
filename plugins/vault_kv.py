"""KV helpers of the vault backend: which mount holds a path and its KV version (asked of
Vault, remembered in a 0600 file of the state directory), and reading Vault's answers."""

from __future__ import annotations

import os

from keyhelper.backend import (
    dump_record,
    get_logger,
    load_record,
    read_state_file,
    write_state_file,
)
from keyhelper.errors import BackendError

from .vault_http import VaultStatus, state_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from .vault_auth import Credential
    from .vault_http import Connection, VaultHttp

log = get_logger(__name__)

MOUNT_MEMO_FORMAT = "keyhelper-vault-mount 2"  # 2: the record format of every state file


class MountMemo:
    """The remembered (mount, KV version) of one path on one Vault."""

    def __init__(self, state_dir: str, connection: Connection, full_path: str):
        self.path = ""
        if state_dir:
            identity = "\x00".join((connection.addr, connection.namespace or "", full_path))
            self.path = os.path.join(state_dir, state_name("mount", identity))

    def read(self) -> tuple[str, int] | None:
        data = read_state_file(self.path) if self.path else None
        if not data:
            return None
        fields = load_record(MOUNT_MEMO_FORMAT, data, ("mount", "kv_version"))
        if fields is None or fields["kv_version"] not in ("1", "2"):
            return None
        return fields["mount"], int(fields["kv_version"])

    def write(self, mount: str, kv_version: int) -> None:
        if not self.path:
            return
        try:
            write_state_file(self.path, dump_record(
                MOUNT_MEMO_FORMAT, [("mount", mount), ("kv_version", str(kv_version))]))
        except OSError as exc:
            log.debug("vault: cannot remember the mount (%s)", exc.strerror)

    def forget(self) -> None:
        if self.path:
            try:  # noqa: SIM105 - contextlib is not imported for this
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def detect_mount(http: VaultHttp, credential: Credential, full: str) -> tuple[str, int]:
    """(mount, KV version) of a path, asked of Vault as `vault kv get` does."""
    try:
        body = http.call("GET", f"sys/internal/ui/mounts/{full}", token=credential.token)
    except VaultStatus as exc:
        if exc.status == 403 and any("preflight" in e for e in exc.errors):
            raise BackendError(
                f"cannot find the mount of {full}: no secrets engine is mounted there, "
                f"or the token from {credential.source} has no access to it; set mount "
                "and kv_version to skip this lookup") from None
        if exc.status == 404:
            return full.split("/", 1)[0], 1  # a Vault too old for the lookup: KV v1
        raise
    data = table(body.get("data"))
    mount = str(data.get("path") or "").strip("/")
    if not mount:
        raise BackendError(f"Vault did not say which mount holds {full}")
    if data.get("type") not in ("kv", "generic"):
        raise BackendError(f"{mount}/ is a {data.get('type')} secrets engine, not KV; "
                           'use engine = "logical"')
    options = table(data.get("options"))
    return mount, 2 if str(options.get("version")) == "2" else 1


def table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def payload(body: Mapping[str, Any]) -> Any:
    """The data of a logical read; a KV v2 data path read this way nests it once more."""
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and isinstance(
            data.get("metadata"), dict):
        return data["data"]
    return data


def duration(value: Any) -> float:
    """Seconds of a Vault duration ("90", 90, "15m", "1h30m"); 0 when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "d": 86400.0}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            return 0.0
    return total if not number else 0.0
