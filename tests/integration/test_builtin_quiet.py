"""Loading the built-in model prints no transformers warning about image-processor backends.

transformers (5.x) warns once per process when code names ``CLIPImageProcessor`` while
torchvision is missing ("requires torchvision (not installed); falling back to
``CLIPImageProcessorPil``"). editscope named that class in ``world/modeling.py``, so every CLI
command that loaded the built-in model printed the warning. The check runs in a fresh
interpreter because the warning is emitted once per process and the fallback is then cached.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

_PROBE = r"""
import json, logging, warnings

records = []

class Collect(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())

logging.getLogger("transformers").addHandler(Collect(level=logging.WARNING))
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import editscope
    import editscope.cli.main  # the CLI entry point
    import editscope.world.evaluate  # what store and bench commands pull in
    import editscope.world.modeling
    import editscope.world.train
    import editscope.benchmarks.tiny
    from editscope.world import builtin_path, fixed_render, load_world

    vlm = editscope.load("builtin")
    world = load_world(builtin_path())
    image = fixed_render(world.subjects[0], "seen", 0, 0).resize((97, 71))
    vlm.logits(image, "What is this?", "a thing")
quiet = {"records": list(records), "warnings": [str(w.message) for w in caught]}

# Control: the capture does see the warning when the torchvision-backed name is used.
import transformers.utils.import_utils as iu
control = None
if not iu.is_torchvision_available():
    import transformers
    transformers.CLIPImageProcessor
    control = any("requires torchvision" in r for r in records[len(quiet["records"]):])
print("PROBE " + json.dumps({"quiet": quiet, "control": control}))
"""


def _is_backend_fallback(message: str) -> bool:
    return "requires torchvision" in message or "falling back to" in message


def test_loading_the_builtin_model_prints_no_backend_fallback_warning():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("PROBE "))
    result = json.loads(line[len("PROBE "):])
    quiet = result["quiet"]
    assert not [m for m in quiet["records"] if _is_backend_fallback(m)], quiet["records"]
    assert not [m for m in quiet["warnings"] if _is_backend_fallback(m)], quiet["warnings"]
    if result["control"] is not None:  # torchvision missing: the capture must see the control
        assert result["control"], "the probe's logging capture did not see the control warning"
