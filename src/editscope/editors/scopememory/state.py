"""ScopeMemory's state as flat tensors: the slot tables (``scopememory.slots.*``), each site's
slot writes (``scopememory.site.<path>.*``), the router (``scopememory.router.*``) and the edit
count, and the image keys of the slots' scope examples (``scopememory.examples.<kind>.*``).
States saved before image whitening existed have no whitening tensors and load with centred
keys; states saved before scope examples existed have no threshold caps and load with the global
cap; states saved before examples were kept as keys have no example tables, and their slots keep
the thresholds they were calibrated with."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from editscope.editors.scopememory.editor import ScopeMemory

PREFIX = "scopememory."
EDIT_COUNT_KEY = "editor.edits_applied"
ROUTER_NAMES = ("centre_text", "centre_image", "reference_text", "reference_image", "reference_has_image")
WHITENING_NAMES = ("whiten_basis", "whiten_scale")  # absent from states saved before image whitening
CAP_NAMES = ("cap_text", "cap_image")  # absent from states saved before scope examples
ANSWER_KEY = f"{PREFIX}router.reference_answer"  # absent from states saved before reference_agreement


def _site_names(editor: "ScopeMemory") -> dict[str, str]:
    """Internal table name -> state key of every per-site table."""
    return {f"{i}.{t}": f"{PREFIX}site.{path}.{t}" for i, path in enumerate(editor.memory.paths)
            for t in ("local_u", "local_v", "shared_u", "shared_v")}


def memory_state(editor: "ScopeMemory") -> dict[str, torch.Tensor]:
    """The editor's state: the slot tables, the per-site writes, the router's centres, whitening
    and reference keys, and the edit count."""
    slots = editor.memory.slots
    sites = _site_names(editor)
    state = {(sites[k] if k in sites else f"{PREFIX}slots.{k}"): v for k, v in slots.state().items()}
    router = dict(zip(ROUTER_NAMES, (editor.memory.centre_text, editor.memory.centre_image, *editor.reference)))
    router.update(whiten_basis=editor.memory.whiten_basis, whiten_scale=editor.memory.whiten_scale)
    state.update({f"{PREFIX}router.{k}": v.detach().clone() for k, v in router.items()})
    state[ANSWER_KEY] = editor.reference_answers.detach().clone()
    for kind, table in editor.memory.examples.items():  # only where there are any: a state without
        if table.n:                                     # examples is what it was before they existed
            state.update({f"{PREFIX}examples.{kind}.{k}": v for k, v in table.state().items()})
    state[EDIT_COUNT_KEY] = torch.tensor(editor.edits_applied, dtype=torch.int64)
    return state


def load_memory_state(editor: "ScopeMemory", state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`memory_state` wrote (a state without whitening loads with centred keys)."""
    slots = editor.memory.slots
    state = dict(state)
    examples = _load_examples(editor, state)
    sites = _site_names(editor)
    names = {(sites[k] if k in sites else f"{PREFIX}slots.{k}"): k for k in slots.shapes}
    caps = {f"{PREFIX}slots.{k}" for k in CAP_NAMES}
    if not caps & set(state):
        names = {key: name for key, name in names.items() if key not in caps}
    expected = set(names) | {f"{PREFIX}router.{k}" for k in ROUTER_NAMES} | {EDIT_COUNT_KEY}
    whitening_keys = {f"{PREFIX}router.{k}" for k in WHITENING_NAMES}
    if whitening_keys <= set(state):
        expected |= whitening_keys
    if ANSWER_KEY in state:
        expected.add(ANSWER_KEY)
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"editor state does not match this ScopeMemory: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    rows = {state[k].shape[0] for k in names}
    if len(rows) != 1:
        raise ValueError(f"editor state: slot tables disagree on the number of slots {sorted(rows)}")
    n = rows.pop()
    table = {}
    for key, name in names.items():
        shape, _ = slots.shapes[name]
        if tuple(state[key].shape[1:]) != shape:
            raise ValueError(f"editor state {key}: shape {tuple(state[key].shape)} != ({n}, *{shape})")
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise ValueError(f"editor state {key} holds non-finite values")
        table[name] = state[key]
    device = editor.memory.device
    router = [state[f"{PREFIX}router.{k}"].to(device) for k in ROUTER_NAMES]
    answers = state.get(ANSWER_KEY)
    if answers is None:  # an older state: no reference answers, so none is left out
        answers = torch.zeros(router[2].shape[0], dtype=torch.int64)
    if answers.dtype != torch.int64 or answers.shape != (router[2].shape[0],):
        raise ValueError(f"editor state {ANSWER_KEY}: {answers.dtype} {tuple(answers.shape)} does not fit "
                         f"{router[2].shape[0]} reference keys")
    for name in CAP_NAMES:
        if name not in table:
            table[name] = torch.full((n,), editor.memory.limits.cap)
    for kind, rows in examples.items():
        if rows and int(rows["owner"].max()) >= n:
            raise ValueError(f"editor state: a {kind} example belongs to slot {int(rows['owner'].max())} of {n}")
    slots.load(table, n)
    for kind, store in editor.memory.examples.items():
        rows = examples.get(kind)
        store.load(rows or {k: torch.zeros((0, *shape), dtype=dtype) for k, (shape, dtype) in store.shapes.items()},
                   rows["owner"].shape[0] if rows else 0)
    editor.memory.centre_text, editor.memory.centre_image = router[0].float(), router[1].float()
    if whitening_keys <= set(state):
        basis, scale = (state[f"{PREFIX}router.{k}"].to(device).float() for k in WHITENING_NAMES)
        if basis.ndim != 2 or basis.shape[1] != router[0].shape[0] or scale.shape != (basis.shape[0],):
            raise ValueError(f"editor state: whitening shapes {tuple(basis.shape)} and {tuple(scale.shape)} "
                             f"do not fit keys of width {router[0].shape[0]}")
    else:
        basis, scale = torch.zeros(0, router[0].shape[0], device=device), torch.zeros(0, device=device)
    editor.memory.whiten_basis, editor.memory.whiten_scale = basis, scale
    editor.reference = (router[2].float(), router[3].float(), router[4].bool())
    editor.reference_answers = answers.to(device)
    editor.edits_applied = int(state[EDIT_COUNT_KEY])


def _load_examples(editor: "ScopeMemory", state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The example tables in ``state``, checked, and taken out of it (none in older states)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for kind, table in editor.memory.examples.items():
        keys = {f"{PREFIX}examples.{kind}.{k}": k for k in table.shapes}
        present = keys.keys() & state.keys()
        if not present:
            continue
        offset = f"{PREFIX}examples.{kind}.offset"
        if offset in keys and offset not in present and f"{PREFIX}examples.{kind}.owner" in present:
            # a state written before the offsets: every positive counted at its cosine
            state[offset] = torch.zeros(state[f"{PREFIX}examples.{kind}.owner"].shape[0])
            present = present | {offset}
        if present != keys.keys():
            raise ValueError(f"editor state: the {kind} example table lacks {sorted(keys.keys() - present)}")
        rows = {name: state.pop(key) for key, name in keys.items()}
        image, owner = rows["image"], rows["owner"]
        width = table.shapes["image"][0][0]
        if image.ndim != 2 or image.shape[1] != width or owner.shape != (image.shape[0],):
            raise ValueError(f"editor state: {kind} example shapes {tuple(image.shape)} and {tuple(owner.shape)} "
                             f"do not fit keys of width {width}")
        if not torch.isfinite(image).all() or (owner.numel() and int(owner.min()) < 0):
            raise ValueError(f"editor state: the {kind} example table holds non-finite keys or negative owners")
        if "offset" in rows and (rows["offset"].shape != owner.shape or not torch.isfinite(rows["offset"]).all()
                                 or bool((rows["offset"] > 0).any())):
            raise ValueError(f"editor state: the {kind} example offsets must be finite, at most 0, one per example")
        out[kind] = rows
    return out
