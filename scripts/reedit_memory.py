"""How much the re-edit memory of ``reedit: replace`` holds on the built-in model: the writes as
the editor keeps them (dense or as factors, ``compact_write``) against the same writes dense.

    python scripts/reedit_memory.py --edits 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from editscope.config import load_preset
from editscope.editors.reference import load_reference
from editscope.editors.registry import build_editor
from editscope.evaluation.data import load_records
from editscope.evaluation.protocol import ProtocolConfig, anchored_request
from editscope.models import load
from editscope.world import builtin_path, load_world, write_edits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vlm = load("builtin")
    config = load_preset("builtin")
    with tempfile.TemporaryDirectory() as tmp:
        records = write_edits(load_world(builtin_path()), "dev", Path(tmp))
        cases = load_records("world", Path(records), Path(records).parent)[: args.edits]
        editor = build_editor("scopeedit", vlm, config, reference=load_reference("world", "builtin", config.reference_size))
        protocol = ProtocolConfig(exact_match=False, progress=False)
        for case in cases:
            editor.edit(anchored_request(case, protocol))
    kept = dense = factored = writes = 0
    for folded in editor.options["reedit"].facts.values():
        for write in folded.writes:
            stored = write.value
            target = getattr(editor.sites[write.path], write.name)
            writes += 1
            factored += tuple(stored.shape) != tuple(target.shape)
            kept += stored.numel() * stored.element_size()
            dense += target.numel() * target.element_size()
    print(f"{len(editor.options['reedit'].facts)} facts, {writes} writes ({factored} kept as factors): "
          f"{kept / 2**20:.2f} MiB kept, {dense / 2**20:.2f} MiB dense ({dense / max(kept, 1):.2f}x); "
          f"editor state {editor.state_bytes() / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
