"""ScopeMemory: every fact in its own routed slot.

A slot holds, for one fact (the same image content and prompt, or the request's ``fact_id``),
its routing keys and calibrated thresholds and, at every slot site (the MLP linears of the key
layer and the layers after it), a small write in ScopeEdit's geometry: a local branch through
the frozen basis ``A_l`` and a shared branch through ``A_g``. The write is made by ScopeEdit's
geometry on this fact alone (Adam on the slot's ``B`` matrices, see ``docs/scopememory.md``
for why not the Sherman–Morrison step), and stored as its truncated SVD. At inference the router sends each input to at
most one slot: its local write applies on the slot's own image with a matching question, its
shared write (when the evidence gate or the request's scope allowed it) on other images of the
subject with a matching question, and on text-only questions that match closely. Inputs that
match no slot are computed by the base model alone.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import torch
from torch import nn

from editscope.core.capture import Positions, capture_codes
from editscope.core.gate import evidence_gate
from editscope.core.linalg import site_seed
from editscope.core.site import EditSite
from editscope.editors.base import Editor, EditRejected, trainable
from editscope.editors.baselines.common import output_linear, target_loss
from editscope.editors.scopememory import examples
from editscope.editors.scopememory.config import ScopeMemoryConfig
from editscope.editors.scopememory.router import (NO_SLOT, Examples, SlotKeys, Thresholds, common_suffix, raise_thresholds,
                                                  whitening)
from editscope.editors.scopememory.slots import SlotMemory
from editscope.editors.scopememory.state import load_memory_state, memory_state
from editscope.editors.scopememory.views import image_views, view_seed
from editscope.editors.scopememory.facts import answer_id, fact_bytes, truncated
from editscope.editors.transaction import Transaction, check_loss_after
from editscope.types import EditRequest, EditResult, GateValues, ModelInputs, Probe, stacked

logger = logging.getLogger(__name__)


class ScopeMemory(Editor):
    name = "scopememory"
    uses_examples = True

    def __init__(self, vlm: Any, config: ScopeMemoryConfig | None = None) -> None:
        """The router's reference set comes from ``editscope.editors.registry.build_editor(...,
        reference=)`` (or :meth:`set_reference`), before the first edit."""
        super().__init__(vlm)
        self.config = cfg = config if config is not None else ScopeMemoryConfig()
        self.model: nn.Module = vlm.model
        self.model.requires_grad_(False)
        self.model.eval()
        n_layers = len(vlm.decoder_layers())
        first = cfg.key_layer if cfg.key_layer >= 0 else n_layers + cfg.key_layer
        if not 0 <= first < n_layers:
            raise ValueError(f"key_layer {cfg.key_layer} is outside the model's {n_layers} decoder layers")
        self.groups: dict[str, list[str]] = {}
        for index in range(first, n_layers):
            paths = vlm.spec.mlp_site_paths(index)
            wrapped = [p for p in paths if not isinstance(self.model.get_submodule(p), nn.Linear)]
            if wrapped:
                raise ValueError(f"{wrapped[0]} is a {type(self.model.get_submodule(wrapped[0])).__name__}, not an "
                                 "nn.Linear: remove() the other editor on this model first")
            self.groups[f"layer.{index}"] = [output_linear(vlm, paths)] if cfg.linears == "output" else list(paths)
        key_path = vlm.spec.mlp_site_paths(first)[0]
        scratch: dict[str, EditSite] = {}
        for paths in self.groups.values():
            for path in paths:
                base = self.model.get_submodule(path)
                scratch[path] = EditSite(base, cfg.rank_local, cfg.rank_shared, cfg.scaling,
                                         seed=site_seed(cfg.seed, path))
        text_dim = self.model.get_submodule(key_path).in_features
        limits = Thresholds(cfg.instance_threshold, cfg.text_only_threshold, cfg.margin, cfg.threshold_cap,
                            cfg.subject_lead)
        roots = (vlm.spec.text_only_module,) if vlm.spec.text_only_module else ()
        self.memory = SlotMemory(self.model, scratch, key_path, text_dim, self._marker(), vlm.image_token_id,
                                 limits, cfg.slot_rank, roots)
        device = self.memory.device
        self.reference = (torch.zeros(0, text_dim, device=device), torch.zeros(0, text_dim, device=device),
                          torch.zeros(0, dtype=torch.bool, device=device))
        self.reference_answers = torch.zeros(0, dtype=torch.int64, device=device)  # answer_id per probe

    def _marker(self) -> tuple[int, ...]:
        """The token ids every prompt ends with (the chat template's generation prompt)."""
        vlm = self.vlm
        texts = [vlm.prompt_text(p, with_image=w) for p in ("alpha", "omega beta?", "7 x") for w in (False, True)]
        ids = [vlm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        marker = common_suffix(ids)
        if not marker:
            logger.warning("%s: prompts share no closing tokens; the router keys on the last token of each "
                           "forward pass, so a teacher-forced score routes on its last target token",
                           vlm.spec.name)
        return marker

    # -- reference set ----------------------------------------------------------------------
    def set_reference(self, probes: Sequence[Probe | ModelInputs]) -> None:
        """Centre the router on a reference set of ordinary inputs and keep their keys as
        negatives for every later calibration. Must come before the first edit."""
        if self.memory.slots.n:
            raise ValueError("the reference set must be given before the first edit")
        if not probes:
            raise ValueError("the reference set is empty")
        encoded = [p if isinstance(p, ModelInputs) else self.vlm.encode(p.image, p.prompt, p.answer) for p in probes]
        raw = [self._keys(inputs, centred=False) for inputs in encoded]
        q = torch.cat([k[0] for k in raw])
        v = torch.cat([k[1] for k in raw])
        has = torch.cat([k[2] for k in raw])
        if not (torch.isfinite(q).all() and torch.isfinite(v).all()):
            raise ValueError("the reference set produced non-finite activations")
        self.memory.centre_text = q.mean(0)
        self.memory.centre_image = v[has].mean(0) if bool(has.any()) else torch.zeros_like(q[0])
        if self.config.image_whitening > 0 and int(has.sum()) >= 2:
            self.memory.whiten_basis, self.memory.whiten_scale = whitening(v[has], self.config.image_whitening)
        self.reference = (torch.cat([self._keys(i)[0] for i in encoded]),
                          torch.cat([self._keys(i)[1] for i in encoded]), has)
        # their answers, where given, for reference_agreement (0: an encoded input without one)
        self.reference_answers = torch.tensor([0 if isinstance(p, ModelInputs) else answer_id(p.answer)
                                               for p in probes], dtype=torch.int64, device=self.memory.device)

    def _keys(self, inputs: ModelInputs, centred: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad(), self.memory.capture_keys(centred, stop=True) as keys:
            self.vlm.forward(inputs)  # ends at the key layer
        if not keys:
            raise ValueError("the forward pass did not reach the router's key layer")
        return keys[0]

    # -- the edit ---------------------------------------------------------------------------
    def fact_of(self, request: EditRequest) -> bytes:
        return bytes(fact_bytes(request, self.vlm.encode(request.image, request.prompt, request.target)).tolist())

    def edit(self, request: EditRequest) -> EditResult:
        if not isinstance(request, EditRequest):
            raise TypeError(f"edit() takes an EditRequest, got {type(request).__name__}")
        start = time.perf_counter()
        vlm, cfg = self.vlm, self.config
        inputs = vlm.encode(request.image, request.prompt, request.target)
        anchors = [vlm.encode(p.image, p.prompt, p.answer) for p in request.anchors]
        # the writes learn the target and then the end of the answer, so that generation stops
        answer = vlm.encode(request.image, request.prompt, request.target, end=True)
        also = [vlm.encode(e.image, e.prompt, request.target, end=True) for e in request.also]
        fact = fact_bytes(request, inputs).to(self.memory.device)
        with torch.no_grad():
            loss_before = float(target_loss(vlm, inputs))
        keys = self._keys(inputs)
        width, device = keys[0].shape[1], self.memory.device
        also_keys = examples.stack([self._keys(a) for a in also], width, device)
        never_keys = examples.stack([self._keys(vlm.encode(e.image, e.prompt)) for e in request.never], width, device)
        beyond = (also_keys[1] @ keys[1][0]) < self.memory.limits.instance  # also examples on other images
        forced = examples.check_request(request, bool(keys[2][0]), cfg.rank_shared, beyond)
        gates, shared_on = self._gate(self._site_keys(inputs), request, inputs)
        shared_on = shared_on or forced
        floors = examples.Floors(cfg.text_threshold, cfg.subject_threshold, self.memory.limits)
        views = image_views(request.image, cfg.views, seed=view_seed(fact, cfg.seed)) if shared_on else []
        slot = examples.calibrate(keys, shared_on, also_keys, beyond, self._negatives(anchors, fact, request), never_keys,
                                  floors, request, self._view_keys(request, views) if shared_on else None,
                                  cfg.view_margin)
        self._reset_scratch()
        steps = 0
        if shared_on:
            seen = [vlm.encode(view, request.prompt, request.target, end=True) for view in views[:cfg.train_views]]
            steps += self._phase([answer, *also, *seen], local=False, shared=True,
                                 stop=(cfg.shared_stop_loss, cfg.shared_stop_margin))
        steps += self._phase([answer, *(a for a, b in zip(also, beyond.tolist()) if not b)], local=True,
                             shared=shared_on, stop=(cfg.stop_loss, cfg.stop_margin))
        row = self._slot_row(slot, fact)
        with Transaction() as tx:  # an error leaving the block puts the slot tables back
            self._commit(row, fact, slot.examples, examples.stack([keys, also_keys], width, device), tx)
            with torch.no_grad():
                loss_after = float(target_loss(vlm, inputs))
            check_loss_after(loss_after)
        self.edits_applied += 1
        return EditResult(edit_id=self.edits_applied, loss_before=loss_before, loss_after=loss_after,
                          active_groups=tuple(self.groups), gates=gates,
                          wall_time_s=time.perf_counter() - start, steps=steps)

    def _view_keys(self, request: EditRequest, views: list) -> torch.Tensor:
        """Image keys (K, d) of the edit image's generic views (drawn with a seed of the fact, so
        a replay draws the same views)."""
        if not views:
            return torch.zeros(0, self.memory.slots["image"].shape[-1], device=self.memory.device)
        return self._keys(ModelInputs.stack([self.vlm.encode(view, request.prompt) for view in views]))[1]

    def _site_keys(self, inputs: ModelInputs):
        """Each slot site's code and evidence keys on the edit input (one forward, no slot)."""
        positions = Positions(target=inputs.target_positions, image=inputs.image_positions)
        sites = self.memory.modules
        with torch.no_grad(), self.memory.writing(False, False), \
                capture_codes(sites, positions, key_sites=frozenset(sites)) as capture:
            self.vlm.forward(inputs)
        return capture.sites

    def _gate(self, records: dict, request: EditRequest, inputs: ModelInputs) -> tuple[dict[str, GateValues], bool]:
        """The evidence gate of each group on the edit input, and whether the shared write may fire."""
        cfg = self.config
        if not cfg.rank_shared or inputs.image_positions.numel() == 0 or request.effective_scope == "instance":
            return {}, False
        gates: dict[str, GateValues] = {}
        values = []
        for group, paths in self.groups.items():
            rows = []
            for path in paths:
                record, site = records[path], self.memory.sites[path]
                gate = evidence_gate(site.A_shared @ record.k_text, site.A_shared @ record.k_image, cfg.tau, cfg.beta,
                                     cfg.gate_eps, force_open=request.effective_scope == "broad")
                rows.append(torch.stack([gate.cos, gate.support, gate.g]))
            mean = torch.stack(rows).mean(0).tolist()
            gates[group] = GateValues(cos=mean[0], support=mean[1], g=mean[2])
            values.append(mean[2])
        return gates, request.effective_scope == "broad" or sum(values) / len(values) >= cfg.gate_min

    def _reset_scratch(self) -> None:
        with torch.no_grad():
            for site in self.memory.sites.values():
                site.B_local.zero_()
                site.B_shared.zero_()

    def _phase(self, batch: list[ModelInputs], local: bool, shared: bool, stop: tuple[float, float]) -> int:
        """Write the scratch slot's local (``local``) or else its shared branch with Adam until
        every input of ``batch`` has absorbed the edit (``stop``: its mean NLL below the first value or
        its every target token top-1 by the second), in at
        most ``steps`` per input (one write that fits several inputs takes longer to find); the
        other branch, where enabled, applies as written. Returns the steps taken."""
        cfg = self.config
        sites = list(self.memory.sites.values())
        params = [s.B_local for s in sites] if local else [s.B_shared for s in sites if s.rank_shared]
        optimiser = torch.optim.Adam(params, lr=cfg.lr if local or not cfg.shared_lr else cfg.shared_lr)
        taken = 0
        groups = stacked(batch)  # inputs of the same tokens (the edit input and its views) run as one batch
        # the writes are all in the decoder: the vision tower's outputs hold for the whole phase
        with self.memory.writing(local, shared), trainable(params), self.vlm.reusing_image_features():
            for step in range(cfg.steps * len(batch)):
                losses, margins = zip(*(self._loss_and_margin(inputs) for inputs in groups))
                loss, margin = torch.cat(losses), [m for ms in margins for m in ms]
                values = loss.detach().tolist()
                if not all(math.isfinite(v) for v in values):
                    raise EditRejected(f"non-finite loss at step {step + 1}; the editor state is unchanged")
                if all(v < stop[0] or m >= stop[1] for v, m in zip(values, margin)):
                    break
                optimiser.zero_grad(set_to_none=True)
                loss.mean().backward()
                if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
                    raise EditRejected(f"non-finite gradient at step {step + 1}; the editor state is unchanged")
                optimiser.step()
                taken += 1
        return taken

    def _loss_and_margin(self, inputs: ModelInputs) -> tuple[torch.Tensor, list[float]]:
        """Per row of the batch ``inputs``: the target's mean NLL (B,) and its smallest logit
        margin (target minus best other token)."""
        logits = self.vlm.forward(inputs)
        predicted = logits.index_select(1, inputs.target_positions.to(logits.device)).float()  # (B, n, V)
        target = inputs.target_ids.to(logits.device).expand(predicted.shape[0], -1)
        loss = torch.nn.functional.cross_entropy(predicted.transpose(1, 2), target, reduction="none").mean(1)
        chosen = predicted.gather(2, target[..., None])[..., 0]
        other = predicted.scatter(2, target[..., None], float("-inf")).max(dim=2).values
        return loss, (chosen - other).min(dim=1).values.detach().tolist()

    def _slot_row(self, slot: SlotKeys, fact: torch.Tensor) -> dict[str, torch.Tensor]:
        """The new slot's table row: its calibrated keys and thresholds, and the truncated writes."""
        row: dict[str, torch.Tensor] = {
            "text": slot.text[0], "image": slot.image[0], "has_image": slot.has_image[0], "shared": slot.shared[0],
            "active": torch.tensor(True), "tau_text": slot.tau_text[0], "tau_image": slot.tau_image[0],
            "cap_text": slot.cap_text[0], "cap_image": slot.cap_image[0], "fact": fact,
        }
        for i, site in enumerate(self.memory.sites.values()):
            for branch, change in (("local", site.B_local), ("shared", site.B_shared)):
                if change.numel() == 0:
                    continue
                left, right = truncated(change.detach(), self.config.slot_rank)
                row[f"{i}.{branch}_u"], row[f"{i}.{branch}_v"] = left, right
        if not all(bool(torch.isfinite(t).all()) for t in row.values() if t.is_floating_point()):
            raise EditRejected("the edit produced non-finite values; the editor state is unchanged")
        return row

    def _negatives(self, anchors: list[ModelInputs], fact: torch.Tensor, request: EditRequest):
        """Keys the new slot must not match: its anchors, the reference set (with
        ``reference_agreement``, less the probes whose answer is the unedited model's answer to
        the edit input) and every other slot."""
        slots = self.memory.slots
        others = slots["active"] & ~(slots["fact"] == fact).all(-1)
        parts = [self._keys(a) for a in anchors]
        reference = self.reference
        if self.config.reference_agreement and reference[0].shape[0]:
            with self.memory.writing(False, False):  # no slot writes: the unedited model
                before = answer_id(self.vlm.answer(request.image, request.prompt))
            keep = self.reference_answers != before
            reference = tuple(part[keep] for part in reference)
        parts.append(reference)
        parts.append((slots["text"][others], slots["image"][others], slots["has_image"][others]))
        return tuple(torch.cat([p[i] for p in parts]) for i in range(3))

    def _commit(self, row: dict[str, torch.Tensor], fact: torch.Tensor, scope: Examples | None, own: tuple,
                tx: Transaction) -> None:
        """Raise the thresholds of the other slots against the new slot's ``own`` keys (its edit
        input and ``also`` examples), then store the new slot (over the fact's earlier slot where
        there is one) with its ``scope`` examples; ``tx`` first saves what this changes: the
        threshold columns, the row count, the row written over and the example tables."""
        slots, limits = self.memory.slots, self.memory.limits
        same = (slots["fact"] == fact).all(-1).nonzero().flatten()
        n = slots.n
        index = int(same[0]) if same.numel() else n
        saved = {"tau_text": slots["tau_text"], "tau_image": slots["tau_image"]}
        if index < n:
            saved.update({f"row.{k}": slots[k][index] for k in slots.data})

        saved.update({f"{kind}.{k}": v for kind, table in self.memory.examples.items()
                      for k, v in table.state().items()})
        counts = {kind: table.n for kind, table in self.memory.examples.items()}

        def restore(saved: dict[str, torch.Tensor]) -> None:
            for kind, table in self.memory.examples.items():
                table.load({k: saved[f"{kind}.{k}"] for k in table.shapes}, counts[kind])
            if index < n:
                slots.write(index, {k: saved[f"row.{k}"] for k in slots.data})
            slots.n = n
            slots.set_column("tau_text", saved["tau_text"])
            slots.set_column("tau_image", saved["tau_image"])

        tx.save(saved, restore)
        if slots.n:
            view = self.memory.view()
            others = view.active.clone()
            if index < slots.n:
                others[index] = False
            view.active = others
            new_text, new_image = raise_thresholds(view, *own, limits)
            slots.set_column("tau_text", torch.where(others, new_text, view.tau_text))
            slots.set_column("tau_image", torch.where(others, new_image, view.tau_image))
        slots.write(index, row)
        self.memory.set_examples(index, scope)

    # -- slots --------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """The number of live slots (facts)."""
        return int(self.memory.slots["active"].sum()) if self.memory.slots.n else 0

    def forget(self, fact: bytes) -> bool:
        """Remove the slot of ``fact`` (see :meth:`fact_of`); returns whether there was one."""
        slots = self.memory.slots
        if not slots.n:
            return False
        key = torch.tensor(list(fact), dtype=torch.uint8, device=slots.device)
        hit = (slots["fact"] == key).all(-1) & slots["active"]
        if not bool(hit.any()):
            return False
        slots.set_column("active", slots["active"] & ~hit)
        return True

    def route_of(self, image: Any, prompt: str, target: str | None = None) -> tuple[int, bool, bool]:
        """The slot (``-1``: none) an input routes to and whether its local and shared writes apply."""
        inputs = self.vlm.encode(image, prompt, target)
        with torch.no_grad():
            self.vlm.forward(inputs)
        route = self.memory.call.route if self.memory.call is not None else None
        if route is None:
            return NO_SLOT, False, False
        return int(route.slot[0]), bool(route.local[0]), bool(route.shared[0])

    def bytes_per_slot(self) -> int:
        return self.memory.slots.nbytes_per_row()

    # -- state (see scopememory/state.py) ---------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return memory_state(self)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_memory_state(self, state)

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": self.config.to_dict()}

    def reset(self) -> None:
        """Forget every slot (the reference centring stays)."""
        self.memory.slots.n = 0
        for table in self.memory.examples.values():
            table.n = 0
        self.edits_applied = 0

    def remove(self) -> nn.Module:
        """Take the memory out of the model (which becomes the base model again) and return it."""
        self.memory.remove()
        return self.model

    def save_pretrained(self, directory: Any, processor: Any) -> Any:
        """A routed checkpoint that plain transformers loads (see ``scopememory/export.py``)."""
        from editscope.editors.scopememory.export import save_routed

        return save_routed(self, directory, processor)

    def merge(self) -> nn.Module:
        raise NotImplementedError(
            "ScopeMemory routes each input to its slot, which static weights cannot do: export a routed "
            "checkpoint instead (editscope export --merged on a ScopeMemory store, or ScopeMemory.save_pretrained)"
        )
