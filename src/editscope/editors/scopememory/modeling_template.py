"""A routed ScopeMemory checkpoint for plain transformers (``trust_remote_code=True``).

This file is written beside an exported checkpoint as ``modeling_scopememory.py``. It imports
only torch, transformers and safetensors. Loading gives the base model class with the slots of
``slots.safetensors`` installed, routed as the editor routes them:

1. a pre-hook on the model root reads ``input_ids``. The prompt ends at the end of the last
   occurrence of the marker (the chat template's generation prompt), and the image positions
   are the image-token ids. A call that extends a generation's cache keeps its route;
2. a pre-hook on the key linear takes the question key (the input at the prompt's last token)
   and the image key (its mean over the image positions). It routes each row to at most one
   slot;
3. a forward hook on each slot site adds that slot's write at the positions from the prompt
   end on: ``s (U_l V_l^T A_l x + U_g V_g^T A_g x)``, with each term only where the route
   allows it.

A row that routes to no slot gets the base model's logits. The exporter sets ``BASE_CLASS``.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers.utils import cached_file

BASE_CLASS = "LlavaForConditionalGeneration"  # set by the exporter
SLOTS_FILE = "slots.safetensors"
FORMAT = "editscope-scopememory/1"
NO_SLOT = -1


def prompt_ends(input_ids, marker):
    """(B,) position of each row's last prompt token: the end of the last ``marker``, else the last position."""
    batch, length = input_ids.shape
    last = torch.full((batch,), length - 1, dtype=torch.long, device=input_ids.device)
    m = marker.numel()
    if m == 0 or m > length:
        return last
    found = (input_ids.unfold(1, m, 1) == marker.to(input_ids.device)).all(-1)
    ends = torch.arange(m - 1, length, device=input_ids.device).expand_as(found)
    best = torch.where(found, ends, torch.full_like(ends, -1)).max(dim=1).values
    return torch.where(best >= 0, best, last)


def nearest(v, keys, owner, start, offset=None):
    """``start`` (B, N) raised to each slot's largest cosine (plus the key's ``offset``) between ``v``
    and the example keys it owns."""
    if keys.shape[0] == 0:
        return start
    cosines = v @ keys.T if offset is None else v @ keys.T + offset[None]
    return start.scatter_reduce(1, owner[None].expand(v.shape[0], -1), cosines, reduce="amax")


def match(q, v, q_has, slots, instance, text_only, margin, lead=2.0):
    """Route rows (keys ``q``, ``v`` (B, d), ``q_has`` (B,)) to at most one slot: (slot, local, shared), each (B,)."""
    sq = q @ slots["text"].T
    si = v @ slots["image"].T
    near = nearest(v, slots["also"], slots["also_owner"], si, slots.get("also_offset"))
    never = nearest(v, slots["never"], slots["never_owner"], torch.full_like(si, -2.0))
    pair = q_has[:, None] & slots["has_image"][None]
    with_image = q_has[:, None]
    q_ok = sq >= slots["tau_text"]
    local = q_ok & torch.where(with_image, pair & (si >= instance), ~slots["has_image"][None])
    text_only_ok = sq >= torch.clamp(slots["tau_text"], min=text_only)
    rival = torch.where(pair, near, torch.full_like(near, -2.0)).max(dim=1).values  # the nearest slot's image
    subject = (near >= slots["tau_image"]) & (near >= never + margin) & (near >= rival[:, None] - lead)
    if lead < 2:  # an input that shows a slot's own image belongs to the slots that show it
        subject = subject & ((rival[:, None] < instance) | (near >= instance))
    shared = slots["shared"][None] & torch.where(
        with_image, pair & q_ok & subject,
        slots["has_image"][None] & text_only_ok
    )
    candidate = local | shared
    score = torch.where(candidate, sq + torch.where(pair, near, torch.zeros_like(near)), torch.full_like(sq, -1e9))
    best = score.argmax(dim=1)
    hit = candidate.gather(1, best[:, None])[:, 0]
    return (torch.where(hit, best, torch.full_like(best, NO_SLOT)), hit & local.gather(1, best[:, None])[:, 0],
            hit & slots["shared"][best])


def _continues_cache(kwargs):
    for name in ("past_key_values", "cache"):
        past = kwargs.get(name)
        if past is not None and hasattr(past, "get_seq_length") and int(past.get_seq_length()) > 0:
            return True
    return False


class SlotRouter:
    """The slots of one checkpoint and the hooks that route a forward pass through them."""

    def __init__(self, model, tensors, meta):
        self.meta = meta
        self.tensors = tensors
        key = model.get_submodule(meta["key_module"])
        device = key.weight.device
        self.slots = {k: tensors[k].to(device) for k in
                      ("text", "image", "has_image", "shared", "tau_text", "tau_image")}
        self.slots["has_image"], self.slots["shared"] = self.slots["has_image"].bool(), self.slots["shared"].bool()
        width = self.slots["text"].shape[1]
        for kind in ("also", "never"):  # scope examples (none in checkpoints written before them)
            self.slots[kind] = tensors.get(kind, torch.zeros(0, width)).to(device).float()
            self.slots[f"{kind}_owner"] = tensors.get(f"{kind}_owner", torch.zeros(0, dtype=torch.long)).to(device).long()
        also_offset = tensors.get("also_offset")  # none in checkpoints written before the view margin
        self.slots["also_offset"] = (torch.zeros(self.slots["also"].shape[0]) if also_offset is None
                                     else also_offset).to(device).float()
        self.n = int(self.slots["text"].shape[0])
        self.centre_text, self.centre_image = tensors["centre_text"].to(device), tensors["centre_image"].to(device)
        width = self.centre_image.shape[0]
        self.whiten_basis = tensors.get("whiten_basis", torch.zeros(0, width)).to(device)
        self.whiten_scale = tensors.get("whiten_scale", torch.zeros(0)).to(device)
        self.marker = tensors["marker"].to(device)
        self.image_token_id = int(tensors["image_token_id"])
        self.instance, self.text_only = float(tensors["instance"]), float(tensors["text_only"])
        self.margin = float(tensors.get("margin", torch.tensor(0.0)))
        self.lead = float(tensors.get("lead", torch.tensor(2.0)))
        self.scaling = float(tensors["scaling"])
        self.sites = []
        for i, path in enumerate(meta["sites"]):
            at = model.get_submodule(path).weight.device
            self.sites.append({k: tensors[f"{i}.{k}"].to(at) for k in
                               ("A_local", "A_shared", "local_u", "local_v", "shared_u", "shared_v")})
            self.sites[-1]["bases"] = torch.cat([self.sites[-1]["A_local"], self.sites[-1]["A_shared"]]).T.contiguous()
        self.call = None
        self.last_route = None
        self.handles = [model.register_forward_pre_hook(self._root_hook, with_kwargs=True)]
        for name in meta.get("root_modules", []):
            self.handles.append(model.get_submodule(name).register_forward_pre_hook(self._inner_hook, with_kwargs=True))
        self.handles.append(key.register_forward_pre_hook(self._key_hook))
        for i, path in enumerate(meta["sites"]):
            self.handles.append(model.get_submodule(path).register_forward_hook(self._site_hook(i)))

    def _begin(self, args, kwargs, root):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            if root:
                self.call = None
            return
        if _continues_cache(kwargs) and self.call is not None:
            self.call["continuation"] = True
            return
        self.call = {"start": prompt_ends(ids, self.marker), "image_mask": ids == self.image_token_id,
                     "continuation": False, "route": None, "any_hit": False}

    def _root_hook(self, module, args, kwargs):
        self._begin(args, kwargs, True)

    def _inner_hook(self, module, args, kwargs):
        self._begin(args, kwargs, False)

    def _key_hook(self, module, args):
        call = self.call
        if call is None or call["continuation"]:
            return
        if self.n == 0:
            call["route"], call["any_hit"] = None, False
            return
        x = args[0].detach().float()
        rows = torch.arange(x.shape[0], device=x.device)
        q = x[rows, call["start"].to(x.device)]
        mask = call["image_mask"].to(x.device)[..., None].float()
        count = mask.sum(1)
        has = count[:, 0] > 0
        v = (x * mask).sum(1) / count.clamp(min=1)
        q = F.normalize(q.float() - self.centre_text, dim=-1, eps=1e-12)
        v = v.float() - self.centre_image
        if self.whiten_basis.shape[0]:
            v = v + ((v @ self.whiten_basis.T) * self.whiten_scale) @ self.whiten_basis
        v = F.normalize(v, dim=-1, eps=1e-12) * has[:, None]
        route = match(q, v, has, self.slots, self.instance, self.text_only, self.margin, self.lead)
        self.last_route = route
        call["route"], call["any_hit"] = route, bool((route[0] != NO_SLOT).any())

    def _site_hook(self, index):
        def hook(module, args, output):
            delta = self.delta(index, args[0])
            return output if delta is None else output + delta.to(output.dtype)
        return hook

    def delta(self, index, x):
        # computed as the editor that wrote the slots computes it (from the first written position,
        # both codes from the stacked bases in one product), so that the logits are the same
        call = self.call
        if call is None or not call["any_hit"]:
            return None
        site = self.sites[index]
        slot_of, local, shared = (t.to(x.device) for t in call["route"])
        start = torch.zeros_like(call["start"]) if call["continuation"] else call["start"].to(x.device)
        rows = slot_of != NO_SLOT
        first = int(start[rows].min()) if bool(rows.any()) else x.shape[-2]
        positions = torch.arange(first, x.shape[-2], device=x.device)
        mask = ((positions[None] >= start[:, None]) & rows[:, None]).float()
        codes = x[..., first:, :].to(site["A_local"].dtype) @ site["bases"]
        slot, rank = slot_of.clamp(min=0), site["A_local"].shape[0]
        z = [torch.bmm(codes[..., :rank], site["local_v"][slot]) * local[:, None, None]]
        u = [site["local_u"][slot]]
        if codes.shape[-1] > rank:
            z.append(torch.bmm(codes[..., rank:], site["shared_v"][slot]) * shared[:, None, None])
            u.append(site["shared_u"][slot])
        out = torch.bmm(torch.cat(z, -1), torch.cat(u, -1).transpose(1, 2))
        return F.pad(out * (self.scaling * mask)[..., None], (0, 0, first, 0))

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []


class ScopeMemoryRouted(getattr(transformers, BASE_CLASS)):
    """The base model class; ``from_pretrained`` installs the checkpoint's routed slots."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
        path = cached_file(pretrained_model_name_or_path, SLOTS_FILE, **hub)
        with safe_open(path, framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("scopememory", "{}"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} slot file")
        model.scopememory = SlotRouter(model, load_file(path), meta)
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        router = getattr(self, "scopememory", None)
        if router is not None:
            save_file(router.tensors, os.path.join(save_directory, SLOTS_FILE),
                      metadata={"scopememory": json.dumps(router.meta)})
            shutil.copyfile(__file__, os.path.join(save_directory, "modeling_scopememory.py"))
