"""The editor state as tensors: every site's ``B`` and ``P`` (``<site path>.<name>``), the edit
count (``editor.edits_applied``) and each installed option's state under its own namespace
(``<option>/<key>``, e.g. ``reedit/index``). State written before the namespaces existed is
migrated when it is read (``legacy``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from editscope.core.site import STATE_NAMES
from editscope.editors.scopeedit import legacy

if TYPE_CHECKING:
    from editscope.editors.scopeedit.core import RecursiveEditor

EDIT_COUNT_KEY = "editor.edits_applied"
NAMESPACE = "/"


def state_dict(editor: "RecursiveEditor") -> dict[str, torch.Tensor]:
    state = {
        f"{path}.{name}": getattr(site, name).detach().clone()
        for path, site in editor.sites.items()
        for name in STATE_NAMES
    }
    state[EDIT_COUNT_KEY] = torch.tensor(editor.edits_applied, dtype=torch.int64)
    for plugin in editor.hooks.plugins:
        state.update({f"{plugin.name}{NAMESPACE}{k}": v for k, v in plugin.state_dict().items()})
    return state


def state_bytes(editor: "RecursiveEditor") -> int:
    sites = sum(getattr(s, n).numel() * getattr(s, n).element_size()
                for s in editor.sites.values() for n in STATE_NAMES)
    return sites + editor.hooks.state_bytes()


def load_state_dict(editor: "RecursiveEditor", state: dict[str, torch.Tensor]) -> None:
    """Check every part of ``state`` (sites, edit count, each option's state), then load it;
    nothing changes if any check fails."""
    state = legacy.migrate(state, editor.sites)
    expected = {f"{p}.{n}": getattr(s, n) for p, s in editor.sites.items() for n in STATE_NAMES}
    spaces: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        space, sep, rest = key.partition(NAMESPACE)
        if sep:
            spaces.setdefault(space, {})[rest] = tensor
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) - {EDIT_COUNT_KEY} if NAMESPACE not in k)
    if missing or unexpected:
        raise ValueError(
            f"editor state does not match this editor: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    plugins = editor.hooks.by_name()
    foreign = sorted(set(spaces) - set(plugins))
    if foreign:
        raise ValueError(f"editor state holds the state of {foreign}, options this editor's configuration "
                         "does not use")
    for key, target in expected.items():
        if tuple(state[key].shape) != tuple(target.shape):
            raise ValueError(f"editor state {key}: shape {tuple(state[key].shape)} != {tuple(target.shape)}")
        if not torch.isfinite(state[key]).all():
            raise ValueError(f"editor state {key} holds non-finite values")
    parsed = {name: plugin.read_state(spaces.get(name, {})) for name, plugin in plugins.items()}
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key].to(device=target.device, dtype=target.dtype))
    editor.edits_applied = int(state[EDIT_COUNT_KEY]) if EDIT_COUNT_KEY in state else 0
    for name, plugin in plugins.items():
        plugin.set_state(parsed[name])
