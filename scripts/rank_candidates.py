"""Rank tuning candidates by the mean of the issue's eight goal metrics after the stream.

Usage: python scripts/rank_candidates.py runs/t500/*.log
Reads the JSON lines printed by scripts/tune_builtin.py; near-miss leakage counts as 1 - leak.
"""

from __future__ import annotations

import json
import sys

GOALS = ("ret_rel", "ret_t_gen", "ret_m_gen", "ret_text_transfer", "ret_t_loc", "ret_m_loc",
         "ret_near_miss_leak", "ret_proper_share")


def goal_mean(row: dict) -> float:
    values = [1.0 - row[k] if k == "ret_near_miss_leak" else row[k] for k in GOALS]
    return sum(values) / len(values)


def main(paths: list[str]) -> None:
    rows = []
    for path in paths:
        with open(path) as handle:
            rows += [(json.loads(line), path) for line in handle if line.startswith("{")]
    for row, path in sorted(rows, key=lambda r: -goal_mean(r[0])):
        print(f"{goal_mean(row):.3f}  {row['candidate']}  ({path})")


if __name__ == "__main__":
    main(sys.argv[1:])
