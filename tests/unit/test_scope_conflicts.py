"""scripts/scope_conflicts.py: refusals counted and their similarities read from the messages."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "scope_conflicts.py"
spec = importlib.util.spec_from_file_location("scope_conflicts", SCRIPT)
scope_conflicts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scope_conflicts)


def refusal(never: float, cap: float) -> str:
    return (f"never example 1 (b.png, 'Where?') is closer to the edit than also example 1 (a.png, 'Where?', "
            f"image similarity {cap:.3f}): image similarity {never:.3f} to the edit, and the image threshold may "
            f"rise to {cap:.3f} at most (a margin of 0.02 above a negative is needed); the edit is refused")


def test_refusals_are_counted_and_their_similarities_summarised(tmp_path):
    apart = ("never example 2 (n.png, 'When?') cannot be kept apart from also example 2 (a.png, 'When?'): image "
             "similarity 0.988 between them, and an input follows the edit only where ...")
    edits = [{"rejected": None}] * 6 + [{"rejected": refusal(0.9, 0.6)}, {"rejected": refusal(0.7, 0.6)},
                                        {"rejected": "never example 1 shows the edit's own image"},
                                        {"rejected": apart}, {"rejected": "something else"}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"config": {"scope_examples": 1}, "editors": {"scopememory": {"edits": edits}}}))
    lines = list(scope_conflicts.conflicts(path))
    assert lines[0].endswith("scopememory · scope examples 1: 5 of 11 edits refused (45.5%)")
    assert lines[1] == ("  image conflicts 2: never example's similarity to the edit median 0.800, cap from the also "
                        "examples median 0.600, never minus cap median 0.200 (min 0.100, max 0.300)")
    assert lines[2] == ("  never example as near an also example as the margin allows: 1 (image similarity between "
                        "them median 0.988, min 0.988)")
    assert lines[3] == "  never example on the edit's own image with a question as close as the edit's: 1"
    assert lines[4] == "  other refusals: 1"
