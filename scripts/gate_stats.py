"""How open ScopeEdit's evidence gate was over a bench stream: the mean cos, support and g of
every gate an edit recorded (one per shared-branch group and edit), and the share of gates with
g above a threshold.

    python scripts/gate_stats.py runs/t8/c/c0/results.json docs/results/world-test-1000/merged/results.json
"""

from __future__ import annotations

import argparse
import json

from editscope.evaluation.report import GATE_OPEN, gate_summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+")
    parser.add_argument("--open", type=float, default=GATE_OPEN, help="g above this counts as open")
    args = parser.parse_args()
    for path in args.results:
        with open(path) as handle:
            results = json.load(handle)
        for name, entry in results["editors"].items():
            row = gate_summary(entry, args.open)
            if row is not None:
                print(f"{path} {name}: {row['gates']} gates, cos {row['cos']:.3f}, support {row['support']:.3f}, "
                      f"g {row['g']:.3f}, g > {args.open}: {row['open_share']:.3f}")


if __name__ == "__main__":
    main()
