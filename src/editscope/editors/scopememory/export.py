"""Export of a ScopeMemory as a routed checkpoint that plain transformers loads.

Routing depends on the input, so static weights cannot hold the slots. The export therefore
writes four things:

- the base model, saved by ``save_pretrained`` with the slot sites taken out;
- the processor;
- ``slots.safetensors``: the active slots' keys, thresholds and per-site factors, the router's
  centres and constants, and each site's frozen bases ``A_l`` and ``A_g`` (stored once per
  site, not folded into every slot, so the file grows by ``(r + d_out) q`` floats per slot and
  site instead of ``(d_in + d_out) q``, and the write is computed in the editor's own order);
- ``modeling_scopememory.py`` (from ``modeling_template.py``): a subclass of the base class
  whose ``from_pretrained`` installs the same routing.

``config.json`` gets an ``auto_map`` entry for every transformers Auto class that maps the
base model's type to its class, so that, for example,
``AutoModelForImageTextToText.from_pretrained(directory, trust_remote_code=True)`` loads it
with no editscope import.
"""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

if TYPE_CHECKING:
    from editscope.editors.scopememory.editor import ScopeMemory

MODELING_FILE = "modeling_scopememory.py"
SLOTS_FILE = "slots.safetensors"
FORMAT = "editscope-scopememory/1"
CLASS_NAME = "ScopeMemoryRouted"
_BASE_LINE = 'BASE_CLASS = "LlavaForConditionalGeneration"  # set by the exporter'


def modeling_source(base_class: str) -> str:
    """The text of ``modeling_scopememory.py`` for a model of class ``base_class``."""
    text = (resources.files("editscope.editors.scopememory") / "modeling_template.py").read_text()
    if text.count(_BASE_LINE) != 1:
        raise RuntimeError("modeling_template.py lost its BASE_CLASS line")
    return text.replace(_BASE_LINE, f"BASE_CLASS = {base_class!r}  # set by the exporter")


def auto_classes(model: torch.nn.Module) -> list[str]:
    """The transformers Auto classes that map this model's ``model_type`` to its class."""
    import transformers

    model_type, name = model.config.model_type, type(model).__name__
    found = []
    for attr in sorted(dir(transformers)):
        if not attr.startswith("AutoModel"):
            continue
        mapping = getattr(getattr(transformers, attr, None), "_model_mapping", None)
        names = getattr(mapping, "_model_mapping", None)
        value = names.get(model_type) if isinstance(names, dict) else None
        if value == name or (isinstance(value, (list, tuple)) and name in value):
            found.append(attr)
    return found


def slot_tensors(editor: ScopeMemory) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of ``slots.safetensors`` (active slots only) and its metadata."""
    memory, vlm, cfg = editor.memory, editor.vlm, editor.config
    slots = memory.slots
    active = slots["active"].nonzero().flatten() if slots.n else torch.zeros(0, dtype=torch.long)
    tensors: dict[str, torch.Tensor] = {
        name: slots[name][active] for name in ("text", "image", "has_image", "shared", "tau_text", "tau_image")
    }
    tensors.update({
        "centre_text": memory.centre_text, "centre_image": memory.centre_image, "marker": memory.marker,
        "whiten_basis": memory.whiten_basis, "whiten_scale": memory.whiten_scale,
        "image_token_id": torch.tensor(memory.image_token_id, dtype=torch.long),
        "instance": torch.tensor(memory.limits.instance, dtype=torch.float64),
        "text_only": torch.tensor(memory.limits.text_only, dtype=torch.float64),
        "margin": torch.tensor(memory.limits.margin, dtype=torch.float64),
        "lead": torch.tensor(memory.limits.lead, dtype=torch.float64),
    })
    # the scope examples of the active slots, their owners renumbered like the slots
    renumber = torch.full((max(slots.n, 1),), -1, dtype=torch.long, device=memory.device)
    renumber[active] = torch.arange(active.numel(), device=memory.device)
    for kind, table in memory.examples.items():
        owner = renumber[table["owner"]] if table.n else torch.zeros(0, dtype=torch.long, device=memory.device)
        kept = owner >= 0
        tensors[kind], tensors[f"{kind}_owner"] = table["image"][kept], owner[kept]
        if "offset" in table.shapes:
            tensors[f"{kind}_offset"] = table["offset"][kept]
    scalings = set()
    for i, site in enumerate(memory.sites.values()):
        scalings.add(site.scaling)
        tensors[f"{i}.A_local"], tensors[f"{i}.A_shared"] = site.A_local, site.A_shared
        for table in ("local_u", "local_v", "shared_u", "shared_v"):
            tensors[f"{i}.{table}"] = slots[f"{i}.{table}"][active]
    if len(scalings) != 1:
        raise ValueError(f"ScopeMemory sites disagree on their scaling {sorted(scalings)}")
    tensors["scaling"] = torch.tensor(scalings.pop(), dtype=torch.float64)
    n_layers = len(vlm.decoder_layers())
    first = cfg.key_layer if cfg.key_layer >= 0 else n_layers + cfg.key_layer
    meta = {
        "format": FORMAT,
        "base_class": type(editor.model).__name__,
        "sites": list(memory.paths),
        "key_module": vlm.spec.mlp_site_paths(first)[0],
        "root_modules": [vlm.spec.text_only_module] if vlm.spec.text_only_module else [],
        "slots": int(active.numel()),
    }
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, meta


def _current_key_format(model: torch.nn.Module) -> dict[str, bool]:
    """``save_pretrained`` keyword for saving keys in the current module layout (transformers 5)."""
    return {"save_original_format": False} if "save_original_format" in inspect.signature(
        model.save_pretrained).parameters else {}


def save_routed(editor: ScopeMemory, directory: str | Path, processor: Any) -> Path:
    """Write ``editor``'s base model, ``processor`` and slots to ``directory`` as a checkpoint
    that ``from_pretrained(directory, trust_remote_code=True)`` loads with routing installed."""
    import transformers

    directory = Path(directory)
    model, memory = editor.model, editor.memory
    base_class = type(model).__name__
    if getattr(transformers, base_class, None) is not type(model):
        raise ValueError(f"a routed ScopeMemory export needs a transformers model class; {base_class} is not one")
    autos = auto_classes(model)
    if not autos:
        raise ValueError(f"no transformers Auto class loads {base_class} (model_type {model.config.model_type!r})")
    tensors, meta = slot_tensors(editor)
    directory.mkdir(parents=True, exist_ok=True)
    try:  # save the plain base model: the slot sites out, the base linears back in
        for path, module in memory.modules.items():
            model.set_submodule(path, module.base_layer)
        # Keys as the modules name them (not transformers' legacy layout): the remote-code
        # subclass gets no checkpoint conversion when it loads.
        model.save_pretrained(directory, **_current_key_format(model))
    finally:
        for path, module in memory.modules.items():
            model.set_submodule(path, module)
    processor.save_pretrained(directory)
    save_file(tensors, str(directory / SLOTS_FILE), metadata={"scopememory": json.dumps(meta)})
    (directory / MODELING_FILE).write_text(modeling_source(base_class))
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **{a: f"{MODELING_FILE[:-3]}.{CLASS_NAME}" for a in autos}}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
