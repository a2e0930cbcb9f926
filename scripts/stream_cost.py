"""Edit cost at the start and the end of a bench stream, per editor: median edit time, mean
steps per edit and time per step over the first and the last WINDOW edits (with ``rehearse``,
also the mean number of earlier facts rewritten after each edit, whose steps the edit time holds
but the step count does not), and the editor state at the first and the last edit.

    python scripts/stream_cost.py docs/results/world-test-1000/merged/results.json
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--window", type=int, default=100)
    args = parser.parse_args()
    results = json.load(open(args.results))
    for name, entry in results["editors"].items():
        rows = entry["edits"]
        parts = []
        for label, window in (("first", rows[: args.window]), ("last", rows[-args.window:])):
            times = [r["edit_time_s"] for r in window]
            steps = [r.get("steps") or 0 for r in window]
            per_step = sum(times) / sum(steps) if sum(steps) else None
            rehearsed = [r.get("rehearsed") or 0 for r in window]
            parts.append(f"{label} {len(window)}: median {statistics.median(times):.2f} s, "
                         f"{statistics.mean(steps):.1f} steps, "
                         + (f"{per_step:.3f} s/step" if per_step else "no steps")
                         + (f", {statistics.mean(rehearsed):.2f} rewritten" if any(rehearsed) else ""))
        state = [r.get("state_bytes") for r in rows if r.get("state_bytes") is not None]
        memory = f"; state {state[0] / 2**20:.1f} -> {state[-1] / 2**20:.1f} MiB" if state else ""
        print(f"{name}: " + "; ".join(parts) + memory)


if __name__ == "__main__":
    main()
