"""Where near-miss leakage comes from on the world's records.

Usage: python scripts/near_miss_sources.py RESULTS.json [--model builtin] [--skip 100]

In a world split both members of a look-alike pair are edited (on different facts). A record's
near-miss probe asks the edited question on the look-alike's image; once the look-alike's own
record has been edited, that probe is also *another fact of the look-alike*, and a change in its
answer may come from the look-alike's edit rather than from a confusion of the two subjects.
This script splits each editor's near-miss leakage by whether the look-alike's record had been
edited: online (each edit scored right after it is made; "before" = the look-alike was edited
earlier in the stream), online from edit ``--skip`` on by whether the look-alike's record is in the
stream at all (the same stream positions for both sides; "never" needs ``bench --facts``, which
leaves records out), and at each retention checkpoint (the look-alike edited within the first N
edits). The records are rebuilt from the model's world (no images are written).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def lookalike_facts(model: str, split: str) -> dict[str, str]:
    """``{fact_id: fact_id of the look-alike's record}`` for the records of ``split``."""
    from editscope.world import builtin_path, load_world
    from editscope.world.edits import make_records

    world = load_world(builtin_path() if model == "builtin" else Path(model))
    records = make_records(world, split)
    by_subject = {r["subject"]: f"{split}:{r['record_id']}" for r in records}
    return {f"{split}:{r['record_id']}": by_subject.get(r["lookalike"], "") for r in records}


def _cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ({len(values)})" if values else "n/a (0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--model", default=None, help="model whose world made the records (default: the run's)")
    parser.add_argument("--skip", type=int, default=100, help="online split by stream membership from this edit on")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    data = results["config"]["data"]
    if not data.startswith("world:") or data.split(":", 1)[1] not in ("dev", "test"):
        raise SystemExit(f"{args.results}: data {data!r} is not world:dev or world:test")
    look = lookalike_facts(args.model or results["config"]["model"], data.split(":", 1)[1])
    order = [row["fact_id"] for row in results["stream"]]
    stream = set(order)
    print("near-miss leakage, split by whether the look-alike's record was edited (mean, n)")
    for name, entry in results["editors"].items():
        online: dict[bool, list[float]] = defaultdict(list)
        late: dict[bool, list[float]] = defaultdict(list)
        seen: set[str] = set()
        for index, row in enumerate(entry["edits"]):
            if row.get("near_miss_leak") is not None:
                online[look.get(row["fact_id"]) in seen].append(float(row["near_miss_leak"]))
                if index >= args.skip:
                    late[look.get(row["fact_id"]) in stream].append(float(row["near_miss_leak"]))
            seen.add(row["fact_id"])
        cells = [f"online: look-alike edited before {_cell(online[True])}, not yet {_cell(online[False])}",
                 f"online from edit {args.skip}: look-alike in the stream {_cell(late[True])}, "
                 f"never {_cell(late[False])}"]
        for checkpoint, rows in entry.get("retention_rows", {}).items():
            edited = set(order[: int(checkpoint)])
            kept: dict[bool, list[float]] = defaultdict(list)
            for row in rows:
                if row.get("near_miss_leak") is not None:
                    kept[look.get(row["fact_id"]) in edited].append(float(row["near_miss_leak"]))
            cells.append(f"after {checkpoint}: edited {_cell(kept[True])}, not {_cell(kept[False])}")
        print(f"{name:10s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
