"""scripts/fleet-sim, small: a few machines against a real 3-node OpenBao cluster through a
leader failover and an outage. The figures of a full run are in docs/reliability.md."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.vault

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_fleet_rides_out_a_failover_and_an_outage(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "fleet-sim"), "--machines",
                          "3", "--sessions", "2", "--seconds", "40", "--failover-at", "0.4",
                          "--outage-at", "0.6", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out.read_text())
    assert figures["failed_calls"] == 0
    assert figures["helper_calls"] >= 3 * 2 * 2  # every session, at start and again
    # About one read per user per TTL (the window's edges make it noisy in a short run).
    assert 0 < figures["kv_reads_per_user_per_ttl_max"] <= 1.5
    assert figures["worst_latency_failover_s"] < 5 + 1.5  # the deadline, process start on top
    assert figures["jitter"] is True
    low, high = figures["backoff_stretch_min_max"]
    assert figures["backoffs_recorded"] == 0 or 1 <= low <= high <= 1.5
    # The run as a row of the table in docs/reliability.md, printed last.
    assert run.stdout.rstrip("\n").splitlines()[-1] == figures["table_row"]
    assert figures["table_row"].startswith("| 3 x 2 | yes | ")


def fleet_sim() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("fleet_sim", str(ROOT / "scripts" / "fleet-sim"))
    spec = importlib.util.spec_from_loader("fleet_sim", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_sim"] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


FAILING = 'chain = ["down"]\n[backends.down]\ntype = "command"\ncommand = ["false"]\n'


def test_no_jitter_runs_the_same_keyhelper_with_exact_backoffs(
        tmp_path: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    """--no-jitter (the comparison run): the console script under an interpreter that turns
    the jitter off, with no knob in keyhelper. A failing backend's record then asks for
    exactly the first backoff, 2 s; the real console script stretches it to 2-3 s."""
    sim = fleet_sim()
    write_config(FAILING)
    stretches = []
    for script in (sim.without_jitter(tmp_path), sim.SCRIPT):
        run = subprocess.run(script, capture_output=True, text=True, timeout=60, check=False,
                             stdin=subprocess.DEVNULL)
        assert (run.returncode, run.stdout) == (1, ""), run.stderr
        records = list(Path(os.environ["KEYHELPER_CACHE_DIR"]).rglob("*.failed"))
        assert len(records) == 1
        table = sim.records.load_unique(sim.FAILURE_FORMAT, records[0].read_bytes())
        seen = {(table["failed_at"], table["retry_at"], table["count"])}
        stretches += sim.stretches(seen)
        records[0].unlink()
    assert stretches[0] == 1.0
    assert 1.0 <= stretches[1] <= 1.5
