"""Rehearsal (beyond the paper): after each edit, re-check ``count`` earlier facts, the ones
checked or edited longest ago (round robin over the facts the re-edit rule remembers), and
write again, as a re-edit, each whose latest target's loss is at or above ``loss``
(``stopping.stop_loss`` where it is 0), so that what later edits wore away is restored at a cost
per edit bounded by ``count`` more writes.

State: ``rehearsal/index`` (JSON: the queue in check order, each entry's fact key, scope and
the names of its tensors) and ``rehearsal/<i>.<name>``, the encoded edit input of the ``i``-th
entry (``target_ids``, ``target_positions``, ``image_positions``, ``tensors.<model input>``),
kept on the host.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from editscope.editors.base import EditRejected
from editscope.editors.scopeedit.options import check_choice, check_int, check_number, option
from editscope.editors.scopeedit.plugin import INDEX, Plugin, Write, index_tensor, read_index
from editscope.types import SCOPES, ModelInputs

logger = logging.getLogger(__name__)

WRITE_RULES = ("replace", "topup")
INPUT_FIELDS = ("target_ids", "target_positions", "image_positions")
Queue = OrderedDict[str, tuple[ModelInputs, str]]


@dataclass(frozen=True)
class RehearsalConfig:
    """Rehearsal of earlier facts; needs a re-edit rule (``reedit``, the facts it re-checks) and
    a stopping loss (``stopping.stop_loss > 0``, the loss under which a fact counts as held)."""

    count: int = option(1, "earlier facts re-checked after each edit")
    loss: float = option(0.0, "a re-checked fact whose loss is at or above this is written again "
                              "(0: stopping.stop_loss)")
    write: str = option("replace", "'replace': a re-checked fact is written as a re-edit (its earlier write "
                                   "out first, under reedit rule 'replace'); 'topup': on top of what it holds, "
                                   "and what the rewrite adds joins the fact's remembered write")
    steps: int = option(0, "most steps of one rehearsal write (0: steps_per_edit)")

    def __post_init__(self) -> None:
        check_int("rehearsal.count", self.count, 1)
        check_number("rehearsal.loss", self.loss, non_negative=True)
        check_choice("rehearsal.write", self.write, WRITE_RULES)
        check_int("rehearsal.steps", self.steps, 0)

    def check(self, config: Any) -> None:
        """The requirements on the rest of the configuration."""
        if config.reedit is None or config.stopping is None or not config.stopping.stop_loss > 0:
            raise ValueError(
                "ScopeEditConfig.rehearsal needs reedit (rule release or replace: the facts it re-checks) "
                "and stopping.stop_loss > 0 (the loss under which a fact counts as held); "
                "rehearsal: null (rehearse: 0) turns it off"
            )


class Rehearsal(Plugin):
    name = "rehearsal"
    config: RehearsalConfig

    def __init__(self, editor, config: RehearsalConfig) -> None:
        super().__init__(editor, config)
        self.queue: Queue = OrderedDict()  # each remembered fact's latest edit input and scope

    def after_edit(self, job: Write) -> int:
        self._enqueue(job.key, job.inputs, job.scope)
        return self._rehearse()

    def reset(self) -> None:
        self.queue.clear()

    def _enqueue(self, key: str, inputs: ModelInputs, scope: str) -> None:
        """Keep a fact's latest edit input at the back of the queue (on the host)."""
        self.queue.pop(key, None)
        self.queue[key] = (inputs.to("cpu"), scope)
        while len(self.queue) > self.editor.config.reedit.memory:
            self.queue.popitem(last=False)

    def _rehearse(self) -> int:
        """Re-check the facts at the front of the queue (never the edit just made, which sits at
        the back) and write again each whose loss is at or above the bound. Returns how many were
        written. A rewrite that fails is rolled back and skipped with a warning: the edit stands."""
        cfg, editor = self.config, self.editor
        bound = cfg.loss or editor.config.stopping.stop_loss
        written = 0
        for _ in range(min(cfg.count, len(self.queue) - 1)):
            key, (stored, scope) = next(iter(self.queue.items()))
            self.queue.move_to_end(key)
            inputs = stored.to(editor.vlm.device)
            with torch.no_grad():
                loss = float(editor._loss(inputs))
            if loss < bound:
                continue
            job = Write(inputs, editor._reference_anchors(), scope, key=key, topup=cfg.write == "topup",
                        max_steps=cfg.steps or None)
            try:
                editor._write(job)
            except EditRejected as error:
                logger.warning("rehearsal skipped an earlier fact: %s", error)
                continue
            written += 1
        return written

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        index = []
        for i, (key, (inputs, scope)) in enumerate(self.queue.items()):
            named = {**{n: getattr(inputs, n) for n in INPUT_FIELDS},
                     **{f"tensors.{n}": t for n, t in inputs.tensors.items()}}
            for name, tensor in named.items():
                state[f"{i}.{name}"] = tensor.clone()
            index.append({"key": key, "scope": scope, "tensors": list(named)})
        state[INDEX] = index_tensor({"queue": index})
        return state

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for inputs, _ in self.queue.values()
                   for t in (*inputs.tensors.values(), *(getattr(inputs, n) for n in INPUT_FIELDS)))

    def read_state(self, state: dict[str, torch.Tensor]) -> Queue:
        queue: Queue = OrderedDict()
        if not state:
            return queue
        listed = {INDEX}
        for i, entry in enumerate(read_index(state, self.name)["queue"]):
            key, scope, names = entry.get("key") or "", entry.get("scope"), entry.get("tensors", [])
            listed.update(f"{i}.{n}" for n in names)
            found = {n: state[f"{i}.{n}"] for n in names if f"{i}.{n}" in state}
            missing = [n for n in (*INPUT_FIELDS, "tensors.input_ids") if n not in found]
            missing += [n for n in names if n not in found and n not in missing]
            if missing or scope not in SCOPES or not key:
                raise ValueError(
                    f"editor state: rehearsal entry {i} ({key[:12]}) is incomplete "
                    f"(missing {missing}, scope {scope!r})"
                )
            # kept on the host, as _enqueue keeps them
            tensors = {n[len("tensors."):]: t.cpu().clone() for n, t in found.items() if n.startswith("tensors.")}
            inputs = ModelInputs(tensors=tensors, **{n: found[n].cpu().clone() for n in INPUT_FIELDS})
            queue[key] = (inputs, scope)
        extra = sorted(set(state) - listed)
        if extra:
            raise ValueError(f"editor state: rehearsal entries not in its index: {extra[:5]}")
        return queue

    def set_state(self, queue: Queue) -> None:
        self.queue = queue
