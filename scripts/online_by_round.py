"""Online scores by re-edit round: how well the k-th edit of the same fact is absorbed.

Usage: python scripts/online_by_round.py docs/results/world-test-1000/merged/results.json [metric]
Prints, per editor, the mean of the metric (default rel) over the edits of each round (round 0:
a fact's first edit, round 1: its first re-edit, ...), with the number of edits in brackets.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def main() -> None:
    path = sys.argv[1]
    metric = sys.argv[2] if len(sys.argv) > 2 else "rel"
    with open(path) as f:
        results = json.load(f)
    for name, entry in results["editors"].items():
        by_round: dict[int, list[float]] = defaultdict(list)
        for row in entry["edits"]:
            if row.get(metric) is not None:
                by_round[int(row["round"])].append(float(row[metric]))
        cells = [f"{r}: {statistics.mean(v):.3f} ({len(v)})" for r, v in sorted(by_round.items())]
        print(f"{name:10s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
