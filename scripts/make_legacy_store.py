"""Build ``tests/fixtures/legacy_store``: a ScopeEdit store written by the code of commit 0ebb6cb,
before the sectioned configuration (a flat ``store.json`` config) and before namespaced editor
state (``reedit.``/``rehearse.`` string keys in its snapshots), for
``tests/integration/test_store_legacy.py``.

Run from the repository root (it needs git and the commit in the history)::

    OMP_NUM_THREADS=1 python scripts/make_legacy_store.py [--commit 0ebb6cb] [OUT]

It extracts the old ``src`` with ``git archive``, saves the tiny LLaVA checkpoint and the images
with today's test helpers (``tests/integration/store_support.py``; the test rebuilds them the same
way, and opening the store checks the checkpoint's fingerprint), then runs the old code in a
subprocess (``PYTHONPATH`` set to the old ``src``): a store with four edits under a flat preset
(re-edit ``release``, ``rehearse: 1``, ``stop_loss: 0.1``, the reference prior from a small JSON
file), a named snapshot, the logits and answers of that state; the store is copied to ``OUT/store``
there. Then the old code reopens it and makes one more edit (a re-edit of the last fact), and
records its journal row and the logits after it. What the old code gave goes to
``OUT/expected.json`` and ``OUT/expected.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0ebb6cb"

# The flat options the old ScopeEditConfig took (the tiny preset, fewer steps, and the options
# beyond the paper whose state the old code packed into string keys).
PRESET_YAML = """\
rank_local: 6
rank_shared: 4
alpha: 32
top_k: 3
eta: 3.0
n_last_layers: 2
projector_eta: 0.01
shared_layers: 2
steps_per_edit: 3
reedit: release
reedit_memory: 3
stop_loss: 0.1
eta_growth: 1.1
rehearse: 1
rehearse_write: replace
rehearse_steps: 2
reference_weight: 2.0
reference_size: 3
"""
REFERENCE = [
    {"prompt": "what is in the picture ?", "answer": "a tree", "image": "images/image3.png"},
    {"prompt": "where do cats live ?", "answer": "in houses"},
    {"prompt": "how many are there ?", "answer": "two"},
]
# After the four edits of store_support.EDITS: the last fact (one the re-edit memory of 3 holds)
# edited again, on its image.
NEXT_EDIT = {"prompt": "where is it ?", "target": "red", "image": 3}
TEXT_PROBE = ("describe the picture please .", "a dog")
QUERIES = [(0, "what color is the object in the image ?"), (1, "what is this ?"), (None, "where is it ?")]

OLD_CODE = r'''
import hashlib, json, shutil, sys
from pathlib import Path
import torch
torch.set_num_threads(1)  # as tests/conftest.py runs the tests
from safetensors.torch import save_file
import editscope
from editscope.store import EditStore
from editscope.types import EditRequest

work, out = Path(sys.argv[1]), Path(sys.argv[2])
assert Path(editscope.__file__).is_relative_to(work / "old"), editscope.__file__  # the old code
plan = json.loads((work / "plan.json").read_text())
images = [work / "images" / f"image{i}.png" for i in range(4)]
image = lambda i: None if i is None else images[i]

def logits(editor):
    """The logits of the probes (every edit's input, one text prompt): the full sequences' sha256
    and each probe's last position."""
    probes = [(images[i], p, t) for i, (p, t) in enumerate(plan["edits"])]
    rows = [editor.logits(*probe) for probe in [*probes, (None, *plan["text_probe"])]]
    full = torch.cat([r.reshape(-1) for r in rows]).contiguous()
    return hashlib.sha256(full.numpy().tobytes()).hexdigest(), torch.stack([r[-1] for r in rows]).contiguous()

def answers(store):
    return [store.query(image(i), p) for i, p in plan["queries"]]

expected, tensors = {}, {}
with EditStore.init(work / "store", work / "base", str(work / "preset.yaml"), editor="scopeedit",
                    snapshot_every=100, reference=work / "reference.json") as store:
    for i, (prompt, target) in enumerate(plan["edits"]):
        store.edit(EditRequest(prompt, target, image=images[i]), tags=("colour",) if i == 0 else ())
    store.snapshot("four")
    expected["logits_sha256"], tensors["logits"] = logits(store.editor)
    expected["answers"] = answers(store)
    expected["results"] = [r.result for r in store.log()]
    expected["state_bytes"] = store.editor.state_bytes()
shutil.copytree(work / "store", out / "store", ignore=shutil.ignore_patterns("lock"))
with EditStore.open(work / "store") as store:
    assert logits(store.editor)[0] == expected["logits_sha256"]  # the old code replays to the same state
    nxt = plan["next_edit"]
    record = store.edit(EditRequest(nxt["prompt"], nxt["target"], image=images[nxt["image"]]))
    expected["next_edit"] = {"id": record.id, "status": record.status, "result": record.result}
    expected["logits_sha256_after_next_edit"], tensors["logits_after_next_edit"] = logits(store.editor)
    expected["answers_after_next_edit"] = answers(store)
    expected["state_bytes_after_next_edit"] = store.editor.state_bytes()
save_file(tensors, str(out / "expected.safetensors"))
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "tests" / "fixtures" / "legacy_store"))
    parser.add_argument("--commit", default=COMMIT)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]
    import torch

    torch.set_num_threads(1)
    from store_support import EDITS, make_images, save_tiny_checkpoint

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "old").mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.commit, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work / "old")], input=archive, check=True)
        save_tiny_checkpoint(work / "base")
        make_images(work / "images")
        (work / "preset.yaml").write_text(PRESET_YAML)
        (work / "reference.json").write_text(json.dumps(REFERENCE))
        (work / "plan.json").write_text(json.dumps({"edits": EDITS, "next_edit": NEXT_EDIT, "queries": QUERIES,
                                                          "text_probe": TEXT_PROBE}))
        env = {**os.environ, "PYTHONPATH": str(work / "old" / "src"), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", OLD_CODE, str(work), str(out)], check=True, env=env, cwd=work)
    (out / "plan.json").write_text(json.dumps({"commit": args.commit, "preset": PRESET_YAML, "reference": REFERENCE,
                                               "edits": EDITS, "next_edit": NEXT_EDIT, "queries": QUERIES,
                                               "text_probe": TEXT_PROBE},
                                              indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size} bytes)")


if __name__ == "__main__":
    main()
