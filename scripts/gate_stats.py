"""How open ScopeEdit's evidence gate was over a bench stream: the mean cos, support and g of
every gate an edit recorded (one per shared-branch group and edit), and the share of gates with
g above a threshold.

    python scripts/gate_stats.py runs/t8/c/c0/results.json docs/results/world-test-1000/merged/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+")
    parser.add_argument("--open", type=float, default=0.05, help="g above this counts as open")
    args = parser.parse_args()
    for path in args.results:
        with open(path) as handle:
            results = json.load(handle)
        for name, entry in results["editors"].items():
            gates = [g for row in entry["edits"] if row.get("gates") for g in row["gates"].values()]
            if not gates:
                continue
            mean = {key: statistics.mean(g[key] for g in gates) for key in ("cos", "support", "g")}
            share = statistics.mean(g["g"] > args.open for g in gates)
            print(f"{path} {name}: {len(gates)} gates, cos {mean['cos']:.3f}, support {mean['support']:.3f}, "
                  f"g {mean['g']:.3f}, g > {args.open}: {share:.3f}")


if __name__ == "__main__":
    main()
