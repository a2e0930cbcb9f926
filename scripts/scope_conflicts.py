"""The edits a bench run with ``--scope-examples N`` refused as scope conflicts, and why.

    python scripts/scope_conflicts.py RUN/results.json [RUN2/results.json ...]

ScopeMemory refuses an edit (``ScopeConflict``) when one of its ``never`` examples cannot be
excluded by any image threshold under the cap its ``also`` examples set: the look-alike render is
closer to the edit's image than a render of the edit's own subject. For each run this prints how
many edits were refused, and, over the refusals, the image similarity of the offending ``never``
example to the edit against the cap (the lowest ``also`` similarity), read from the refusal
messages the bench records per edit.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Iterator

NEVER = re.compile(r"image similarity (-?\d+\.\d+) to the edit, and the image threshold may rise to (-?\d+\.\d+)")


def conflicts(path: Path) -> Iterator[str]:
    results = json.loads(path.read_text())
    n = results["config"].get("scope_examples", 0)
    for editor, run in results["editors"].items():
        edits = run["edits"]
        refused = [e for e in edits if e.get("rejected")]
        lines = [f"{path} · {editor} · scope examples {n}: {len(refused)} of {len(edits)} edits refused "
                 f"({len(refused) / max(len(edits), 1):.1%})"]
        pairs = [tuple(map(float, m.groups())) for e in refused if (m := NEVER.search(e["rejected"]))]
        if pairs:
            never, cap = [p[0] for p in pairs], [p[1] for p in pairs]
            gap = [a - b for a, b in pairs]
            lines.append(f"  image conflicts {len(pairs)}: never example's similarity to the edit median "
                         f"{statistics.median(never):.3f}, cap from the also examples median {statistics.median(cap):.3f}, "
                         f"never minus cap median {statistics.median(gap):.3f} (min {min(gap):.3f}, max {max(gap):.3f})")
        others = len(refused) - len(pairs)
        if others:
            lines.append(f"  other refusals: {others}")
        yield from lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    for path in parser.parse_args().results:
        for line in conflicts(path):
            print(line)


if __name__ == "__main__":
    main()
