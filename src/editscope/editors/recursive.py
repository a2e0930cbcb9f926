"""Online recursive editors: M-ORE (one preconditioned branch per site) and ScopeEdit (a
local branch plus an evidence-gated shared branch). See docs/method.md."""

from __future__ import annotations

import copy
import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from editscope.config import ScopeEditConfig
from editscope.core.capture import Capture, Positions, capture_codes
from editscope.core.linalg import fold_second_moment, sherman_morrison, sherman_morrison_downdate, site_seed
from editscope.core.site import STATE_NAMES, EditSite
from editscope.core.update import fold_code, local_update, shared_update
from editscope.editors.base import Editor, EditRejected, trainable
from editscope.editors.transaction import Transaction
from editscope.types import SCOPES, EditRequest, EditResult, GateValues, ModelInputs, Probe

logger = logging.getLogger(__name__)

PROJECTOR = "projector"
EDIT_COUNT_KEY = "editor.edits_applied"
REEDIT_PREFIX = "reedit."
REHEARSE_PREFIX = "rehearse."
INPUT_FIELDS = ("target_ids", "target_positions", "image_positions")

# (site path, "local" | "shared", code) for every code one edit folded into a preconditioner,
# and, under reedit="replace", (site path, "B_local" | "B_shared", change) for what it wrote
Folded = list[tuple[str, str, torch.Tensor]]
# history_fold="edit": (site path, "local" | "shared") -> the code to fold once the edit's steps end
Pending = dict[tuple[str, str], torch.Tensor]
WRITES = ("B_local", "B_shared")
COMPACT_RTOL = 1e-6  # singular values below this fraction of the largest are float noise


def compact_write(change: torch.Tensor) -> torch.Tensor:
    """A write ``W`` (d_out x r) as it is kept in the re-edit memory: the matrix itself, or,
    where its numerical rank ``q`` makes it smaller, the factors of ``W = U V^T`` stacked as one
    (d_out + r) x q matrix ``[U; V]`` (``U`` holds the singular values). The factors drop only
    singular values below ``COMPACT_RTOL`` of the largest."""
    d_out, r = change.shape
    u, values, vh = torch.linalg.svd(change.double(), full_matrices=False)
    q = int((values > COMPACT_RTOL * values[0]).sum()) if values.numel() and float(values[0]) > 0 else 0
    if (d_out + r) * q >= d_out * r:
        return change
    return torch.cat([u[:, :q] * values[:q], vh[:q].T]).to(change.dtype)


def expand_write(stored: torch.Tensor, shape: torch.Size | tuple[int, int]) -> torch.Tensor:
    """The write ``W`` of shape ``shape`` back from what :func:`compact_write` kept."""
    d_out, r = shape
    if tuple(stored.shape) == (d_out, r):
        return stored
    return stored[:d_out] @ stored[d_out:].T


def fact_key(inputs: ModelInputs) -> str:
    """Identity of the fact an edit input asks about: its image tensors and its prompt tokens
    (the target is not part of it, so a re-edit to a new value has the same key)."""
    digest = hashlib.sha1()
    ids = inputs.input_ids.reshape(-1)
    end = int(inputs.target_positions[0]) + 1 if inputs.target_positions.numel() else ids.numel()
    digest.update(ids[:end].detach().cpu().to(torch.int64).numpy().tobytes())
    for name in sorted(inputs.tensors):
        if name in ("input_ids", "attention_mask"):
            continue
        tensor = inputs.tensors[name].detach().cpu().contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class RecursiveEditor(Editor):
    """Machinery shared by M-ORE and ScopeEdit: sites, group scoring, the local branch,
    locality anchors, state handling and merging. Subclasses decide the branch ranks and
    whether a shared step runs."""

    name = "recursive"

    def __init__(self, vlm: Any, config: ScopeEditConfig | None = None,
                 reference: Sequence[Probe | ModelInputs] | None = None) -> None:
        """``reference``: the reference set of a configuration with ``reference_weight > 0``,
        folded at once (see :meth:`fold_reference`; ``editscope.load_reference`` builds one)."""
        super().__init__(vlm)
        self.config = config if config is not None else ScopeEditConfig()
        if reference is not None and not self.config.reference_weight > 0:
            raise ValueError("a reference set was given but the configuration's reference_weight is 0")
        self.model: nn.Module = vlm.model
        self.model.requires_grad_(False)
        self.model.eval()
        self.groups: dict[str, list[str]] = vlm.site_paths(
            self.config.n_last_layers, self.config.include_projector
        )
        rank_local, rank_shared = self._ranks()
        self.sites: dict[str, EditSite] = {}
        for group, paths in self.groups.items():
            for path in paths:
                base = self.model.get_submodule(path)
                if isinstance(base, EditSite):
                    raise ValueError(f"{path} already holds an edit site: remove() the other editor first")
                if self.config.site_rank == "fill" and isinstance(base, nn.Linear):
                    rank_local = base.in_features - rank_shared
                    if rank_local < 1:
                        raise ValueError(
                            f"site_rank fill: {path} has input width {base.in_features}, "
                            f"no room beside rank_shared {rank_shared}"
                        )
                self.sites[path] = EditSite(
                    base,
                    rank_local,
                    rank_shared,
                    scaling=self.config.scaling,
                    seed=site_seed(self.config.seed, path),
                    basis=self.config.basis,
                    code_norm=self.config.code_norm,
                )
        for path, site in self.sites.items():
            self.model.set_submodule(path, site)
        self._group_of = {p: g for g, paths in self.groups.items() for p in paths}
        self._reference: list[ModelInputs] = []
        # reedit="release": the codes each remembered fact folded into the preconditioners
        self._facts: OrderedDict[str, Folded] = OrderedDict()
        # rehearse > 0: each remembered fact's latest encoded edit input and scope, in check order
        self._queue: OrderedDict[str, tuple[ModelInputs, str]] = OrderedDict()
        # reference_weight > 0: whether the prior is in P (folded here or loaded with a state)
        self._prior_in_p = False
        self._prior: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # P right after fold_reference
        if reference is not None:
            try:
                self.fold_reference(reference, self.config.reference_weight)
            except BaseException:
                self.remove()  # a failed construction leaves the model as it found it
                raise

    # -- configuration hooks for the variants ------------------------------------------------
    def _ranks(self) -> tuple[int, int]:
        raise NotImplementedError

    def _shared_step(self, capture: Capture, grads: dict, active: list[str], scope: str, tx: Transaction,
                     folded: Folded | None = None, scale: float = 1.0, pending: Pending | None = None) -> dict:
        """Write the shared branch; returns per-group gate tensors. M-ORE has none."""
        return {}

    # -- the edit -----------------------------------------------------------------------------
    def edit(self, request: EditRequest) -> EditResult:
        if not isinstance(request, EditRequest):
            raise TypeError(f"edit() takes an EditRequest, got {type(request).__name__}")
        start = time.perf_counter()
        if self.config.reference_weight > 0 and not self._prior_in_p and self.edits_applied == 0:
            warnings.warn(
                f"reference_weight is {self.config.reference_weight} but no reference set was folded: "
                "call fold_reference(probes, config.reference_weight) before the first edit "
                "(the bench and the store do it themselves)", stacklevel=2,
            )
        inputs = self.vlm.encode(request.image, request.prompt, request.target)
        anchors = [self.vlm.encode(p.image, p.prompt, p.answer) for p in request.anchors]
        anchors += self._reference_anchors()
        key = fact_key(inputs) if self.config.reedit in ("release", "replace") else None
        loss_before, touched_groups, gates, steps, loss_after = self._write(inputs, anchors, request.scope, key)
        self.edits_applied += 1
        rehearsed = 0
        if key is not None and self.config.rehearse:
            self._enqueue(key, inputs, request.scope)
            rehearsed = self._rehearse()
        gate_values = {
            g: GateValues(cos=float(v[0]), support=float(v[1]), g=float(v[2]))
            for g, v in ((g, t.tolist()) for g, t in gates.items())
        }
        return EditResult(
            edit_id=self.edits_applied,
            loss_before=loss_before,
            loss_after=loss_after,
            active_groups=tuple(sorted(touched_groups, key=self._group_order)),
            gates=gate_values,
            wall_time_s=time.perf_counter() - start,
            steps=steps,
            rehearsed=rehearsed,
        )

    def _write(self, inputs: ModelInputs, anchors: list[ModelInputs], scope: str,
               key: str | None, topup: bool = False,
               max_steps: int | None = None) -> tuple[float, set[str], dict, int, float]:
        """One edit's steps, anchors and re-edit bookkeeping as one transaction: everything or,
        on any error, nothing. Returns the loss before and after, the groups written, the gates
        and the number of steps. ``topup``: write on top of the fact's remembered write instead
        of releasing it first, and remember both together."""
        tx = Transaction()
        folded: Folded | None = [] if key is not None else None
        earlier = self._facts.get(key, []) if key is not None else []
        try:
            if key is not None and key in self._facts and not topup:
                self._release(self._facts[key], tx)
            if self.config.reedit == "replace":
                tx.mark_writes()
            loss_before, touched_groups, gates, steps = self._steps(inputs, scope, tx, folded, max_steps)
            if self.config.reedit == "replace" and folded is not None:
                folded.extend(self._writes(tx))
            self._fold_anchors(anchors, touched_groups, tx)
            with torch.no_grad():
                loss_after = self._loss(inputs)
            if not bool(torch.isfinite(loss_after)) or not tx.all_finite():
                raise EditRejected("the edit produced non-finite values; the editor state is unchanged")
        except BaseException:
            tx.rollback()
            raise
        if key is not None:
            self._remember(key, self._merged(earlier, folded or []) if topup else (folded or []))
        return loss_before, touched_groups, gates, steps, float(loss_after)

    # -- rehearsal (rehearse > 0) -------------------------------------------------------------
    def _enqueue(self, key: str, inputs: ModelInputs, scope: str) -> None:
        """Keep a fact's latest edit input at the back of the rehearsal queue (on the host)."""
        self._queue.pop(key, None)
        self._queue[key] = (inputs.to("cpu"), scope)
        while len(self._queue) > self.config.reedit_memory:
            self._queue.popitem(last=False)

    def _rehearse(self) -> int:
        """Re-check the ``rehearse`` facts at the front of the queue (checked or edited longest
        ago; never the edit just made, which sits at the back) and write again, as a re-edit,
        each whose loss is at or above ``rehearse_loss`` (``stop_loss`` where it is 0). Returns how
        many were written. A rewrite
        that fails is rolled back and skipped with a warning: the edit itself stands."""
        cfg = self.config
        bound = cfg.rehearse_loss or cfg.stop_loss
        written = 0
        for _ in range(min(cfg.rehearse, len(self._queue) - 1)):
            key, (stored, scope) = next(iter(self._queue.items()))
            self._queue.move_to_end(key)
            inputs = stored.to(self.vlm.device)
            with torch.no_grad():
                loss = float(self._loss(inputs))
            if loss < bound:
                continue
            try:
                self._write(inputs, self._reference_anchors(), scope, key, topup=cfg.rehearse_write == "topup",
                            max_steps=cfg.rehearse_steps or None)
            except EditRejected as error:
                logger.warning("rehearsal skipped an earlier fact: %s", error)
                continue
            written += 1
        return written

    def _group_order(self, group: str) -> tuple[int, int]:
        return (1, 0) if group == PROJECTOR else (0, int(group.split(".")[-1]))

    def _positions(self, inputs: ModelInputs) -> Positions:
        return Positions(target=inputs.target_positions, image=inputs.image_positions)

    def _loss(self, inputs: ModelInputs) -> torch.Tensor:
        logits = self.vlm.forward(inputs)[0]
        predicted = logits.index_select(0, inputs.target_positions.to(logits.device)).float()
        return F.cross_entropy(predicted, inputs.target_ids.to(logits.device))

    def _trainable(self):
        """Gradients on every non-empty ``B`` for the duration of the block."""
        return trainable([p for s in self.sites.values() for p in (s.B_local, s.B_shared) if p.numel()])

    def _key_sites(self, inputs: ModelInputs, scope: str) -> frozenset[str]:
        return frozenset()

    def _steps(self, inputs: ModelInputs, scope: str, tx: Transaction, folded: Folded | None = None,
               max_steps: int | None = None):
        cfg = self.config
        positions = self._positions(inputs)
        projector_sites = frozenset(self.groups.get(PROJECTOR, ()))
        key_sites = self._key_sites(inputs, scope)
        group_names = list(self.groups)
        k = min(cfg.top_k, len(group_names))
        touched: set[str] = set()
        loss_before = float("nan")
        gates: dict = {}
        taken = 0
        pending: Pending | None = {} if cfg.history_fold == "edit" else None
        position_codes = None if cfg.history_codes == "mean" else cfg.history_codes
        for step in range(max_steps or cfg.steps_per_edit):
            with self._trainable() as params, capture_codes(
                self.sites, positions, projector_sites, key_sites, position_codes
            ) as capture:
                loss = self._loss(inputs)
                if cfg.stop_loss > 0:  # absorbed: stop before the backward and before writing more
                    value = float(loss.detach())
                    if step == 0:
                        loss_before = value
                    if value < cfg.stop_loss:
                        break
                grad_list = torch.autograd.grad(loss, params, allow_unused=True)
            grads = {id(p): g for p, g in zip(params, grad_list)}
            # Groups the forward did not reach (the projector on a text-only edit) sit out.
            used = [g for g in group_names if all(p in capture.sites for p in self.groups[g])]
            scores = torch.stack(
                [sum(grads[id(self.sites[p].B_local)].norm().to(loss.device) for p in self.groups[g]) for g in used]
            )
            finite = torch.isfinite(loss) & torch.isfinite(scores).all()
            top = torch.topk(scores, min(k, len(used))).indices
            # The host sync of a step: the loss, the finiteness flag and the chosen groups (with
            # stop_loss, the loss has already been read once, before the backward).
            host = torch.cat([loss.detach().reshape(1), finite.reshape(1).float(), top.float()]).tolist()
            if step == 0:
                loss_before = host[0]
            if host[1] != 1.0:
                raise EditRejected(
                    f"non-finite loss or gradient at step {step + 1}; the editor state is unchanged"
                )
            taken += 1
            active = [used[int(i)] for i in host[2:]]
            touched.update(active)
            scale = cfg.eta_growth ** (taken - 1)  # the step of an edit not yet absorbed grows
            self._local_step(capture, grads, active, tx, folded, scale, pending)
            if pending is not None and cfg.history_sites == "all":  # the sites this step did not write too
                for path, record in capture.sites.items():
                    pending[(path, "local")] = (record.z if record.codes is None else record.codes).detach().clone()
            gates = self._shared_step(capture, grads, active, scope, tx, folded, scale, pending)
        if pending:
            self._fold_pending(pending, tx, folded)
        return loss_before, touched, gates, taken

    def _fold_pending(self, pending: Pending, tx: Transaction, folded: Folded | None) -> None:
        """history_fold="edit": fold each written site's last code (or, with ``history_codes``
        "target" | "all", each of its position codes) once, with weight ``history_weight`` (the
        code scaled by its square root)."""
        cfg = self.config
        weight = cfg.history_weight ** 0.5
        with torch.no_grad():
            for (path, branch), code in sorted(pending.items()):
                site = self.sites[path]
                tx.touch(site)
                p, lam = (site.P_local, cfg.lambda_local) if branch == "local" else (site.P_shared, cfg.lambda_shared)
                for row in (weight * code).to(p.dtype).reshape(-1, p.shape[0]):
                    p.copy_(sherman_morrison(p, row, lam))  # a zero code (a gate never open) leaves P as it is
                    if folded is not None:
                        folded.append((path, branch, row.detach().clone()))

    def _local_step(self, capture: Capture, grads: dict, active: list[str], tx: Transaction,
                    folded: Folded | None = None, scale: float = 1.0, pending: Pending | None = None) -> None:
        cfg = self.config
        with torch.no_grad():
            for group in active:
                eta = scale * (cfg.projector_eta if group == PROJECTOR else cfg.eta)
                for path in self.groups[group]:
                    site = self.sites[path]
                    tx.touch(site)
                    code = capture.sites[path].z
                    local_update(site, grads[id(site.B_local)], code, eta, cfg.lambda_local,
                                 fold=pending is None)
                    if pending is not None:
                        codes = capture.sites[path].codes
                        pending[(path, "local")] = (code if codes is None else codes).detach().clone()
                    elif folded is not None:
                        folded.append((path, "local", code.detach().to(site.P_local.dtype).clone()))

    # -- re-edits (reedit="release" | "replace") -------------------------------------------------
    def _writes(self, tx: Transaction) -> Folded:
        """What the steps of this edit wrote into each site's ``B`` matrices (non-zero ones)."""
        path_of = {id(site): path for path, site in self.sites.items()}
        entries: Folded = []
        for site, local, shared in tx.writes():
            for branch, change in (("B_local", local), ("B_shared", shared)):
                if change.numel() and bool(change.any()):
                    entries.append((path_of[id(site)], branch, compact_write(change).clone()))
        return entries

    def _release(self, folded: Folded, tx: Transaction) -> None:
        """Take a fact's earlier codes back out of the preconditioners (and, under "replace",
        its earlier writes out of ``B``) before it is edited again."""
        cfg = self.config
        with torch.no_grad():
            for path, branch, code in folded:
                site = self.sites[path]
                tx.touch(site)
                if branch in WRITES:
                    target = getattr(site, branch)
                    target.sub_(expand_write(code, target.shape).to(target.dtype))
                elif branch == "local":
                    site.P_local.copy_(sherman_morrison_downdate(site.P_local, code, cfg.lambda_local))
                else:
                    site.P_shared.copy_(sherman_morrison_downdate(site.P_shared, code, cfg.lambda_shared))

    def _merged(self, earlier: Folded, later: Folded) -> Folded:
        """A fact's remembered writes and codes with a top-up's added: the writes of one site and
        branch summed into one (kept compact, as the state file keeps one per site), the codes
        side by side."""
        writes: dict[tuple[str, str], torch.Tensor] = {}
        codes: Folded = []
        for path, branch, value in (*earlier, *later):
            if branch not in WRITES:
                codes.append((path, branch, value))
                continue
            full = expand_write(value, getattr(self.sites[path], branch).shape)
            writes[(path, branch)] = full + writes[(path, branch)] if (path, branch) in writes else full
        return [*((p, b, compact_write(w).clone()) for (p, b), w in writes.items()), *codes]

    def _remember(self, key: str, folded: Folded) -> None:
        # grouped by site (stable), the order the state file keeps them in
        self._facts.pop(key, None)
        self._facts[key] = sorted(folded, key=lambda entry: (entry[0], entry[1]))
        while len(self._facts) > self.config.reedit_memory:
            self._facts.popitem(last=False)

    # -- locality anchors ---------------------------------------------------------------------
    def add_locality_anchors(self, probes: Sequence[Probe]) -> None:
        """Add probes to the deployment reference set; ``anchors_per_edit`` of them are folded
        into the local preconditioners of the active groups after each edit (round robin)."""
        for probe in probes:
            self._reference.append(self.vlm.encode(probe.image, probe.prompt, probe.answer))

    def _reference_anchors(self) -> list[ModelInputs]:
        n = min(self.config.anchors_per_edit, len(self._reference))
        start = self.edits_applied * n
        return [self._reference[(start + j) % len(self._reference)] for j in range(n)]

    def _fold_anchors(self, anchors: list[ModelInputs], groups: set[str], tx: Transaction) -> None:
        projector_sites = frozenset(self.groups.get(PROJECTOR, ()))
        paths = [p for g in groups for p in self.groups[g]]
        for anchor in anchors:
            with torch.no_grad(), capture_codes(
                {p: self.sites[p] for p in paths}, self._positions(anchor), projector_sites
            ) as capture:
                self.vlm.forward(anchor)
                for path in paths:
                    if path not in capture.sites:  # not reached (the projector on a text-only anchor)
                        continue
                    tx.touch(self.sites[path])
                    fold_code(self.sites[path], capture.sites[path].z, self.config.lambda_local)

    # -- reference prior ------------------------------------------------------------------------
    def fold_reference(self, examples: Sequence[Probe | ModelInputs], weight: float,
                       progress: bool = False) -> None:
        """Fold the input statistics of a reference set into the preconditioners of every site.

        Each example is forwarded once without gradient; at every site and every position the
        branch codes ``A_l x`` and ``A_g x`` are taken, and ``weight`` times their second moment
        (the mean over examples of the mean over positions of ``c c^T``) is folded into
        ``P_l`` and ``P_g`` as if that many codes had been folded one by one. Later edits are
        then damped along the directions the reference inputs use most and keep their full
        step along the rarer directions that tell one input from another (a corpus prior in
        the spirit of MEMIT's key covariance; beyond the paper, see "Reference prior" in
        docs/method.md). Nothing is written until every example has been forwarded.
        """
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
            raise ValueError(f"the reference weight must be a positive number, got {weight!r}")
        if not examples:
            raise ValueError("the reference set is empty")
        encoded = [e if isinstance(e, ModelInputs) else self.vlm.encode(e.image, e.prompt, e.answer)
                   for e in examples]
        moments: dict[tuple[str, str], torch.Tensor] = {}

        def hook_for(path: str, hooked: EditSite):
            def hook(module: nn.Module, args: tuple) -> None:
                x = args[0].detach().reshape(-1, args[0].shape[-1]).to(hooked.A_local.dtype)
                for branch, basis in (("local", hooked.A_local), ("shared", hooked.A_shared)):
                    if basis.shape[0] == 0:
                        continue
                    codes = hooked._code(x, basis).double()
                    moment = codes.T @ codes / codes.shape[0]
                    key = (path, branch)
                    moments[key] = moments[key] + moment if key in moments else moment
            return hook

        handles = [s.register_forward_pre_hook(hook_for(p, s)) for p, s in self.sites.items()]
        try:
            with torch.no_grad():
                for inputs in tqdm(encoded, desc="reference", disable=not progress, leave=False):
                    self.vlm.forward(inputs)
        finally:
            for handle in handles:
                handle.remove()
        scale = float(weight) / len(encoded)
        if not all(bool(torch.isfinite(m).all()) for m in moments.values()):
            raise ValueError("the reference set produced non-finite activations; nothing was folded")
        cfg = self.config
        with torch.no_grad():
            for (path, branch), moment in moments.items():
                site = self.sites[path]
                if branch == "local":
                    site.P_local.copy_(fold_second_moment(site.P_local, scale * moment, cfg.lambda_local))
                else:
                    site.P_shared.copy_(fold_second_moment(site.P_shared, scale * moment, cfg.lambda_shared))
        self._prior_in_p = True
        if self.edits_applied == 0:
            self._prior = {p: (s.P_local.clone(), s.P_shared.clone()) for p, s in self.sites.items()}

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            f"{path}.{name}": getattr(site, name).detach().clone()
            for path, site in self.sites.items()
            for name in STATE_NAMES
        }
        state[EDIT_COUNT_KEY] = torch.tensor(self.edits_applied, dtype=torch.int64)
        for i, (key, folded) in enumerate(self._facts.items()):
            by_site: dict[tuple[str, str], list[torch.Tensor]] = {}
            for path, branch, code in folded:
                by_site.setdefault((path, branch), []).append(code)
            for (path, branch), codes in by_site.items():
                # a write is one matrix per site and fact; codes are stacked, one row each
                value = codes[0] if branch in WRITES else torch.stack(codes)
                state[f"{REEDIT_PREFIX}{i:06d}.{key}.{path}.{branch}"] = value.detach().clone()
        for i, (key, (inputs, scope)) in enumerate(self._queue.items()):
            head = f"{REHEARSE_PREFIX}{i:06d}.{key}."
            state[head + "scope"] = torch.tensor(SCOPES.index(scope), dtype=torch.int64)
            for name in INPUT_FIELDS:
                state[head + name] = getattr(inputs, name).clone()
            for name, tensor in inputs.tensors.items():
                state[head + "tensors." + name] = tensor.clone()
        return state

    def state_bytes(self) -> int:
        sites = sum(
            getattr(s, n).numel() * getattr(s, n).element_size() for s in self.sites.values() for n in STATE_NAMES
        )
        facts = sum(c.numel() * c.element_size() for folded in self._facts.values() for _, _, c in folded)
        queue = sum(t.numel() * t.element_size() for inputs, _ in self._queue.values()
                    for t in (*inputs.tensors.values(), *(getattr(inputs, n) for n in INPUT_FIELDS)))
        return sites + facts + queue

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {f"{p}.{n}": getattr(s, n) for p, s in self.sites.items() for n in STATE_NAMES}
        missing = sorted(set(expected) - set(state))
        facts = self._facts_from_state(state)
        queue = self._queue_from_state(state)
        unexpected = sorted(
            k for k in set(state) - set(expected) - {EDIT_COUNT_KEY}
            if not k.startswith((REEDIT_PREFIX, REHEARSE_PREFIX))
        )
        if missing or unexpected:
            raise ValueError(
                f"editor state does not match this editor: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for key, target in expected.items():
            if tuple(state[key].shape) != tuple(target.shape):
                raise ValueError(f"editor state {key}: shape {tuple(state[key].shape)} != {tuple(target.shape)}")
            if not torch.isfinite(state[key]).all():
                raise ValueError(f"editor state {key} holds non-finite values")
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(state[key].to(device=target.device, dtype=target.dtype))
        self.edits_applied = int(state[EDIT_COUNT_KEY]) if EDIT_COUNT_KEY in state else 0
        self._facts = facts
        self._queue = queue
        self._prior_in_p = True  # a saved state carries whatever prior its editor had
        if self.edits_applied == 0 and not all(
            torch.equal(s.P_local, torch.eye(s.rank_local, device=s.P_local.device)) for s in self.sites.values()
        ):  # an initial state with a prior in it: reset() returns here
            self._prior = {p: (s.P_local.clone(), s.P_shared.clone()) for p, s in self.sites.items()}

    def _facts_from_state(self, state: dict[str, torch.Tensor]) -> "OrderedDict[str, Folded]":
        entries: dict[tuple[int, str], Folded] = {}
        for name, tensor in state.items():
            if not name.startswith(REEDIT_PREFIX):
                continue
            head, _, branch = name.rpartition(".")
            index, _, rest = head[len(REEDIT_PREFIX):].partition(".")
            key, _, path = rest.partition(".")
            if branch not in ("local", "shared", *WRITES) or not index.isdigit() or path not in self.sites \
                    or tensor.dim() != 2:
                raise ValueError(f"editor state {name}: not a re-edit memory entry of this editor")
            site = self.sites[path]
            if branch in WRITES:
                target = getattr(site, branch)
                d_out, r = target.shape
                full = tensor.shape == target.shape
                factored = tensor.shape[0] == d_out + r and 0 < tensor.shape[1] < r
                if not (full or factored) or not torch.isfinite(tensor).all():
                    raise ValueError(
                        f"editor state {name}: a write of shape {tuple(tensor.shape)}, expected "
                        f"{(d_out, r)} or factors of shape ({d_out + r}, q < {r})"
                    )
                entries.setdefault((int(index), key), []).append(
                    (path, branch, tensor.to(device=target.device, dtype=target.dtype).clone())
                )
                continue
            rank = site.rank_local if branch == "local" else site.rank_shared
            if tensor.shape[1] != rank or not torch.isfinite(tensor).all():
                raise ValueError(f"editor state {name}: codes of shape {tuple(tensor.shape)}, expected (n, {rank})")
            codes = tensor.to(device=site.P_local.device, dtype=site.P_local.dtype)
            entries.setdefault((int(index), key), []).extend((path, branch, c.clone()) for c in codes)
        return OrderedDict(
            (key, sorted(folded, key=lambda entry: (entry[0], entry[1])))
            for (_, key), folded in sorted(entries.items())
        )

    @staticmethod
    def _queue_from_state(state: dict[str, torch.Tensor]) -> "OrderedDict[str, tuple[ModelInputs, str]]":
        entries: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for name, tensor in state.items():
            if not name.startswith(REHEARSE_PREFIX):
                continue
            index, _, rest = name[len(REHEARSE_PREFIX):].partition(".")
            key, _, field_name = rest.partition(".")
            if not index.isdigit() or not key or not field_name:
                raise ValueError(f"editor state {name}: not a rehearsal entry")
            entries.setdefault((int(index), key), {})[field_name] = tensor
        queue: OrderedDict[str, tuple[ModelInputs, str]] = OrderedDict()
        for (index, key), found in sorted(entries.items()):
            missing = [n for n in ("scope", *INPUT_FIELDS, "tensors.input_ids") if n not in found]
            scope = int(found["scope"]) if "scope" in found and found["scope"].numel() == 1 else -1
            if missing or not 0 <= scope < len(SCOPES):
                raise ValueError(
                    f"editor state: rehearsal entry {index} ({key[:12]}) is incomplete "
                    f"(missing {missing}, scope index {scope})"
                )
            # kept on the host, as _enqueue keeps them
            tensors = {n[len("tensors."):]: t.cpu().clone() for n, t in found.items() if n.startswith("tensors.")}
            inputs = ModelInputs(tensors=tensors, **{n: found[n].cpu().clone() for n in INPUT_FIELDS})
            queue[key] = (inputs, SCOPES[scope])
        return queue

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": self.config.to_dict()}

    def reset(self) -> None:
        """Forget every edit: ``B = 0``, and ``P`` back to ``I``, or to the reference prior
        where this editor folded one (a prior that came with a loaded state is not known apart
        from the edits folded after it: ``P = I`` then)."""
        with torch.no_grad():
            for path, site in self.sites.items():
                site.B_local.zero_()
                site.B_shared.zero_()
                if path in self._prior:
                    site.P_local.copy_(self._prior[path][0])
                    site.P_shared.copy_(self._prior[path][1])
                else:
                    site.P_local.copy_(torch.eye(site.rank_local, device=site.P_local.device))
                    site.P_shared.copy_(torch.eye(site.rank_shared, device=site.P_shared.device))
        self.edits_applied = 0
        self._facts.clear()
        self._queue.clear()
        self._prior_in_p = bool(self._prior)

    def remove(self) -> nn.Module:
        """Take the sites out of the model (which becomes the base model again) and return it."""
        for path, site in self.sites.items():
            self.model.set_submodule(path, site.base_layer)
        self.sites = {}
        return self.model

    def merge(self) -> nn.Module:
        """A copy of the model with ``W + s (B_l A_l + B_g A_g)`` in every site's weight and no
        editor modules: a plain Hugging Face model. The live editor is not changed."""
        weights = {}
        for path, site in self.sites.items():
            with torch.no_grad():
                weight = site.merged_weight()
            if not torch.isfinite(weight).all():
                raise ValueError(f"merging {path} gives non-finite weights; nothing was merged")
            weights[path] = weight
        merged = copy.deepcopy(self.model)
        with torch.no_grad():
            for path, weight in weights.items():
                linear = merged.get_submodule(path).base_layer
                linear.weight.copy_(weight.to(linear.weight.dtype))
                merged.set_submodule(path, linear)
        return merged


class MORE(RecursiveEditor):
    """M-ORE: one preconditioned local branch per site (rank ``rank_local + rank_shared``)."""

    name = "more"

    def _ranks(self) -> tuple[int, int]:
        return self.config.rank, 0


class ScopeEdit(RecursiveEditor):
    """ScopeEdit: a local branch for absorption and a shared branch whose writes are gated by
    the agreement of textual and visual evidence."""

    name = "scopeedit"

    def _ranks(self) -> tuple[int, int]:
        return self.config.rank_local, self.config.rank_shared

    def _shared_groups(self, active: list[str]) -> list[str]:
        # The projector never writes a shared branch: its input holds image features only, so
        # there is no text key and the gate stays closed.
        decoder = sorted((g for g in active if g != PROJECTOR), key=self._group_order)
        return decoder[: self.config.shared_layers]

    def _key_sites(self, inputs: ModelInputs, scope: str) -> frozenset[str]:
        if scope == "instance" or inputs.image_positions.numel() == 0 or not self.config.rank_shared:
            return frozenset()  # the gate is closed: no keys needed
        return frozenset(p for g, paths in self.groups.items() if g != PROJECTOR for p in paths)

    def _shared_step(self, capture: Capture, grads: dict, active: list[str], scope: str, tx: Transaction,
                     folded: Folded | None = None, scale: float = 1.0, pending: Pending | None = None) -> dict:
        cfg = self.config
        gates: dict[str, torch.Tensor] = {}
        for group in self._shared_groups(active):
            values = []
            for path in self.groups[group]:
                site = self.sites[path]
                record = capture.sites[path]
                if record.k_text is None or record.k_image is None:
                    continue  # a missing key closes the gate
                tx.touch(site)
                gate = shared_update(
                    site,
                    grads[id(site.B_shared)],
                    record.k_text,
                    record.k_image,
                    eta=scale * cfg.eta_shared,
                    lam=cfg.lambda_shared,
                    tau=cfg.tau,
                    beta=cfg.beta,
                    eps=cfg.gate_eps,
                    force_open=scope == "broad",
                    fold=pending is None,
                )
                values.append(torch.stack([gate.cos, gate.support, gate.g]))
                if pending is not None:  # the last step whose gate was open gives the code to fold
                    last = pending.get((path, "shared"), torch.zeros_like(gate.q))
                    pending[(path, "shared")] = torch.where(gate.g > 0, gate.q.detach(), last)
                elif folded is not None:  # a closed gate folded nothing: its code is kept as zeros
                    folded.append((path, "shared", (gate.q * (gate.g > 0)).detach().to(site.P_shared.dtype).clone()))
            if values:
                gates[group] = torch.stack(values).mean(0)
        return gates
