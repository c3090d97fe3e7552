"""The raft fixture's ports (tests/support/fixtures_raft.py): a killed node must be able to
bind its ports again, since raft knows it by its cluster address. A 20-machine fleet-sim run
could not restart a killed node: once nothing of the dead server was left on its port, an
outgoing connection (of any process) took it as its ephemeral local port, and the server's
restart failed with "bind: address already in use". The fixture now holds every port for
the cluster's life (``reserve_port``). Here with a real ``bao server -dev``: it starts in a
second, and the port's history is under the test's control (no server-side TIME_WAIT)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_openbao import bao_binary
from fixtures_raft import reserve_port

pytestmark = pytest.mark.vault

WITHIN = 30.0


def start(port: int, home: Path) -> subprocess.Popen[bytes]:
    with open(home / "server.log", "ab") as log:
        return subprocess.Popen(
            [bao_binary(), "server", "-dev", "-dev-root-token-id=root", "-dev-no-store-token",
             f"-dev-listen-address=127.0.0.1:{port}"], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, cwd=home,
            env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def listening(port: int, server: subprocess.Popen[bytes]) -> bool:
    """Whether the server accepts connections on ``port`` (False once it has exited). The
    client closes first, so no TIME_WAIT socket of the server's is left on the port."""
    give_up = time.monotonic() + WITHIN
    while server.poll() is None and time.monotonic() < give_up:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)  # poll interval, not synchronisation
    return False


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for server in started:
        if server.poll() is None:
            server.kill()
        server.wait()


@pytest.fixture
def elsewhere() -> Iterator[socket.socket]:
    """A listening socket for an outgoing connection to go to."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def crash_and_take_port(port: int, home: Path, elsewhere: socket.socket,
                        servers: list[subprocess.Popen[bytes]]) -> socket.socket | None:
    """Start a server on ``port``, kill -9 it, then let an outgoing connection take the port
    as its local one (as the kernel's ephemeral choice may). The connection, or None when
    the port was refused to it."""
    first = start(port, home)
    servers.append(first)
    assert listening(port, first), (home / "server.log").read_text()[-2000:]
    first.kill()
    first.wait()
    client = socket.socket()
    try:
        client.bind(("127.0.0.1", port))
    except OSError as exc:
        client.close()
        assert exc.errno == errno.EADDRINUSE
        return None
    client.connect(elsewhere.getsockname())
    return client


def test_without_the_reservation_a_client_socket_blocks_the_restart(
        tmp_path: Path, elsewhere: socket.socket,
        servers: list[subprocess.Popen[bytes]]) -> None:
    """The failure of the fleet run, reproduced: the port chosen and let go (as the fixture
    did), the server killed, an outgoing connection on the port: the restart fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = crash_and_take_port(port, tmp_path, elsewhere, servers)
    assert client is not None
    with client:
        again = start(port, tmp_path)
        servers.append(again)
        assert not listening(port, again)
        assert again.wait(WITHIN) != 0
    assert "bind: address already in use" in (tmp_path / "server.log").read_text()


def test_a_reserved_port_is_refused_to_others_and_the_server_restarts_on_it(
        tmp_path: Path, elsewhere: socket.socket,
        servers: list[subprocess.Popen[bytes]]) -> None:
    with reserve_port() as held:
        port = held.getsockname()[1]
        assert crash_and_take_port(port, tmp_path, elsewhere, servers) is None
        again = start(port, tmp_path)
        servers.append(again)
        assert listening(port, again), (tmp_path / "server.log").read_text()[-2000:]
        with socket.socket() as other, pytest.raises(OSError) as refused:
            other.bind(("127.0.0.1", port))  # nor while the server runs
        assert refused.value.errno == errno.EADDRINUSE
