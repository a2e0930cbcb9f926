"""The re-edit rule (beyond the paper): what happens when a fact is edited again.

The method ("protect", ``ScopeEditConfig.reedit = None``) keeps the codes of the fact's earlier
edits in the preconditioners, so the history protection damps the new value along exactly the
directions it has to move. ``"release"`` takes those codes back out of ``P`` first (a
Sherman–Morrison downdate), so the latest correction writes as freely as a first one;
``"replace"`` also subtracts the fact's earlier writes from the ``B`` matrices, so a fact edited
many times leaves one write in the model, not one per edit. A fact is the same image and prompt
(:func:`~editscope.editors.scopeedit.writes.fact_key`); the last ``memory`` facts are kept.

State: ``reedit/index`` (JSON: the facts in memory order, each with its key and the site and
branch of each of its tensors) and ``reedit/<i>.<j>``, the ``j``-th tensor of the ``i``-th fact:
a write (``B_local`` | ``B_shared``, the matrix or its factors) or the codes one branch of one
site folded (``local`` | ``shared``, one row each).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from editscope.core.linalg import sherman_morrison_downdate
from editscope.editors.scopeedit.options import check_choice, check_int, option
from editscope.editors.scopeedit.plugin import INDEX, Plugin, Write, index_tensor, read_index
from editscope.editors.scopeedit.writes import WRITES, check_write, compact_write, expand_write, fact_key
from editscope.editors.transaction import Transaction

RULES = ("release", "replace")
# (site path, "local" | "shared", code) for every code one edit folded into a preconditioner,
# and, under "replace", (site path, "B_local" | "B_shared", change) for what it wrote
Folded = list[tuple[str, str, torch.Tensor]]


@dataclass(frozen=True)
class ReeditConfig:
    """The re-edit rule: a fact edited again first gives back what its earlier edits took."""

    rule: str = option("release", "'release': the fact's earlier codes are taken out of P before it is written "
                                  "again; 'replace': its earlier writes are taken out of B too")
    memory: int = option(4096, "how many facts (the latest) are remembered, with their codes and writes")

    def __post_init__(self) -> None:
        check_choice("reedit.rule", self.rule, RULES)
        check_int("reedit.memory", self.memory, 0)


class Reedit(Plugin):
    name = "reedit"
    config: ReeditConfig

    def __init__(self, editor, config: ReeditConfig) -> None:
        super().__init__(editor, config)
        self.facts: OrderedDict[str, Folded] = OrderedDict()

    # -- one write ----------------------------------------------------------------------------
    def before_edit(self, job: Write) -> None:
        job.key = fact_key(job.inputs)

    def begin_write(self, job: Write, tx: Transaction) -> None:
        job.notes[self.name] = {"folded": [], "earlier": self.facts.get(job.key, [])}
        if job.key in self.facts and not job.topup:
            self._release(self.facts[job.key], tx)
        if self.config.rule == "replace":
            tx.mark_writes()

    def on_fold(self, job: Write, path: str, branch: str, code: torch.Tensor) -> None:
        site = self.editor.sites[path]
        dtype = (site.P_local if branch == "local" else site.P_shared).dtype
        job.notes[self.name]["folded"].append((path, branch, code.detach().to(dtype).clone()))

    def after_steps(self, job: Write, tx: Transaction) -> None:
        if self.config.rule == "replace":
            job.notes[self.name]["folded"].extend(self._writes(tx))

    def commit(self, job: Write) -> None:
        note = job.notes[self.name]
        self._remember(job.key, self._merged(note["earlier"], note["folded"]) if job.topup else note["folded"])

    def reset(self) -> None:
        self.facts.clear()

    def _writes(self, tx: Transaction) -> Folded:
        """What the steps of this write put into each site's ``B`` matrices (non-zero ones)."""
        path_of = {id(site): path for path, site in self.editor.sites.items()}
        entries: Folded = []
        for site, local, shared in tx.writes():
            for branch, change in (("B_local", local), ("B_shared", shared)):
                if change.numel() and bool(change.any()):
                    entries.append((path_of[id(site)], branch, compact_write(change).clone()))
        return entries

    def _release(self, folded: Folded, tx: Transaction) -> None:
        """Take a fact's earlier codes back out of the preconditioners (and, under "replace",
        its earlier writes out of ``B``) before it is edited again."""
        with torch.no_grad():
            for path, branch, code in folded:
                site = self.editor.sites[path]
                tx.touch(site)
                if branch in WRITES:
                    target = getattr(site, branch)
                    target.sub_(expand_write(code, target.shape).to(target.dtype))
                else:
                    p = site.P_local if branch == "local" else site.P_shared
                    p.copy_(sherman_morrison_downdate(p, code, self.editor.lam(branch)))

    def _merged(self, earlier: Folded, later: Folded) -> Folded:
        """A fact's remembered writes and codes with a top-up's added: the writes of one site and
        branch summed into one (kept compact, as the state keeps one per site), the codes side
        by side."""
        writes: dict[tuple[str, str], torch.Tensor] = {}
        codes: Folded = []
        for path, branch, value in (*earlier, *later):
            if branch not in WRITES:
                codes.append((path, branch, value))
                continue
            full = expand_write(value, getattr(self.editor.sites[path], branch).shape)
            writes[(path, branch)] = full + writes[(path, branch)] if (path, branch) in writes else full
        return [*((p, b, compact_write(w).clone()) for (p, b), w in writes.items()), *codes]

    def _remember(self, key: str, folded: Folded) -> None:
        # grouped by site (stable), the order the state keeps them in
        self.facts.pop(key, None)
        self.facts[key] = sorted(folded, key=lambda entry: (entry[0], entry[1]))
        while len(self.facts) > self.config.memory:
            self.facts.popitem(last=False)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        index = []
        for i, (key, folded) in enumerate(self.facts.items()):
            by_site: dict[tuple[str, str], list[torch.Tensor]] = {}
            for path, branch, code in folded:
                by_site.setdefault((path, branch), []).append(code)
            for j, ((path, branch), codes) in enumerate(by_site.items()):
                # a write is one matrix per site and fact; codes are stacked, one row each
                value = codes[0] if branch in WRITES else torch.stack(codes)
                state[f"{i}.{j}"] = value.detach().clone()
            index.append({"key": key, "entries": [list(e) for e in by_site]})
        state[INDEX] = index_tensor({"facts": index})
        return state

    def state_bytes(self) -> int:
        return sum(c.numel() * c.element_size() for folded in self.facts.values() for _, _, c in folded)

    def read_state(self, state: dict[str, torch.Tensor]) -> OrderedDict[str, Folded]:
        if not state:
            return OrderedDict()
        facts: OrderedDict[str, Folded] = OrderedDict()
        listed = {INDEX}
        for i, fact in enumerate(read_index(state, self.name)["facts"]):
            folded: Folded = []
            for j, (path, branch) in enumerate(fact["entries"]):
                name = f"{i}.{j}"
                listed.add(name)
                if name not in state:
                    raise ValueError(f"editor state reedit/{name}: listed in the index but missing")
                folded.extend(self._entry(f"reedit/{name} ({path} {branch})", path, branch, state[name]))
            facts[fact["key"]] = sorted(folded, key=lambda entry: (entry[0], entry[1]))
        extra = sorted(set(state) - listed)
        if extra:
            raise ValueError(f"editor state: re-edit memory entries not in its index: {extra[:5]}")
        return facts

    def set_state(self, facts: OrderedDict[str, Folded]) -> None:
        self.facts = facts

    def _entry(self, where: str, path: str, branch: str, tensor: torch.Tensor) -> Folded:
        if branch not in ("local", "shared", *WRITES) or path not in self.editor.sites or tensor.dim() != 2:
            raise ValueError(f"editor state {where}: not a re-edit memory entry of this editor")
        site = self.editor.sites[path]
        if branch in WRITES:
            target = getattr(site, branch)
            check_write(where, tensor, target)
            return [(path, branch, tensor.to(device=target.device, dtype=target.dtype).clone())]
        rank = site.rank_local if branch == "local" else site.rank_shared
        if tensor.shape[1] != rank or not torch.isfinite(tensor).all():
            raise ValueError(f"editor state {where}: codes of shape {tuple(tensor.shape)}, expected (n, {rank})")
        codes = tensor.to(device=site.P_local.device, dtype=site.P_local.dtype)
        return [(path, branch, c.clone()) for c in codes]
