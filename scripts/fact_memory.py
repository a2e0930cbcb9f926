"""What the re-edit memory holds after a world:dev stream (the bench's stream, seed 0, re-edits
included; the edits' own requests, without the bench's anchors), and how many steps the edits
and the rehearsal rewrites took: per remembered fact, the code rows folded into the
preconditioners and the stored writes of ``B`` (floats), and the editor state split into the
sites, the facts and the rehearsal queue. Never run on world:test.

    python scripts/fact_memory.py --edits 120                  # the builtin preset
    python scripts/fact_memory.py --edits 120 'rehearse=0'
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tune_builtin import builtin_scopeedit  # scripts/ is on the path when this script runs

from editscope.evaluation.data import load_records
from editscope.evaluation.stream import build_stream
from editscope.world import builtin_path, load_world, write_edits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="?", default="")
    parser.add_argument("--edits", type=int, default=120)
    args = parser.parse_args()
    config, vlm, editor = builtin_scopeedit(args.overrides)
    steps: list[tuple[int, float]] = []  # every write in order (steps, loss after): an edit's, then its rewrites'
    write = editor._write

    def counted(*a, **k):
        result = write(*a, **k)
        steps.append((result[3], result[4]))
        return result

    editor._write = counted
    edit_steps, edit_held, rewrite_steps = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        records = write_edits(load_world(builtin_path()), "dev", Path(tmp))
        cases = build_stream(load_records("world", Path(records), Path(records).parent), args.edits, seed=0)
        for case in cases:
            steps.clear()
            editor.edit(case.request)
            edit_steps.append(steps[0][0])
            edit_held.append(steps[0][1] < config.stop_loss)
            rewrite_steps.extend(steps[1:])
    facts = list(editor.options["reedit"].facts.values())
    rows = [sum(c.code.shape[0] if c.code.dim() > 1 else 1 for c in f.codes) for f in facts]
    writes = [sum(w.value.numel() for w in f.writes) for f in facts]
    total = editor.state_bytes()
    fact_bytes = sum(t.numel() * t.element_size() for f in facts for t in f.tensors())
    queue_bytes = sum(t.numel() * t.element_size() for inputs, _ in editor.options["rehearsal"].queue.values()
                      for t in inputs.tensors.values())
    print(f"{len(cases)} world:dev edits, overrides {args.overrides or '(preset)'}")
    print(f"edit steps: mean {statistics.mean(edit_steps):.1f}; loss below stop_loss after the edit "
          f"{statistics.mean(edit_held):.2f}; rewrites {len(rewrite_steps)}")
    if rewrite_steps:
        taken = [n for n, _ in rewrite_steps]
        held = sum(loss < config.stop_loss for _, loss in rewrite_steps) / len(rewrite_steps)
        capped = sum(n >= config.steps_per_edit for n in taken) / len(taken)
        print(f"steps per rewrite mean {statistics.mean(taken):.1f}, median {statistics.median(taken):.0f}, "
              f"at the cap ({config.steps_per_edit}) {capped:.2f}; "
              f"loss below stop_loss after the rewrite {held:.2f}")
    print(f"facts remembered {len(facts)}: code rows per fact mean {statistics.mean(rows):.1f}, "
          f"write floats per fact mean {statistics.mean(writes):.0f}")
    print(f"state {total / 2**20:.1f} MiB: facts {fact_bytes / 2**20:.1f}, queue {queue_bytes / 2**20:.1f}, "
          f"sites and the rest {(total - fact_bytes - queue_bytes) / 2**20:.1f}")


if __name__ == "__main__":
    main()
