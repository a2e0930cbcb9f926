"""Reading editor state written before the options had namespaces (editscope up to issue 20):
the re-edit memory as ``reedit.%06d.<fact key>.<site path>.<branch>`` and the rehearsal queue as
``rehearse.%06d.<fact key>.<field>`` (``scope`` an index into ``SCOPES``), parsed here once into
the namespaced form the plug-ins read (``reedit/...``, ``rehearsal/...``)."""

from __future__ import annotations

import torch

from editscope.editors.scopeedit.plugin import INDEX, index_tensor
from editscope.types import SCOPES

REEDIT_PREFIX = "reedit."
REHEARSE_PREFIX = "rehearse."


def is_legacy(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith((REEDIT_PREFIX, REHEARSE_PREFIX)) for k in state)


def migrate(state: dict[str, torch.Tensor], sites: dict) -> dict[str, torch.Tensor]:
    """``state`` with its string-packed entries in the namespaced form (unchanged without any)."""
    if not is_legacy(state):
        return state
    out = {k: v for k, v in state.items() if not k.startswith((REEDIT_PREFIX, REHEARSE_PREFIX))}
    reedit = _reedit({k: v for k, v in state.items() if k.startswith(REEDIT_PREFIX)}, sites)
    rehearsal = _rehearsal({k: v for k, v in state.items() if k.startswith(REHEARSE_PREFIX)})
    out.update({f"reedit/{k}": v for k, v in reedit.items()})
    out.update({f"rehearsal/{k}": v for k, v in rehearsal.items()})
    return out


def _reedit(entries: dict[str, torch.Tensor], sites: dict) -> dict[str, torch.Tensor]:
    facts: dict[tuple[int, str], list[tuple[str, str, torch.Tensor]]] = {}
    for name, tensor in entries.items():
        head, _, branch = name.rpartition(".")
        index, _, rest = head[len(REEDIT_PREFIX):].partition(".")
        key, _, path = rest.partition(".")
        if not index.isdigit() or path not in sites:
            raise ValueError(f"editor state {name}: not a re-edit memory entry of this editor")
        facts.setdefault((int(index), key), []).append((path, branch, tensor))
    state: dict[str, torch.Tensor] = {}
    index_rows = []
    for i, ((_, key), found) in enumerate(sorted(facts.items())):
        found.sort(key=lambda entry: (entry[0], entry[1]))
        for j, (_, _, tensor) in enumerate(found):
            state[f"{i}.{j}"] = tensor
        index_rows.append({"key": key, "entries": [[path, branch] for path, branch, _ in found]})
    if not entries:
        return {}
    state[INDEX] = index_tensor({"facts": index_rows})
    return state


def _rehearsal(entries: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    found: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for name, tensor in entries.items():
        index, _, rest = name[len(REHEARSE_PREFIX):].partition(".")
        key, _, field_name = rest.partition(".")
        if not index.isdigit() or not key or not field_name:
            raise ValueError(f"editor state {name}: not a rehearsal entry")
        found.setdefault((int(index), key), {})[field_name] = tensor
    if not found:
        return {}
    state: dict[str, torch.Tensor] = {}
    queue = []
    for i, ((_, key), fields) in enumerate(sorted(found.items())):
        scope_tensor = fields.pop("scope", None)
        scope_index = int(scope_tensor) if scope_tensor is not None and scope_tensor.numel() == 1 else -1
        for field_name, tensor in fields.items():
            state[f"{i}.{field_name}"] = tensor
        queue.append({"key": key, "scope": SCOPES[scope_index] if 0 <= scope_index < len(SCOPES) else None,
                      "tensors": list(fields)})
    state[INDEX] = index_tensor({"queue": queue})
    return state
