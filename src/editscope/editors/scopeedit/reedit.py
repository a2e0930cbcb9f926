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
site folded (``local`` | ``shared``, one row each). In memory a fact is a :class:`Folded`, its
codes (:class:`Code`) and its writes (:class:`Change`) in separate lists, each with its
:class:`Branch`; those names are the state's only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterator

import torch

from editscope.core.linalg import sherman_morrison_downdate
from editscope.editors.scopeedit.options import check_choice, check_int, option
from editscope.editors.scopeedit.plugin import INDEX, Plugin, Write, index_tensor, read_index
from editscope.editors.scopeedit.writes import WRITES, check_write, compact_write, expand_write, fact_key
from editscope.editors.transaction import Transaction

RULES = ("release", "replace")


class Branch(Enum):
    """A site's branch: the local one (``B_local``, ``P_local``) or the shared one."""

    LOCAL = "local"
    SHARED = "shared"


@dataclass(frozen=True, eq=False)
class Code:
    """A code (one row) one edit folded into the preconditioner of ``branch`` at site ``path``."""

    path: str
    branch: Branch
    code: torch.Tensor

    @property
    def name(self) -> str:
        """Its name in the state's index: the branch ("local" | "shared")."""
        return self.branch.value


@dataclass(frozen=True, eq=False)
class Change:
    """What a fact's edits wrote into the ``B`` of ``branch`` at site ``path`` (rule "replace"),
    in its compact form (:func:`~editscope.editors.scopeedit.writes.compact_write`)."""

    path: str
    branch: Branch
    value: torch.Tensor

    @property
    def name(self) -> str:
        """Its name in the state's index and the matrix it was written to: "B_local" | "B_shared"."""
        return f"B_{self.branch.value}"


def _site_order(entry: Code | Change) -> tuple[str, str]:
    return entry.path, entry.branch.value


@dataclass(eq=False)
class Folded:
    """What the re-edit memory keeps of one fact: the codes its edits folded into the
    preconditioners and, under "replace", what they wrote into ``B``."""

    codes: list[Code] = field(default_factory=list)
    writes: list[Change] = field(default_factory=list)

    def sorted(self) -> "Folded":
        """Each list by site and branch (stable: a site's codes stay in the order folded)."""
        return Folded(sorted(self.codes, key=_site_order), sorted(self.writes, key=_site_order))

    def entries(self) -> list[tuple[str, str, torch.Tensor]]:
        """``(site path, name, tensor)`` of every write and code, by site and name: the order
        the state lists them in."""
        named = [(w.path, w.name, w.value) for w in self.writes] + [(c.path, c.name, c.code) for c in self.codes]
        return sorted(named, key=lambda entry: (entry[0], entry[1]))

    def tensors(self) -> Iterator[torch.Tensor]:
        yield from (w.value for w in self.writes)
        yield from (c.code for c in self.codes)


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
        job.notes[self.name] = {"folded": Folded(), "earlier": self.facts.get(job.key, Folded())}
        if job.key in self.facts and not job.topup:
            self._release(self.facts[job.key], tx)
        if self.config.rule == "replace":
            tx.mark_writes()

    def on_fold(self, job: Write, path: str, branch: str, code: torch.Tensor) -> None:
        which = Branch(branch)
        dtype = getattr(self.editor.sites[path], f"P_{which.value}").dtype
        job.notes[self.name]["folded"].codes.append(Code(path, which, code.detach().to(dtype).clone()))

    def after_steps(self, job: Write, tx: Transaction) -> None:
        if self.config.rule == "replace":
            job.notes[self.name]["folded"].writes.extend(self._writes(tx))

    def commit(self, job: Write) -> None:
        note = job.notes[self.name]
        self._remember(job.key, self._merged(note["earlier"], note["folded"]) if job.topup else note["folded"])

    def reset(self) -> None:
        self.facts.clear()

    def _writes(self, tx: Transaction) -> list[Change]:
        """What the steps of this write put into each site's ``B`` matrices (non-zero ones)."""
        path_of = {id(site): path for path, site in self.editor.sites.items()}
        entries: list[Change] = []
        for site, local, shared in tx.writes():
            for branch, change in ((Branch.LOCAL, local), (Branch.SHARED, shared)):
                if change.numel() and bool(change.any()):
                    entries.append(Change(path_of[id(site)], branch, compact_write(change).clone()))
        return entries

    def _release(self, folded: Folded, tx: Transaction) -> None:
        """Take a fact's earlier codes back out of the preconditioners (and, under "replace",
        its earlier writes out of ``B``) before it is edited again."""
        with torch.no_grad():
            for write in folded.writes:
                site = self.editor.sites[write.path]
                tx.touch(site)
                target = getattr(site, write.name)
                target.sub_(expand_write(write.value, target.shape).to(target.dtype))
            for code in folded.codes:  # in the order folded (each P's downdates in sequence)
                site = self.editor.sites[code.path]
                tx.touch(site)
                p = getattr(site, f"P_{code.branch.value}")
                p.copy_(sherman_morrison_downdate(p, code.code, self.editor.lam(code.branch.value)))

    def _merged(self, earlier: Folded, later: Folded) -> Folded:
        """A fact's remembered writes and codes with a top-up's added: the writes of one site and
        branch summed into one (kept compact, as the state keeps one per site), the codes side
        by side."""
        writes: dict[tuple[str, Branch], torch.Tensor] = {}
        for write in (*earlier.writes, *later.writes):
            key = (write.path, write.branch)
            full = expand_write(write.value, getattr(self.editor.sites[write.path], write.name).shape)
            writes[key] = full + writes[key] if key in writes else full
        return Folded([*earlier.codes, *later.codes],
                      [Change(path, branch, compact_write(w).clone()) for (path, branch), w in writes.items()])

    def _remember(self, key: str, folded: Folded) -> None:
        # grouped by site (stable), the order the state keeps them in
        self.facts.pop(key, None)
        self.facts[key] = folded.sorted()
        while len(self.facts) > self.config.memory:
            self.facts.popitem(last=False)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        index = []
        for i, (key, folded) in enumerate(self.facts.items()):
            by_site: dict[tuple[str, str], list[torch.Tensor]] = {}
            for path, name, tensor in folded.entries():
                by_site.setdefault((path, name), []).append(tensor)
            for j, ((path, name), tensors) in enumerate(by_site.items()):
                # a write is one matrix per site and fact; codes are stacked, one row each
                value = tensors[0] if name in WRITES else torch.stack(tensors)
                state[f"{i}.{j}"] = value.detach().clone()
            index.append({"key": key, "entries": [list(e) for e in by_site]})
        state[INDEX] = index_tensor({"facts": index})
        return state

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for folded in self.facts.values() for t in folded.tensors())

    def read_state(self, state: dict[str, torch.Tensor]) -> OrderedDict[str, Folded]:
        if not state:
            return OrderedDict()
        facts: OrderedDict[str, Folded] = OrderedDict()
        listed = {INDEX}
        for i, fact in enumerate(read_index(state, self.name)["facts"]):
            folded = Folded()
            for j, (path, name) in enumerate(fact["entries"]):
                entry = f"{i}.{j}"
                listed.add(entry)
                if entry not in state:
                    raise ValueError(f"editor state reedit/{entry}: listed in the index but missing")
                read = self._entry(f"reedit/{entry} ({path} {name})", path, name, state[entry])
                folded.codes.extend(read.codes)
                folded.writes.extend(read.writes)
            facts[fact["key"]] = folded.sorted()
        extra = sorted(set(state) - listed)
        if extra:
            raise ValueError(f"editor state: re-edit memory entries not in its index: {extra[:5]}")
        return facts

    def set_state(self, facts: OrderedDict[str, Folded]) -> None:
        self.facts = facts

    def _entry(self, where: str, path: str, name: str, tensor: torch.Tensor) -> Folded:
        """One entry of the state's index: a write (``name`` "B_local" | "B_shared") or the
        codes of one branch ("local" | "shared", one row each)."""
        if name not in ("local", "shared", *WRITES) or path not in self.editor.sites or tensor.dim() != 2:
            raise ValueError(f"editor state {where}: not a re-edit memory entry of this editor")
        site = self.editor.sites[path]
        if name in WRITES:
            target = getattr(site, name)
            check_write(where, tensor, target)
            value = tensor.to(device=target.device, dtype=target.dtype).clone()
            return Folded(writes=[Change(path, Branch(name[len("B_"):]), value)])
        branch = Branch(name)
        rank = site.rank_local if branch is Branch.LOCAL else site.rank_shared
        if tensor.shape[1] != rank or not torch.isfinite(tensor).all():
            raise ValueError(f"editor state {where}: codes of shape {tuple(tensor.shape)}, expected (n, {rank})")
        codes = tensor.to(device=site.P_local.device, dtype=site.P_local.dtype)
        return Folded(codes=[Code(path, branch, c.clone()) for c in codes])
