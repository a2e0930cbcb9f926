"""Behaviour unchanged by the restructuring of the editors (plug-ins, sectioned configuration,
one registry): the same fixed-seed bench and cost runs, once with the code of an earlier commit
and once with the working tree, compared edit by edit.

Run from the repository root (it needs git and the commit in the history)::

    OMP_NUM_THREADS=1 python scripts/refactor_check.py [--commit 0ebb6cb] [--edits 50] [--out DIR]

It extracts the old ``src`` with ``git archive`` and runs, in subprocesses, with the old code
(``PYTHONPATH`` set to it) and with today's:

- ``editscope bench --data world:test --model builtin --editors scopeedit,more,grace --edits N
  --checkpoints 1,N --seed 0 --threads 1``, compared with ``scripts/compare_runs.py`` (every
  per-edit loss, step count, gate, state size and score, every retention row and aggregate,
  exactly; wall times and memory left out);
- ``editscope cost --model tiny-llava --edits 20 --json`` for ScopeEdit and M-ORE, whose state
  bytes must be equal.

Prints what differs and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0ebb6cb"
EDITORS = ("scopeedit", "more", "grace")
STATE_FIELDS = ("state_bytes", "state_bytes_start", "state_bytes_end")


def extract(commit: str, into: Path) -> Path:
    """The ``src`` tree of ``commit`` under ``into``."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def editscope(src: Path, *args: str) -> str:
    """Run ``editscope ARGS`` with the package at ``src``; returns its standard output."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    code = "import sys; from editscope.cli.main import main; sys.argv = ['editscope', *sys.argv[1:]]; main()"
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"editscope {' '.join(args)} with {src} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def run(src: Path, out: Path, edits: int) -> dict[str, dict]:
    editscope(src, "bench", "--data", "world:test", "--model", "builtin", "--editors", ",".join(EDITORS),
              "--edits", str(edits), "--checkpoints", f"1,{edits}", "--seed", "0", "--threads", "1", "--quiet",
              "--out", str(out / "bench"))
    costs = {}
    for editor in ("scopeedit", "more"):
        figures = json.loads(editscope(src, "cost", "--model", "tiny-llava", "--edits", "20", "--editor", editor,
                                       "--json"))
        costs[editor] = {k: v for k, v in figures.items() if "state" in k and "bytes" in k}
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="keep both runs here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="refactor-check-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "old").mkdir(exist_ok=True)
    old_src = extract(args.commit, work / "old")
    print(f"before: {args.commit} ({old_src}); after: the working tree ({ROOT / 'src'}); runs under {work}")
    before = run(old_src, work / "old", args.edits)
    after = run(ROOT / "src", work / "new", args.edits)
    compared = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_runs.py"),
                               str(work / "old" / "bench" / "results.json"), str(work / "new" / "bench" / "results.json")],
                              capture_output=True, text=True)
    print(compared.stdout.rstrip())
    same = compared.returncode == 0
    for editor in before:
        agree = before[editor] == after[editor]
        same = same and agree
        print(f"cost {editor}: state bytes {'equal' if agree else 'DIFFER'}: before {before[editor]}, after {after[editor]}")
    print("behaviour unchanged" if same else "behaviour CHANGED")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
