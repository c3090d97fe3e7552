"""The vault backend against keyhelper's plugin contract kit (keyhelper.testing), with the
real OpenBao server behind it: the exact key, no key in any text, Skip when there is no
address, a failure (not a Skip) when the secret lacks the field, and the deadline kept
against a server that accepts connections and never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_openbao import OpenBao

from keyhelper.testing import (
    BackendContract,
    DeadlineContract,
    FailureContract,
    Setup,
    SkipContract,
)

pytestmark = pytest.mark.vault


class TestVaultBackendContract(BackendContract, SkipContract, FailureContract,
                               DeadlineContract):
    backend_type = "vault"
    distribution = "keyhelper"
    # Loaded by a fetch only: the HTTP layer, TLS, JSON and the rest (issue 16).
    lazy_modules = ("socket", "ssl", "json", "http.client", "keyhelper_plugins.vault_wire",
                    "hashlib", "random", "ipaddress", "secrets")

    @pytest.fixture(autouse=True)
    def _servers(self, openbao: OpenBao) -> Iterator[None]:
        self.openbao = openbao
        with socket.socket() as silent:  # accepts connections, never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            self.silent_addr = f"http://127.0.0.1:{silent.getsockname()[1]}"
            yield

    def configured(self, key: str, tmp_path: Path) -> Setup:
        name = self.openbao.unique("kit")
        self.openbao.kv_put(name, {"api_key": key})
        return Setup({"path": f"secret/{name}", "addr": self.openbao.addr},
                     env={"VAULT_TOKEN": self.openbao.root_token})

    def unconfigured(self, tmp_path: Path) -> Setup:
        return Setup({"path": "secret/anything"}, env={"VAULT_TOKEN": "root"})  # no address

    def failing(self, key: str, tmp_path: Path) -> Setup:
        name = self.openbao.unique("kit")
        self.openbao.kv_put(name, {"not_the_field": key})
        return Setup({"path": f"secret/{name}", "addr": self.openbao.addr},
                     env={"VAULT_TOKEN": self.openbao.root_token})

    def hanging(self, tmp_path: Path) -> Setup:
        return Setup({"path": "secret/anything", "addr": self.silent_addr},
                     env={"VAULT_TOKEN": "root"})
