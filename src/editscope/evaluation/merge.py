"""Merging bench runs of the same stream made in separate processes (``editscope bench-merge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

_SAME_RUN_KEYS = ("model", "data", "images", "edits", "facts", "checkpoints", "preset", "seed", "scope_threshold",
                  "exact_match", "record_anchors", "sibling_anchors", "scope_examples")
# what a results file written before a key existed meant by leaving it out
_RUN_KEY_DEFAULTS = {"facts": None, "sibling_anchors": False, "scope_examples": 0}
_HINTS = {"scope_examples": " (runs with different --scope-examples give the editors different edit requests; "
                            "they cannot be merged)"}


def _stream_key(stream: Sequence[dict[str, Any]]) -> list[tuple]:
    """A stream's identity across runs: each run writes its own copy of the records, so image
    paths are compared by file name."""
    return [tuple((k, Path(v).name if k == "image" and v else v) for k, v in sorted(row.items())) for row in stream]


def merge_results(parts: Sequence[dict[str, Any]], command: str, created: str,
                  replace: bool = False) -> dict[str, Any]:
    """One results structure from runs of the same stream in separate processes (editors split
    across cores). The runs must agree on the stream and on the settings in ``_SAME_RUN_KEYS``;
    an editor present in two parts is an error, unless ``replace``: then the later part's run of
    it replaces the earlier one (one editor re-run into a published merge), which the merged
    config records under ``replaced``. A part that is itself a merge contributes the commands
    it was merged from."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    editors: dict[str, Any] = {}
    replaced: list[dict[str, str]] = []
    for i, part in enumerate(parts):
        for key in _SAME_RUN_KEYS:
            value, expected = (p["config"].get(key, _RUN_KEY_DEFAULTS.get(key)) for p in (part, first))
            if value != expected:
                hint = _HINTS.get(key, "")
                raise ValueError(f"results {i} differ from results 0 in {key!r}: {value!r} != {expected!r}{hint}")
        if _stream_key(part["stream"]) != _stream_key(first["stream"]):
            raise ValueError(f"results {i} were run on a different stream of edits than results 0")
        for name, entry in part["editors"].items():
            if name in editors:
                if not replace:
                    raise ValueError(f"editor {name!r} appears in more than one of the merged results "
                                     "(--replace lets the later run replace the earlier)")
                replaced.append({"editor": name, "by": part["command"]})
            editors[name] = entry
    config = dict(first["config"])
    config.setdefault("scope_examples", 0)  # a file from before the option ran without examples
    config["editors"] = list(editors)
    config["editor_configs"] = {k: v for p in parts for k, v in p["config"].get("editor_configs", {}).items()}
    config["merged_from"] = [c for p in parts for c in p["config"].get("merged_from", [p["command"]])]
    if replaced:
        config["replaced"] = replaced
    return {"command": command, "created": created, "config": config, "stream": first["stream"],
            "editors": editors}
