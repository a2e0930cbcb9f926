"""The slot memory of ScopeMemory: stacked slot tensors, the hooks that route each forward
pass, and the edit sites that add the routed slot's write.

One forward pass, batch row by batch row:

1. a pre-hook on the model root reads ``input_ids``: where the prompt ends (the end of the
   chat template's generation prompt) and which positions hold image tokens. A call that
   continues a cached generation keeps the route of the call that began it;
2. a pre-hook on the MLP of the key layer takes the keys there and routes the row to at most
   one slot (``router.match``: one matrix product over all slots);
3. each :class:`SlotSite` at that layer and later adds its slot's write,
   ``s (U_l V_l^T A_l x + U_g V_g^T A_g x)``, at the positions from the last prompt token on
   (the local term where the route says so, the shared term where the slot allows it).

Nothing is added to a row that routes to no slot, so such inputs give the base model's logits.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from editscope.core.site import EditSite
from editscope.editors.scopememory.router import (NO_SLOT, Examples, Route, Scan, SlotKeys, Thresholds, build_scan,
                                                  half_scan_fits, match, prompt_ends, unit_keys)

FACT_BYTES = 20
SCAN_FROM = 256  # from this many slots on, routing first scans half-precision copies of the keys
SITE_TABLES = ("local_u", "local_v", "shared_u", "shared_v")
EXAMPLE_KINDS = ("also", "never")


class Table:
    """Named tensors sharing a leading row dimension, with spare capacity so that adding a row
    costs O(1) amortised (capacity doubles when full)."""

    def __init__(self, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], device: torch.device) -> None:
        self.shapes, self.device, self.n = shapes, device, 0
        self.version = 0  # counts writes, so that copies derived from the rows know when to renew
        self.data = {k: torch.zeros((0, *s), dtype=d, device=device) for k, (s, d) in shapes.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name][: self.n]

    def _reserve(self, rows: int) -> None:
        capacity = next(iter(self.data.values())).shape[0]
        if rows <= capacity:
            return
        new = max(rows, 2 * capacity, 8)
        for name, tensor in self.data.items():
            grown = torch.zeros((new, *tensor.shape[1:]), dtype=tensor.dtype, device=self.device)
            grown[: self.n] = tensor[: self.n]
            self.data[name] = grown

    def write(self, row: int, values: dict[str, torch.Tensor]) -> None:
        """Set row ``row`` (``n`` appends one)."""
        if row > self.n:
            raise IndexError(f"row {row} is past the end of a table of {self.n} rows")
        self._reserve(row + 1)
        for name, value in values.items():
            self.data[name][row] = value.to(self.data[name].dtype)
        self.n = max(self.n, row + 1)
        self.version += 1

    def set_column(self, name: str, values: torch.Tensor) -> None:
        self.data[name][: self.n] = values.to(self.data[name].dtype)
        self.version += 1

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the rows where the bool mask ``rows`` (n,) holds, in order."""
        for name in self.data:
            kept = self.data[name][: self.n][rows]
            self.data[name][: kept.shape[0]] = kept
        self.n = int(rows.sum())
        self.version += 1

    def state(self) -> dict[str, torch.Tensor]:
        return {name: self[name].detach().clone() for name in self.data}

    def load(self, state: dict[str, torch.Tensor], rows: int) -> None:
        self.data = {name: state[name].to(device=self.device, dtype=d).clone()
                     for name, (_, d) in self.shapes.items()}
        self.n = rows
        self.version += 1

    def nbytes_per_row(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.data.values()) if self.n else sum(
            int(torch.Size(s).numel()) * torch.zeros(0, dtype=d).element_size() for s, d in self.shapes.values())


@dataclass
class Call:
    """What the root hook learnt of the current forward pass, and the route the key hook chose."""

    start: torch.Tensor  # (B,) the last prompt token: writes apply from here on
    image_mask: torch.Tensor  # (B, T)
    continuation: bool = False
    route: Route | None = None
    any_hit: bool = False
    training: tuple[bool, bool] | None = None  # (local, shared) while a slot is being written
    span: tuple[tuple[bool, int], int, torch.Tensor] | None = None  # see SlotMemory._span


def _continues_cache(kwargs: dict[str, Any]) -> bool:
    """Whether a forward call extends a generation's key-value cache (transformers names it
    ``past_key_values`` or, in generate's calls since 5.x, ``cache``)."""
    for name in ("past_key_values", "cache"):
        past = kwargs.get(name)
        if past is not None and hasattr(past, "get_seq_length") and int(past.get_seq_length()) > 0:
            return True
    return False


class KeysTaken(Exception):
    """Ends a forward pass at the key layer, once its keys are all the caller wanted (see
    :meth:`SlotMemory.capture_keys`)."""


class SlotSite(nn.Module):
    """``base_layer`` plus the routed writes of the memory's slots at this site."""

    def __init__(self, base_layer: nn.Linear, memory: "SlotMemory", index: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.index = index
        object.__setattr__(self, "_memory", memory)  # not a submodule: the memory is not model state

    @property
    def A_local(self) -> torch.Tensor:  # what ``capture_codes`` reads from a site
        return self._memory.sites[self._memory.paths[self.index]].A_local

    def local_code(self, x: torch.Tensor) -> torch.Tensor:
        return self._memory.sites[self._memory.paths[self.index]].local_code(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        delta = self._memory.delta(self.index, x)
        return out if delta is None else out + delta.to(out.dtype)


class SlotMemory:
    """Slots, their per-site writes and the hooks that route a forward pass.

    ``sites``: edit-site path -> its scratch :class:`EditSite` (the frozen bases ``A_l``,
    ``A_g``, and the ``B``/``P`` a slot is written with before it is stored). ``text_dim`` is the
    width of the key layer's MLP input."""

    def __init__(self, model: nn.Module, sites: dict[str, EditSite], key_module: str, text_dim: int,
                 marker: tuple[int, ...], image_token_id: int, limits: Thresholds, slot_rank: int,
                 root_modules: tuple[str, ...] = ()) -> None:
        self.model, self.sites, self.limits, self.slot_rank = model, sites, limits, slot_rank
        self.paths = list(sites)
        device = next(iter(sites.values())).A_local.device
        self.device = device
        self.marker = torch.tensor(marker, dtype=torch.long, device=device)
        self.image_token_id = int(image_token_id)
        shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "text": ((text_dim,), torch.float32), "image": ((text_dim,), torch.float32),
            "has_image": ((), torch.bool), "shared": ((), torch.bool), "active": ((), torch.bool),
            "tau_text": ((), torch.float32), "tau_image": ((), torch.float32),
            "cap_text": ((), torch.float32), "cap_image": ((), torch.float32),
            "fact": ((FACT_BYTES,), torch.uint8),
        }
        for i, site in enumerate(sites.values()):
            d_out = site.base_layer.out_features
            shapes[f"{i}.local_u"] = ((d_out, slot_rank), torch.float32)
            shapes[f"{i}.local_v"] = ((site.rank_local, slot_rank), torch.float32)
            shapes[f"{i}.shared_u"] = ((d_out, slot_rank), torch.float32)
            shapes[f"{i}.shared_v"] = ((site.rank_shared, slot_rank), torch.float32)
        self.slots = Table(shapes, device)
        # the image keys of the slots' scope examples, with the slot (row of ``slots``) owning each
        self.examples = {kind: Table({"image": ((text_dim,), torch.float32), "owner": ((), torch.long),
                                      **({"offset": ((), torch.float32)} if kind == "also" else {})}, device)
                         for kind in EXAMPLE_KINDS}
        self.centre_text = torch.zeros(text_dim, device=device)
        self.centre_image = torch.zeros(text_dim, device=device)
        self.whiten_basis = torch.zeros(0, text_dim, device=device)
        self.whiten_scale = torch.zeros(0, device=device)
        self.call: Call | None = None
        self.last_route: Route | None = None
        self._forced: tuple[bool, bool] | None = None
        self._keys: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._keys_centred = True
        self._keys_stop = False
        self._scans: tuple[tuple[int, ...], dict[tuple[int, ...], Scan]] = ((), {})
        # per site, A_local and A_shared stacked and transposed (d_in, r_l + r_s): one product gives both codes
        self._bases = [torch.cat([site.A_local, site.A_shared]).T.contiguous() for site in sites.values()]
        self.modules = {path: SlotSite(site.base_layer, self, i) for i, (path, site) in enumerate(sites.items())}
        for path, module in self.modules.items():
            model.set_submodule(path, module)
        self._handles = [model.register_forward_pre_hook(self._root_hook, with_kwargs=True)]
        for name in root_modules:
            self._handles.append(model.get_submodule(name).register_forward_pre_hook(self._inner_hook, with_kwargs=True))
        self._handles.append(model.get_submodule(key_module).register_forward_pre_hook(self._key_hook))

    # -- hooks ------------------------------------------------------------------------------
    def _begin(self, args: tuple, kwargs: dict[str, Any], root: bool) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            if root:  # embeddings only: the memory cannot route this call
                self.call = None
            return
        if _continues_cache(kwargs) and self.call is not None:
            self.call.continuation = True
            return
        self.call = Call(start=prompt_ends(ids, self.marker), image_mask=ids == self.image_token_id)

    def _root_hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._begin(args, kwargs, root=True)

    def _inner_hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._begin(args, kwargs, root=False)

    def _key_hook(self, module: nn.Module, args: tuple) -> None:
        call = self.call
        if call is None or call.continuation:
            return
        x = args[0]
        if self._keys is not None:  # a caller asked for this pass's keys
            self._keys.append(self.keys_of(x, call, centred=self._keys_centred))
            if self._keys_stop:
                raise KeysTaken
        if self._forced is not None:
            call.training, call.any_hit = self._forced, True
            return
        if self.slots.n == 0:
            call.route, call.any_hit = None, False
            return
        q, slots, scan = self.question_keys(x, call), self.slots, self.scan()
        # every rule needs the question to match: where no slot's can, no image key and no more matching
        if scan is None:
            text, low = q @ slots["text"].T, slots["tau_text"]
        else:  # the scan's half-precision cosines, within its tolerance (match reuses them)
            text, low = (q.to(scan.text.dtype) @ scan.text.T).float(), slots["tau_text"] - scan.tolerance
        if not bool(((text >= low) & slots["active"]).any()):
            none = torch.full((q.shape[0],), NO_SLOT, dtype=torch.long, device=q.device)
            self.last_route = call.route = Route(none, none >= 0, none >= 0)
            call.any_hit = False
            return
        v, has = self.image_keys(x, call)
        route = match(q, v, has, self.view(), self.limits, scan, None if scan is None else text)
        self.last_route = route
        call.route, call.any_hit = route, bool((route.slot != NO_SLOT).any())

    def keys_of(self, x: torch.Tensor, call: Call, centred: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Question keys (B, d), image keys (B, d) (zeros without image tokens) and whether each
        row has image tokens (B,), from the key layer's MLP input ``x`` (B, T, d): unit vectors
        about the reference centres, or (``centred`` false) the raw activations."""
        q = self.question_keys(x, call, centred)
        return (q, *self.image_keys(x, call, centred))

    def question_keys(self, x: torch.Tensor, call: Call, centred: bool = True) -> torch.Tensor:
        """The question keys (B, d) of :meth:`keys_of`: the last prompt token's activation."""
        rows = torch.arange(x.shape[0], device=x.device)
        q = x.detach()[rows, call.start.to(x.device)].float()
        return unit_keys(q, self.centre_text) if centred else q

    def image_keys(self, x: torch.Tensor, call: Call, centred: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The image keys (B, d) and ``has_image`` (B,) of :meth:`keys_of`: the mean activation
        over the image tokens."""
        x = x.detach().float()
        mask = call.image_mask.to(x.device)[..., None].float()
        count = mask.sum(1)
        has = count[:, 0] > 0
        v = (x * mask).sum(1) / count.clamp(min=1)
        if centred:
            v = unit_keys(v, self.centre_image, self.whiten_basis, self.whiten_scale)
        return v * has[:, None], has

    @contextmanager
    def capture_keys(self, centred: bool = True, stop: bool = False
                     ) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """Collect the keys of every forward pass run inside the block (see :meth:`keys_of`).
        With ``stop``, a pass ends at the key layer by raising :class:`KeysTaken` (the layers
        after it cannot change the keys), which the block swallows."""
        self._keys, self._keys_centred, self._keys_stop = [], centred, stop
        try:
            yield self._keys
        except KeysTaken:
            pass
        finally:
            self._keys, self._keys_stop = None, False

    @contextmanager
    def writing(self, local: bool, shared: bool) -> Iterator[None]:
        """Route every pass inside the block to the scratch write (its local and/or shared
        branch) instead of the stored slots."""
        self._forced = (local, shared)
        try:
            yield
        finally:
            self._forced = None

    # -- the writes -------------------------------------------------------------------------
    def delta(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        """The write at site ``index`` for its input ``x`` (B, T, d_in), or ``None``. It is
        computed only from the earliest position any written row starts at, and zero before."""
        call = self.call
        if call is None or not call.any_hit:
            return None
        site = self.sites[self.paths[index]]
        first, mask = self._span(call, x)
        xs = x[..., first:, :].to(site.A_local.dtype)
        if call.training is not None:
            local, shared = call.training
            out = torch.zeros(*xs.shape[:-1], site.B_local.shape[0], device=x.device, dtype=xs.dtype)
            if local:
                out = out + (xs @ site.A_local.T) @ site.B_local.T
            if shared and site.rank_shared:
                out = out + (xs @ site.A_shared.T) @ site.B_shared.T
        else:
            out = self._routed(index, xs @ self._bases[index], call.route)
        return F.pad(out * (site.scaling * mask)[..., None], (0, 0, first, 0))

    def _span(self, call: Call, x: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The first position any row of this call is written at, and from there on which
        (row, position) pairs are written (B, T - first), kept on the call for its other sites."""
        key = (call.continuation, x.shape[-2])
        if call.span is None or call.span[0] != key:
            start = torch.zeros_like(call.start) if call.continuation else call.start.to(x.device)
            rows = torch.ones_like(start, dtype=torch.bool) if call.training is not None else call.route.slot != NO_SLOT
            first = int(start[rows].min()) if bool(rows.any()) else x.shape[-2]
            positions = torch.arange(first, x.shape[-2], device=x.device)
            call.span = (key, first, ((positions[None] >= start[:, None]) & rows[:, None]).float())
        return call.span[1], call.span[2]

    def _routed(self, index: int, codes: torch.Tensor, route: Route) -> torch.Tensor:
        """Each row's slot's write from its codes under the site's stacked bases (B, t, r_l + r_s):
        the local term where the route applies it, the shared term likewise."""
        slot = route.slot.clamp(min=0)
        rank = self.sites[self.paths[index]].rank_local
        z = [torch.bmm(codes[..., :rank], self.slots[f"{index}.local_v"][slot]) * route.local[:, None, None]]
        u = [self.slots[f"{index}.local_u"][slot]]
        if codes.shape[-1] > rank:
            z.append(torch.bmm(codes[..., rank:], self.slots[f"{index}.shared_v"][slot]) * route.shared[:, None, None])
            u.append(self.slots[f"{index}.shared_u"][slot])
        return torch.bmm(torch.cat(z, -1), torch.cat(u, -1).transpose(1, 2))

    def scan(self) -> Scan | None:
        """Half-precision copies of the keys for :func:`~editscope.editors.scopememory.router.match`
        (kept, per row count, until a table is written), or ``None`` below :data:`SCAN_FROM`
        slots or on a device whose half-precision products are not close enough to float32."""
        if self.slots.n < SCAN_FROM or not half_scan_fits(self.device, self.slots.shapes["text"][0][0]):
            return None
        tables = (self.slots, *self.examples.values())
        versions, scans = self._scans
        if versions != tuple(t.version for t in tables):
            versions, scans = tuple(t.version for t in tables), {}
            self._scans = (versions, scans)
        rows = tuple(t.n for t in tables)
        if rows not in scans:
            scans[rows] = build_scan(self.view())
        return scans[rows]

    def view(self) -> SlotKeys:
        s, also, never = self.slots, self.examples["also"], self.examples["never"]
        examples = (Examples(also["image"], also["owner"], never["image"], never["owner"], also["offset"])
                    if also.n or never.n else None)
        return SlotKeys(text=s["text"], image=s["image"], has_image=s["has_image"], shared=s["shared"],
                        active=s["active"], tau_text=s["tau_text"], tau_image=s["tau_image"],
                        cap_text=s["cap_text"], cap_image=s["cap_image"], examples=examples)

    def set_examples(self, row: int, examples: Examples | None) -> None:
        """Make ``examples`` (owner 0 standing for ``row``) the scope examples of slot ``row``,
        in place of any it had."""
        for kind in EXAMPLE_KINDS:
            table = self.examples[kind]
            if table.n:
                table.keep(table["owner"] != row)
            if examples is None:
                continue
            keys = getattr(examples, kind)
            offsets = examples.also_offset if kind == "also" and examples.also_offset is not None else torch.zeros(len(keys))
            for key, offset in zip(keys, offsets):
                values = {"image": key, "owner": torch.tensor(row)}
                table.write(table.n, {**values, "offset": offset} if kind == "also" else values)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for path, module in self.modules.items():
            self.model.set_submodule(path, module.base_layer)
        self.call = None
