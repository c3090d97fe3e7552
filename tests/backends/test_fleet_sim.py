"""scripts/fleet-sim, small: a few machines against a real 3-node OpenBao cluster through a
leader failover and an outage. The figures of a full run are in docs/reliability.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
