"""Compare two bench runs edit by edit: ``python scripts/compare_runs.py BEFORE/results.json AFTER/results.json``.

Every per-edit row (losses, steps, rehearsals, active groups, gates, state bytes and every
score), every retention row and every aggregate of each editor must be equal, exactly; only
what measures the machine rather than the editor (wall times, memory) is left out. The stream
must be the same (images by file name: each run writes its own copy). Prints one line per editor and each difference (the first ``--show`` of
them), and exits 1 on any difference, 0 when the runs agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

# what a run measures of the machine, not of the editor
MACHINE_FIELDS = frozenset({"edit_time_s", "rss_bytes", "peak_rss_bytes", "peak_gpu_bytes"})
MACHINE_PREFIXES = ("edit_time_",)


def _machine(key: str) -> bool:
    return key in MACHINE_FIELDS or key.startswith(MACHINE_PREFIXES)


def differences(a: Any, b: Any, where: str = "") -> Iterator[str]:
    """Every place where ``a`` and ``b`` differ (machine fields of a mapping skipped)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if _machine(str(key)):
                continue
            here = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                yield f"{here}: only in {'after' if key not in a else 'before'}"
                continue
            yield from differences(a[key], b[key], here)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{where}: {len(a)} entries before, {len(b)} after"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{where}[{i}]")
    elif type(a) is not type(b) or a != b:
        if not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):  # NaN == NaN here
            yield f"{where}: {a!r} before, {b!r} after"


def _stream(results: dict[str, Any]) -> list[Any]:
    """The edit stream; each run writes its own copy of the images, so they are compared by file name."""
    return [{k: Path(v).name if k == "image" and v else v for k, v in row.items()} if isinstance(row, dict) else row
            for row in results.get("stream") or []]


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """Differences per editor (and ``"stream"`` for the edit stream)."""
    found: dict[str, list[str]] = {"stream": list(differences(_stream(before), _stream(after), "stream"))}
    editors_a, editors_b = before.get("editors", {}), after.get("editors", {})
    for name in sorted(set(editors_a) | set(editors_b)):
        if name not in editors_a or name not in editors_b:
            found[name] = [f"editor {name} only in {'after' if name not in editors_a else 'before'}"]
            continue
        a, b = editors_a[name], editors_b[name]
        found[name] = [
            *differences(a.get("edits"), b.get("edits"), "edits"),
            *differences(a.get("retention_rows"), b.get("retention_rows"), "retention_rows"),
            *differences(a.get("online"), b.get("online"), "online"),
            *differences(a.get("retention"), b.get("retention"), "retention"),
            *differences({k: v for k, v in a.get("cost", {}).items() if "state" in k},
                         {k: v for k, v in b.get("cost", {}).items() if "state" in k}, "cost"),
        ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--show", type=int, default=10, help="differences shown per editor")
    args = parser.parse_args(argv)
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    found = compare(before, after)
    for name, diffs in found.items():
        if name == "stream":
            print(f"stream: {'same' if not diffs else f'{len(diffs)} differences'}")
        else:
            edits = len(after.get("editors", {}).get(name, {}).get("edits", []))
            print(f"{name}: {'identical' if not diffs else f'{len(diffs)} differences'} ({edits} edits)")
        for line in diffs[: args.show]:
            print(f"  {line}")
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
