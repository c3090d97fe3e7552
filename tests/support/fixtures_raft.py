"""A real 3-node OpenBao cluster (integrated raft storage) on loopback ports, and a small
HTTP proxy to put in front of a node (to count requests, answer 5xx/429, or blackhole).

``start_cluster()`` is a plain context manager, usable outside pytest (scripts/fleet-sim);
the session-scoped ``raft_cluster`` fixture wraps it. Node 0 is initialised (one unseal key),
the others join it with ``bao operator raft join`` and are unsealed; readiness is found by
polling ``sys/health``, never by a fixed sleep. A KV v2 secret is written once
(``CLUSTER_SECRET``). ``performance_multiplier = 1`` keeps leader elections near a second,
as production tuning does.

A node keeps its ports for the cluster's life (raft membership is its cluster address), so a
killed node must be able to bind them again. The fixture holds each port with a socket of its
own from the start (:func:`reserve_port`): once a dead node's TIME_WAIT sockets expired
(60 s), an outgoing connection of any process used to take its port as the ephemeral local
port, or another test server's bind(0) did, and the restart failed with "bind: address
already in use" (a 20-machine fleet-sim run; reproduced by holding the port with a client
socket). A held port is refused to those, and the node's own listener (Go sets SO_REUSEADDR)
still binds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fixtures_openbao import bao_binary

READY_WITHIN = 30.0
CLUSTER_SECRET = "secret/llm/claude-code"
CLUSTER_KEY = "sk-ant-cluster-0123456789abcdef"


@dataclass
class Node:
    name: str
    api_port: int
    cluster_port: int
    data_dir: str
    config: str
    log_path: str
    home: str
    proc: subprocess.Popen[bytes] | None = None
    reserved: list[socket.socket] = field(default_factory=list, repr=False)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class Cluster:
    nodes: list[Node]
    root_token: str
    unseal_key: str
    reader_token: str = ""  # a token whose policy may read CLUSTER_SECRET only
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def addrs(self) -> list[str]:
        return [node.addr for node in self.nodes]

    def health(self, node: Node) -> int | None:
        """sys/health's status: 200 active, 429 standby, 503 sealed, 501 not initialised;
        None when it does not answer."""
        return _health(node.addr)

    def active(self, timeout: float | None = None) -> Node:
        """The active node, once there is one."""
        give_up = time.monotonic() + (READY_WITHIN if timeout is None else timeout)
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is None and \
                        self.health(node) == 200:
                    return node
            if time.monotonic() > give_up:
                raise RuntimeError("no active OpenBao node")
            time.sleep(0.05)  # poll interval, not synchronisation

    def voters(self) -> int:
        """How many nodes vote in the raft configuration (a healthy leader's view)."""
        try:
            reply = self.api("GET", "sys/storage/raft/configuration")
        except (urllib.error.URLError, OSError):
            return 0
        servers = reply.get("data", {}).get("config", {}).get("servers", [])
        return sum(1 for s in servers if s.get("voter"))

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            node: Node | None = None) -> dict[str, Any]:
        target = node or self.active()
        return _api(target.addr, method, path, body, self.root_token)

    def kill(self, node: Node) -> None:
        """kill -9, as a crash would."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def restart(self, node: Node, unseal: bool = True) -> None:
        """Start a stopped node again (its raft data kept) and unseal it."""
        _start(node)
        _wait_answers(node)
        if unseal:
            self.unseal(node)

    def restart_all(self) -> None:
        """Start every stopped node again (raft data kept), unseal them, wait for a leader."""
        stopped = [n for n in self.nodes if n.proc is None or n.proc.poll() is not None]
        for node in stopped:
            _start(node)
        for node in stopped:
            _wait_answers(node)
        for node in stopped:
            _api(node.addr, "PUT", "sys/unseal", {"key": self.unseal_key}, None)
        self.active()

    def seal(self, node: Node) -> None:
        _api(node.addr, "PUT", "sys/seal", None, self.root_token)

    def unseal(self, node: Node) -> None:
        _api(node.addr, "PUT", "sys/unseal", {"key": self.unseal_key}, None)
        give_up = time.monotonic() + READY_WITHIN
        while self.health(node) not in (200, 429, 473):
            if time.monotonic() > give_up:
                raise RuntimeError(f"{node.name} did not come up unsealed")
            time.sleep(0.05)  # poll interval, not synchronisation

    def settled(self) -> None:
        """Every node running, unsealed, one of them active: the state tests start from."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                self.restart(node)
            elif self.health(node) == 503:
                self.unseal(node)
        self.active()
        give_up = time.monotonic() + READY_WITHIN
        while any(self.health(n) not in (200, 429, 473) for n in self.nodes) or \
                self.voters() < len(self.nodes):
            if time.monotonic() > give_up:
                raise RuntimeError("the cluster did not settle")
            time.sleep(0.05)  # poll interval, not synchronisation


def _api(addr: str, method: str, path: str, body: dict[str, Any] | None,
         token: str | None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-Vault-Token": token} if token else {}
    request = urllib.request.Request(f"{addr}/v1/{path}", data=data, method=method,
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else {}


def _health(addr: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _start(node: Node) -> None:
    with open(node.log_path, "ab") as log:
        node.proc = subprocess.Popen(
            [bao_binary(), "server", f"-config={node.config}"], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, cwd=node.home,
            env={"HOME": node.home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def _wait_answers(node: Node) -> None:
    give_up = time.monotonic() + READY_WITHIN
    while _health(node.addr) is None:
        if (node.proc is not None and node.proc.poll() is not None) or \
                time.monotonic() > give_up:
            with open(node.log_path, errors="replace") as log:
                tail = log.read()[-2000:]
            if "address already in use" in tail:
                tail += _port_holders(node)
            code = None if node.proc is None else node.proc.poll()
            why = f"exited ({code})" if code is not None else \
                f"did not answer within {READY_WITHIN:.0f} s"
            raise RuntimeError(f"OpenBao node {node.name} did not start: {why}:\n{tail}")
        time.sleep(0.05)  # poll interval, not synchronisation


def reserve_port() -> socket.socket:
    """A loopback port held for the caller: bound with SO_REUSEADDR and never listening.
    Linux then refuses the port to every socket without SO_REUSEADDR (an outgoing
    connection's ephemeral port, another bind) and to bind(0), while a listener that sets
    SO_REUSEADDR, as every Go server does, binds it beside this one. Connections to it are
    refused while nothing listens, as to a free port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _port_holders(node: Node) -> str:
    """Who holds the node's ports (Linux ``ss``), for the error message."""
    query = f"( sport = :{node.api_port} or sport = :{node.cluster_port} )"
    try:
        found = subprocess.run(["ss", "-tanp", query], capture_output=True, text=True,
                               timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "\nsockets on its ports:\n" + found


def _node(base: str, index: int) -> Node:
    name = f"n{index}"
    home = os.path.join(base, name)
    data = os.path.join(home, "raft")
    os.makedirs(data, mode=0o700)
    api, cluster = reserve_port(), reserve_port()
    node = Node(name, api.getsockname()[1], cluster.getsockname()[1], data,
                os.path.join(home, "server.hcl"), os.path.join(home, "server.log"), home,
                reserved=[api, cluster])
    with open(node.config, "w") as handle:
        handle.write(f"""\
storage "raft" {{
  path = "{data}"
  node_id = "{name}"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{node.api_port}"
  cluster_address = "127.0.0.1:{node.cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{node.api_port}"
cluster_addr = "https://127.0.0.1:{node.cluster_port}"
disable_mlock = true
""")
    return node


@contextlib.contextmanager
def start_cluster(size: int = 3) -> Iterator[Cluster]:
    """Start, initialise, join and unseal ``size`` nodes; stop them all on exit."""
    with tempfile.TemporaryDirectory(prefix="openbao-raft-") as base:
        nodes: list[Node] = []
        try:
            nodes.extend(_node(base, i) for i in range(size))
            for node in nodes:
                _start(node)
            for node in nodes:
                _wait_answers(node)
            init = _api(nodes[0].addr, "PUT", "sys/init",
                        {"secret_shares": 1, "secret_threshold": 1}, None)
            cluster = Cluster(nodes, init["root_token"], init["keys"][0])
            cluster.unseal(nodes[0])
            cluster.active()
            # New nodes become voters only after this (10 s by default): until then losing
            # the leader loses the quorum.
            cluster.api("POST", "sys/storage/raft/autopilot/configuration",
                        {"server_stabilization_time": "1s", "cleanup_dead_servers": False})
            for node in nodes[1:]:
                _api(node.addr, "PUT", "sys/storage/raft/join",
                     {"leader_api_addr": nodes[0].addr}, None)
                cluster.unseal(node)
            cluster.settled()
            _seed(cluster)
            yield cluster
        finally:
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.proc.terminate()
            for node in nodes:
                if node.proc is not None:
                    try:
                        node.proc.wait(10)
                    except subprocess.TimeoutExpired:
                        node.proc.kill()
                        node.proc.wait()
            for node in nodes:
                for sock in node.reserved:
                    sock.close()


def _seed(cluster: Cluster) -> None:
    cluster.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
    give_up = time.monotonic() + READY_WITHIN
    while True:  # a new mount takes a moment to be writable
        try:
            cluster.api("POST", f"secret/data/{CLUSTER_SECRET.split('/', 1)[1]}",
                        {"data": {"api_key": CLUSTER_KEY}})
            break
        except urllib.error.HTTPError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.05)  # poll interval, not synchronisation
    cluster.api("PUT", "sys/policies/acl/reader",
                {"policy": f'path "secret/data/{CLUSTER_SECRET.split("/", 1)[1]}" '
                           '{ capabilities = ["read"] }\n'
                           'path "sys/internal/ui/mounts/*" { capabilities = ["read"] }\n'})
    reply = cluster.api("POST", "auth/token/create",
                        {"policies": ["reader"], "ttl": "24h"})
    cluster.reader_token = reply["auth"]["client_token"]


# --- a loopback HTTP proxy in front of a node -------------------------------------------

class NodeProxy:
    """An HTTP proxy on a loopback port in front of one node: counts the requests it
    passes (with their times), and can answer a status of its own ("status" mode), redirect
    with 307 to ``location`` ("redirect", as a standby that does not forward does), or never
    answer ("blackhole": it accepts the connection and reads the request, then waits)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        self.mode = "pass"
        self.status = 503
        self.location = ""
        self.times: list[float] = []
        self.paths: list[str] = []  # beside times
        self.callers: list[str] = []  # beside times: a digest of the token sent, or ""
        self.answered: list[tuple[float, str, str, int]] = []  # (time, path, caller, status)
        self.released = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            caller = ""

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.paths.append(self.path)
                token = self.headers.get("X-Vault-Token") or ""
                self.caller = token and hashlib.sha256(token.encode()).hexdigest()[:12]
                proxy.callers.append(self.caller)
                proxy.times.append(time.time())
                if proxy.mode == "blackhole":
                    proxy.released.wait(60)
                    self.close_connection = True
                    return
                if proxy.mode == "redirect":
                    self._reply(307, {"Location": proxy.location + self.path}, b"")
                    return
                if proxy.mode == "status":
                    data = json.dumps({"errors": [f"proxy says {proxy.status}"]}).encode()
                    self._reply(proxy.status, {"Content-Type": "application/json"}, data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body, headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    self._reply(answer.status, dict(answer.getheaders()), data)
                except OSError:
                    self.close_connection = True
                finally:
                    conn.close()

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                proxy.answered.append((time.time(), self.path, self.caller, status))
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "connection",
                                            "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class Blackhole:
    """A listening socket that accepts connections (the kernel completes the handshake)
    and never answers: a node that hangs, at the TCP level."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.addr = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="session")
def raft_cluster() -> Iterator[Cluster]:
    """One real 3-node OpenBao raft cluster for the test session."""
    with start_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(raft_cluster: Cluster) -> Cluster:
    """The session's cluster, every node up and unsealed (a test may kill or seal one)."""
    raft_cluster.settled()
    return raft_cluster
