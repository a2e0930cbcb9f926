"""scripts/routing_cost.py runs end to end on the tiny LLaVA (few slots, few repeats): it prints
a row per slot count and writes JSON with one row per count, the no-match input exact. No
timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "routing_cost.py"


def test_routing_cost_script_tiny(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny", "--slots", "1,5,300", "--repeats", "3", "--warmup", "1",
         "--json", str(out), "--plot", str(tmp_path / "cost.png")],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert any(line.startswith("bytes per slot:") for line in lines)
    for n in (1, 5, 300):
        assert any(line.split()[:1] == [str(n)] for line in lines), run.stdout
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.read_text())
    assert [row["slots"] for row in data["rows"]] == [0, 1, 5, 300]
    assert data["scan"]["slots"] == 300 and data["scan"]["bytes"] > 0  # 300 slots route through the scan
    assert data["bytes_per_slot"] > 0 and data["no_match_exact"] is True
    states = [row["state_bytes"] for row in data["rows"]]
    assert states == sorted(states) and states[-1] > states[1]
    for row in data["rows"]:
        for kind in ("no_match", "routed"):
            assert row[kind]["ms"] > 0 and row[kind]["ratio"] > 0
        if row["slots"]:
            assert row["routed_slot"] == 0 and row["no_match_slot"] == -1
