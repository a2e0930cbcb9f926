"""Cost of editing: per-edit wall time over a long stream, its growth, the editor's overhead
over the forward+backward passes it contains, state size and peak memory."""

from __future__ import annotations

import logging
import random
import resource
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from editscope.config import ScopeEditConfig, load_preset
from editscope.editors.scopeedit import RecursiveEditor
from editscope.editors.registry import EDITORS as REGISTRY
from editscope.editors.registry import build_editor
from editscope.types import EditRequest

logger = logging.getLogger(__name__)

PROMPTS = ("what color is this object?", "what shape is this?", "which city is this from?", "who made this?")
ANSWERS = ("red circle", "green square", "blue star", "yellow triangle", "black striped", "white dotted")
# The registry's editors this benchmark can take apart: ScopeEdit-style editors, whose edit is
# ``steps_per_edit`` forward+backward passes to the ``B`` matrices (the overhead figures divide by
# those) under a ScopeEditConfig. Built through the registry.
EDITORS: tuple[str, ...] = tuple(name for name, entry in REGISTRY.items() if issubclass(entry.editor, RecursiveEditor))


def check_editor(name: str) -> None:
    """Raise ``ValueError`` unless the cost benchmark can run editor ``name``."""
    if name in EDITORS:
        return
    if name in REGISTRY:
        raise ValueError(
            f"the cost benchmark cannot measure editor {name!r}: it times ScopeEdit-style edits "
            f"(steps_per_edit forward+backward passes on B); choose from {sorted(EDITORS)}"
        )
    raise ValueError(f"unknown editor {name!r}; choose from {sorted(EDITORS)}")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _requests(n: int, seed: int, image_size: int) -> list[EditRequest]:
    rng = random.Random(seed)
    gen = np.random.RandomState(seed)
    requests = []
    for i in range(n):
        pixels = gen.randint(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
        requests.append(
            EditRequest(
                prompt=rng.choice(PROMPTS),
                target=f"{rng.choice(ANSWERS)} {i % 97}",
                image=Image.fromarray(pixels),
            )
        )
    return requests


def _fwd_bwd_seconds(editor: Any, request: EditRequest, repeats: int) -> float:
    """Median time of one forward + backward to the ``B`` matrices on an edit input (what each
    edit step contains), measured on the live editor."""
    inputs = editor.vlm.encode(request.image, request.prompt, request.target)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with editor._trainable() as params:
            loss = editor._loss(inputs)
            torch.autograd.grad(loss, params, allow_unused=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run_cost(
    vlm_factory: Callable[[], Any],
    *,
    edits: int = 1000,
    editor: str = "scopeedit",
    config: ScopeEditConfig | None = None,
    seed: int = 0,
    image_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Apply ``edits`` synthetic edits and return the cost figures as a dict. A reference prior
    (``reference_weight``) changes only the values in ``P``, never the work of an edit, so it is
    left out here (no reference set is folded)."""
    check_editor(editor)
    config = (config or load_preset("tiny")).replace(reference_weight=0.0)
    vlm = vlm_factory()
    ed = build_editor(editor, vlm, config)
    requests = _requests(edits, seed, image_size)
    torch.manual_seed(seed)
    for request in requests[:3]:  # warm-up on throwaway edits, then start clean
        ed.edit(request)
    ed.reset()
    fwd_bwd_start = _fwd_bwd_seconds(ed, requests[0], repeats=30)
    state_first = ed.state_bytes()
    rss_start = _peak_rss_bytes()
    times = []
    for request in tqdm(requests, desc=f"{editor} edits", disable=not progress, unit="edit"):
        times.append(ed.edit(request).wall_time_s)
        if len(times) == 100:
            rss_after_100 = _peak_rss_bytes()
    fwd_bwd_end = _fwd_bwd_seconds(ed, requests[-1], repeats=30)
    window = min(100, len(times))
    first = statistics.median(times[:window])
    last = statistics.median(times[-window:])
    fwd_bwd = statistics.median([fwd_bwd_start, fwd_bwd_end])
    median = statistics.median(times)
    return {
        "editor": editor,
        "edits": edits,
        "steps_per_edit": config.steps_per_edit,
        "first100_median_s": first,
        "last100_median_s": last,
        "growth_ratio": last / first,
        "median_s": median,
        "p95_s": _percentile(times, 95),
        "fwd_bwd_median_s": fwd_bwd,
        "fwd_bwd_start_s": fwd_bwd_start,
        "fwd_bwd_end_s": fwd_bwd_end,
        "overhead_ratio": median / (config.steps_per_edit * fwd_bwd),
        "state_bytes_first": state_first,
        "state_bytes_last": ed.state_bytes(),
        "peak_rss_start_bytes": rss_start,
        "peak_rss_after_100_bytes": rss_after_100 if len(times) >= 100 else None,
        "peak_rss_end_bytes": _peak_rss_bytes(),
        "torch_threads": torch.get_num_threads(),
    }
