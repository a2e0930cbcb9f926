"""Time to open and verify a journal of N edits (default 10,000): the integrity chain's cost.

Builds the journal with the journal layer only (no model), each edit applied with a result
like the editor's, a snapshot every 10 edits, then times ``SQLiteJournal(path)`` plus
``verify()`` (every row's checksum and link) and the ``log`` read (``edits()``, which checks each
row it returns). Usage: ``python scripts/journal_chain_bench.py [--edits N] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from editscope.store import journal as jr
from editscope.store.journal import AnchorRecord, EditDraft, SQLiteJournal


def build(path: Path, edits: int) -> None:
    journal = SQLiteJournal(path, create=True)
    journal.add_snapshot("initial", "initial", "initial.safetensors", "0" * 64, [])
    result = {"loss_before": 5.1, "loss_after": 0.02, "active_groups": ["layers.1.mlp"], "gates": {},
              "wall_time_s": 0.3, "steps": 12, "rehearsed": 0}
    with journal.transaction():  # one transaction: building is not what is measured
        for i in range(1, edits + 1):
            edit_id = journal.add_edit(EditDraft(
                prompt=f"What is the object in picture {i}?", target=f"answer {i}", scope="auto",
                image_sha256=f"{i:064x}", tags=("bench",), rephrases=(f"Name the object in picture {i}.",),
                anchors=(AnchorRecord("Capital of France?", "Paris"),), config_hash="0123456789abcdef"))
            journal.set_status([edit_id], jr.APPLIED, result=result)
            if i % 10 == 0:
                journal.add_snapshot(f"auto-{i // 10}-e{i}", "auto", f"auto-{i}.safetensors", "0" * 64, range(1, i + 1))
    journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="Where to build the journal (default: a temporary folder).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        path = (args.dir or Path(temporary)) / "journal.sqlite"
        started = time.perf_counter()
        build(path, args.edits)
        print(f"built {args.edits} edits in {time.perf_counter() - started:.1f} s")
        timings = []
        for _ in range(3):  # the best of three: other processes share the machine
            started, cpu = time.perf_counter(), time.process_time()
            journal = SQLiteJournal(path)
            journal.verify()
            timings.append((time.perf_counter() - started, time.process_time() - cpu))
            journal.close()
        journal = SQLiteJournal(path)
        started = time.perf_counter()
        records = journal.edits()
        logged = time.perf_counter() - started
        journal.close()
        assert len(records) == args.edits
        wall, cpu = min(timings)
        print(f"open + verify {args.edits} edits: {wall:.3f} s wall, {cpu:.3f} s CPU (best of 3; load average "
              f"{os.getloadavg()[0]:.1f}); reading them all back, each row checked: {logged:.3f} s")


if __name__ == "__main__":
    main()
