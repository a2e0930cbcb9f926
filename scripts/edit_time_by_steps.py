"""Does edit time grow with the stream? Per block of edits, the median edit time of the edits
that stopped early (at most ``--short`` optimiser steps) and of those that ran long (at least
``--long`` steps), from a bench results.json. The bench's start/end medians mix both kinds, so a
block with more long edits has a higher median even when no edit got slower.

    python scripts/edit_time_by_steps.py docs/results/world-test-1000/merged/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--editor", default="scopememory")
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--short", type=int, default=5)
    parser.add_argument("--long", type=int, default=20)
    args = parser.parse_args()
    edits = json.load(open(args.results))["editors"][args.editor]["edits"]

    def median(rows: list[dict]) -> str:
        return f"{1000 * statistics.median(r['edit_time_s'] for r in rows):7.1f} ms" if rows else "      n/a"

    print(f"{'edits':>11} | {'all':>10} | {'short':>4} {'median':>10} | {'long':>4} {'median':>10} | mean steps")
    for start in range(0, len(edits), args.block):
        rows = edits[start:start + args.block]
        short = [r for r in rows if r["steps"] <= args.short]
        long = [r for r in rows if r["steps"] >= args.long]
        steps = statistics.mean(r["steps"] for r in rows)
        print(f"{start + 1:>5}-{start + len(rows):<5} | {median(rows)} | {len(short):>4} {median(short)} | "
              f"{len(long):>4} {median(long)} | {steps:.1f}")
    short = [r for r in edits if r["steps"] <= args.short]
    long = [r for r in edits if r["steps"] >= args.long]
    mean = 1000 * statistics.mean(r["edit_time_s"] for r in edits)
    print(f"{'all':>11} | {median(edits)} | {len(short):>4} {median(short)} | {len(long):>4} {median(long)} | "
          f"{statistics.mean(r['steps'] for r in edits):.1f}; mean edit {mean:.1f} ms")
    for metric in ("t_gen", "m_gen"):  # each edit's online score (right after it), by kind
        means = [statistics.mean(v) if (v := [r[metric] for r in rows if r.get(metric) is not None]) else float("nan")
                 for rows in (short, long)]
        print(f"online {metric}: short {means[0]:.3f}, long {means[1]:.3f}")


if __name__ == "__main__":
    main()
