"""The edits a bench run with ``--scope-examples N`` refused as scope conflicts, and why.

    python scripts/scope_conflicts.py RUN/results.json [RUN2/results.json ...]

ScopeMemory refuses an edit (``ScopeConflict``) when one of its ``never`` examples cannot be
kept apart from the edit. Under the nearest-positive rule that is a ``never`` example within the
margin of an ``also`` example (near-duplicates in the image key), or one on the edit's own image
with as close a question. Runs of the first rule (one image threshold per slot) refused where a
look-alike render was closer to the edit's image than a render of the edit's own subject. For
each run this prints how many edits were refused and, per kind, the similarities read from the
refusal messages the bench records per edit.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Iterator

NEVER = re.compile(r"image similarity (-?\d+\.\d+) to the edit, and the image threshold may rise to (-?\d+\.\d+)")
# since the nearest-positive rule: a never example within the margin of an also example
APART = re.compile(r"cannot be kept apart from also example \d+ .*?: image similarity (-?\d+\.\d+) between them")
OWN = "shows the edit's own image"


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
        apart = [float(m.group(1)) for e in refused if (m := APART.search(e["rejected"]))]
        if apart:
            lines.append(f"  never example as near an also example as the margin allows: {len(apart)} "
                         f"(image similarity between them median {statistics.median(apart):.3f}, min {min(apart):.3f})")
        own = sum(OWN in e["rejected"] for e in refused)
        if own:
            lines.append(f"  never example on the edit's own image with a question as close as the edit's: {own}")
        others = len(refused) - len(pairs) - len(apart) - own
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
