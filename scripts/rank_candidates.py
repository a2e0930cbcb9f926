"""Rank tuning candidates by the mean of the issue's eight goal metrics after the stream.

Usage: python scripts/rank_candidates.py runs/t500/*.log
Reads the JSON lines printed by scripts/tune_builtin.py; near-miss leakage counts as 1 - leak.
A bench report (a path ending in results.json) adds one row per editor: its retention at the
last checkpoint.
"""

from __future__ import annotations

import json
import sys

from editscope.evaluation.report import GOALS  # (metric, direction, target); leakage is "<="


def goal_mean(row: dict) -> float:
    """Mean of the goal metrics of a tune line (``ret_`` + metric); a "<=" goal counts as 1 - value."""
    values = [1.0 - row[f"ret_{key}"] if direction == "<=" else row[f"ret_{key}"] for key, direction, _ in GOALS]
    return sum(values) / len(values)


def main(paths: list[str]) -> None:
    rows = []
    for path in paths:
        with open(path) as handle:
            if path.endswith("results.json"):
                for name, editor in json.load(handle)["editors"].items():
                    last = max(editor["retention"], key=int)
                    row = {f"ret_{k}": v for k, v in editor["retention"][last].items()}
                    if any(row.get(f"ret_{key}") is None for key, _, _ in GOALS):
                        continue  # an editor without every goal metric (the unedited model)
                    rows.append(({**row, "candidate": f"{name} after {last}"}, path))
                continue
            lines = [json.loads(line) for line in handle if line.startswith("{")]
            rows += [(row, path) for row in lines if "ret_rel" in row]  # tune lines only
    for row, path in sorted(rows, key=lambda r: -goal_mean(r[0])):
        print(f"{goal_mean(row):.3f}  {row['candidate']}  ({path})")


if __name__ == "__main__":
    main(sys.argv[1:])
