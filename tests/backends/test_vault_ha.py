"""The vault backend against a real 3-node OpenBao raft cluster (tests/support/
fixtures_raft.py): failover between the configured nodes when the active node is killed,
a sealed node, a standby's answer, a node that accepts connections and never answers, a node
that answers 5xx or 429, a redirect to another node. Each call runs the real console script
with a cache of its own, so every call really asks the cluster."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_openbao import free_port
from fixtures_raft import CLUSTER_KEY, CLUSTER_SECRET, Blackhole, Cluster, NodeProxy
from helpers import Run, keyhelper

pytestmark = pytest.mark.vault

DEADLINE = 5.0  # the default


def config(write_config, addrs: list[str], extra: str = "", top: str = "") -> None:  # type: ignore[no-untyped-def]
    write_config(f'{top}chain = ["vault"]\n[backends.vault]\ntype = "vault"\n'
                 f'path = "{CLUSTER_SECRET.split("/", 1)[1]}"\nmount = "secret"\nkv_version = 2\n'
                 f"addr = {json.dumps(addrs)}\n{extra}")


class Caller:
    """Runs keyhelper cold (a fresh cache each call), as a new machine would."""

    def __init__(self, tmp_path: Path, token: str):
        self.tmp_path = tmp_path
        self.token = token
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, again: bool = False) -> tuple[Run, float]:
        """``again``: the last call's cache (its backend state kept), its entry dropped."""
        with self.lock:
            self.count += 0 if again else 1
            cache = self.tmp_path / f"cache-{self.count}"
        for entry in cache.glob("*.entry") if again else ():
            entry.unlink()
        started = time.monotonic()
        run = keyhelper(env={"KEYHELPER_CACHE_DIR": str(cache), "VAULT_TOKEN": self.token})
        return run, time.monotonic() - started


@pytest.fixture
def call(tmp_path: Path, cluster: Cluster) -> Caller:
    return Caller(tmp_path, cluster.reader_token)


@pytest.fixture
def proxies(cluster: Cluster) -> Iterator[list[NodeProxy]]:
    made = [NodeProxy(addr) for addr in cluster.addrs]
    yield made
    for proxy in made:
        proxy.close()


def test_killing_the_active_node_during_a_burst_fails_no_call(
        cluster: Cluster, call: Caller, write_config) -> None:  # type: ignore[no-untyped-def]
    config(write_config, cluster.addrs)
    results: list[tuple[Run, float, bool]] = []
    killed = threading.Event()
    stop = time.monotonic() + 60

    def session() -> None:
        after_kill = 0
        while after_kill < 8 and time.monotonic() < stop:
            was_killed = killed.is_set()
            run, took = call()
            results.append((run, took, was_killed))
            after_kill += was_killed

    sessions = [threading.Thread(target=session) for _ in range(3)]
    for thread in sessions:
        thread.start()
    while len(results) < 6:  # the burst is under way
        time.sleep(0.05)  # poll interval, not synchronisation
    active = cluster.active()
    cluster.kill(active)
    killed.set()
    for thread in sessions:
        thread.join()
    failed = [(r.returncode, r.stderr) for r, _, _ in results if r.returncode != 0]
    assert failed == []
    assert {r.stdout for r, _, _ in results} == {CLUSTER_KEY + "\n"}
    assert sum(k for _, _, k in results) >= 24
    assert max(took for _, took, _ in results) < DEADLINE + 1.5  # process start on top


def test_a_sealed_node_is_passed_over(cluster: Cluster, call: Caller,
                                      write_config) -> None:  # type: ignore[no-untyped-def]
    first = cluster.nodes[0]
    cluster.seal(first)
    config(write_config, [first.addr, *cluster.addrs[1:]])
    run, took = call()
    assert (run.returncode, run.stdout, run.stderr) == (0, CLUSTER_KEY + "\n", "")
    assert took < 3


def test_every_node_sealed_is_a_clear_line(cluster: Cluster, call: Caller,
                                           write_config) -> None:  # type: ignore[no-untyped-def]
    standbys = [n for n in cluster.nodes if cluster.health(n) == 429]
    for node in standbys:
        cluster.seal(node)
    config(write_config, [n.addr for n in standbys])
    run, took = call()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from vault\n"
                          f"  vault failed: Vault at {','.join(n.addr for n in standbys)} is "
                          "sealed; ask its operators to unseal it\n")
    assert took < 3  # one round, not the 5 s deadline: no election unseals a node


def test_a_standby_alone_answers(cluster: Cluster, call: Caller,
                                 write_config) -> None:  # type: ignore[no-untyped-def]
    standby = next(n for n in cluster.nodes if cluster.health(n) == 429)
    config(write_config, [standby.addr])  # OpenBao standbys forward to the active node
    run, _ = call()
    assert (run.returncode, run.stdout, run.stderr) == (0, CLUSTER_KEY + "\n", "")


def test_a_node_that_never_answers_costs_at_most_its_share(
        cluster: Cluster, call: Caller, write_config) -> None:  # type: ignore[no-untyped-def]
    hole = Blackhole()
    try:
        config(write_config, [hole.addr, *cluster.addrs])
        run, took = call()
        assert (run.returncode, run.stdout, run.stderr) == (0, CLUSTER_KEY + "\n", "")
        assert took < DEADLINE
        # The node that answered is remembered: the next run does not wait on the hole.
        run, took = call(again=True)
        assert (run.returncode, run.stdout) == (0, CLUSTER_KEY + "\n")
        assert took < 1.5
    finally:
        hole.close()


def test_only_blackholed_nodes_end_by_the_deadline(call: Caller, write_config) -> None:  # type: ignore[no-untyped-def]
    holes = [Blackhole(), Blackhole()]
    try:
        config(write_config, [h.addr for h in holes], top="deadline = 2\n")
        run, took = call()
        assert (run.returncode, run.stdout) == (1, "")
        assert run.stderr.startswith("keyhelper: no key from vault\n  vault failed: Vault at "
                                     "http://127.0.0.1:")
        assert "did not answer within" in run.stderr
        assert took < 2 + 1.5
    finally:
        for hole in holes:
            hole.close()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_a_node_answering_an_error_status_is_passed_over(
        cluster: Cluster, call: Caller, proxies: list[NodeProxy], write_config,  # type: ignore[no-untyped-def]
        status: int) -> None:
    proxies[0].mode, proxies[0].status = "status", status
    config(write_config, [p.addr for p in proxies])
    run, _ = call()
    assert (run.returncode, run.stdout, run.stderr) == (0, CLUSTER_KEY + "\n", "")
    assert len(proxies[0].times) == 1
    assert len(proxies[1].times) == 1


def test_a_redirect_to_another_configured_node_is_followed(
        cluster: Cluster, call: Caller, proxies: list[NodeProxy], write_config) -> None:  # type: ignore[no-untyped-def]
    redirecting = proxies[0]
    redirecting.mode, redirecting.location = "redirect", proxies[1].addr
    config(write_config, [p.addr for p in proxies[:2]])
    run, _ = call()
    assert (run.returncode, run.stdout, run.stderr) == (0, CLUSTER_KEY + "\n", "")
    assert len(proxies[1].times) == 1


def test_a_redirect_to_a_node_not_configured_is_refused(
        cluster: Cluster, call: Caller, proxies: list[NodeProxy], write_config) -> None:  # type: ignore[no-untyped-def]
    redirecting = proxies[0]
    redirecting.mode, redirecting.location = "redirect", proxies[2].addr
    config(write_config, [redirecting.addr], "retries = 0\n")
    run, _ = call()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from vault\n"
                          f"  vault failed: Vault at {redirecting.addr} redirected to "
                          f"{proxies[2].addr} (another origin); not followed: the token "
                          "would go there\n")
    assert proxies[2].times == []


def test_a_cluster_where_nothing_listens_fails_at_once(call: Caller, write_config) -> None:  # type: ignore[no-untyped-def]
    addrs = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    config(write_config, addrs)
    run, took = call()
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == ("keyhelper: no key from vault\n"
                          f"  vault failed: cannot connect to Vault at {addrs[-1]} (connection "
                          "refused: is it running?)\n")
    assert took < 2.5  # one round, not the whole deadline
