"""The editor loop of docs/method.md: ScopeEdit (a local branch for absorption and a shared
branch gated by the agreement of textual and visual evidence, at every site) and M-ORE (one
preconditioned branch per site).

One edit: forward the edit input, take the gradients of the target loss on the ``B`` matrices,
write the ``top_k`` groups with the largest gradients (the local branch at every site of a
group, the shared branch at the first ``shared_layers`` decoder groups where the gate opens),
``steps_per_edit`` times, then fold the locality anchors into ``P_l``; all of it as one
transaction. The options beyond the paper plug in through ``self.hooks`` (``plugin``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from editscope.config import ScopeEditConfig
from editscope.core.capture import Capture, Positions, capture_codes
from editscope.core.linalg import site_seed
from editscope.core.site import EditSite
from editscope.core.update import local_update, shared_update
from editscope.editors.base import Editor, EditRejected, target_loss, trainable
from editscope.editors.scopeedit.anchors import Anchors
from editscope.editors.scopeedit.lifecycle import Lifecycle
from editscope.editors.scopeedit.plugin import Hooks, Write
from editscope.editors.transaction import Transaction
from editscope.types import EditRequest, EditResult, GateValues, ModelInputs

PROJECTOR = "projector"


class RecursiveEditor(Anchors, Lifecycle, Editor):
    """What ScopeEdit and M-ORE share: sites, group scoring and the local branch (the locality
    anchors are in :class:`Anchors`; the state, reset, remove and merge in :class:`Lifecycle`).
    Subclasses decide the branch ranks and whether a shared step runs."""

    name = "recursive"

    def __init__(self, vlm: Any, config: ScopeEditConfig | None = None) -> None:
        """A configuration with a ``prior`` takes its reference set from
        ``editscope.editors.registry.build_editor(..., reference=)`` (or :meth:`fold_reference`)."""
        super().__init__(vlm)
        self.hooks = Hooks(())
        self.config = config if config is not None else ScopeEditConfig()
        self.model: nn.Module = vlm.model
        self.model.requires_grad_(False)
        self.model.eval()
        method = self.config.method
        self.groups: dict[str, list[str]] = vlm.site_paths(method.n_last_layers, method.include_projector)
        rank_local, rank_shared = self._ranks()
        self.sites: dict[str, EditSite] = {}
        for paths in self.groups.values():
            for path in paths:
                base = self.model.get_submodule(path)
                if isinstance(base, EditSite):
                    raise ValueError(f"{path} already holds an edit site: remove() the other editor first")
                self.sites[path] = EditSite(
                    base, self.hooks.site_rank(path, base, rank_local, rank_shared), rank_shared,
                    scaling=self.config.scaling, seed=site_seed(method.seed, path),
                    basis=method.basis, code_norm=method.code_norm,
                )
        for path, site in self.sites.items():
            self.model.set_submodule(path, site)
        self._projector_sites = frozenset(self.groups.get(PROJECTOR, ()))
        self._anchor_set: list[ModelInputs] = []  # the deployment reference set of anchors
        self.prior_in_p = False  # a reference prior is in P (folded or loaded with a state)
        self._initial_p: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # where reset() returns

    # -- what the variants decide -------------------------------------------------------------
    def _variant(self, config: ScopeEditConfig) -> ScopeEditConfig:
        """The configuration this variant runs (M-ORE turns the shared branch off)."""
        return config

    def _ranks(self) -> tuple[int, int]:
        raise NotImplementedError

    def _key_sites(self, inputs: ModelInputs, scope: str) -> frozenset[str]:
        return frozenset()

    def _shared_step(self, capture: Capture, grads: dict, active: list[str], scope: str, tx: Transaction,
                     policy: Any, scale: float) -> dict:
        """Write the shared branch; returns per-group gate tensors. M-ORE has none."""
        return {}

    # -- the edit -----------------------------------------------------------------------------
    def edit(self, request: EditRequest) -> EditResult:
        if not isinstance(request, EditRequest):
            raise TypeError(f"edit() takes an EditRequest, got {type(request).__name__}")
        self.refuse_examples(request)
        start = time.perf_counter()
        inputs = self.vlm.encode(request.image, request.prompt, request.target)
        anchors = [self.vlm.encode(p.image, p.prompt, p.answer) for p in request.anchors]
        job = Write(inputs, anchors + self._reference_anchors(), request.effective_scope)
        self.hooks.before_edit(job)
        loss_before, touched, gates, steps, loss_after = self._write(job)
        self.edits_applied += 1
        rehearsed = self.hooks.after_edit(job)
        return EditResult(
            edit_id=self.edits_applied,
            loss_before=loss_before,
            loss_after=loss_after,
            active_groups=tuple(sorted(touched, key=self._group_order)),
            gates={g: GateValues(cos=float(v[0]), support=float(v[1]), g=float(v[2]))
                   for g, v in ((g, t.tolist()) for g, t in gates.items())},
            wall_time_s=time.perf_counter() - start,
            steps=steps,
            rehearsed=rehearsed,
        )

    def _write(self, job: Write) -> tuple[float, set[str], dict, int, float]:
        """One write's steps and anchors as one transaction: everything or, on any error,
        nothing. Returns the loss before and after, the groups written, the gates and the
        number of steps."""
        with Transaction() as tx:  # an error leaving the block rolls every touched site back
            self.hooks.begin_write(job, tx)
            loss_before, touched, gates, steps = self._steps(job, tx)
            self.hooks.after_steps(job, tx)
            self._fold_anchors(job.anchors, touched, tx)
            with torch.no_grad():
                loss_after = self._loss(job.inputs)
            tx.require_finite(loss_after)
        self.hooks.commit(job)
        return loss_before, touched, gates, steps, float(loss_after)

    def _steps(self, job: Write, tx: Transaction) -> tuple[float, set[str], dict, int]:
        method = self.config.method
        positions = self._positions(job.inputs)
        key_sites = self._key_sites(job.inputs, job.scope)
        policy = self.hooks.fold_policy(job)
        group_names = list(self.groups)
        k = min(method.top_k, len(group_names))
        touched: set[str] = set()
        loss_before, gates, taken = float("nan"), {}, 0
        for step in range(job.max_steps or method.steps_per_edit):
            with self._trainable() as params, capture_codes(
                self.sites, positions, self._projector_sites, key_sites, policy.codes
            ) as capture:
                loss = self._loss(job.inputs)
                if self.hooks.stop(loss):  # absorbed: stop before the backward and before writing more
                    loss_before = float(loss.detach()) if step == 0 else loss_before
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
            # The one host sync of a step: the loss, the finiteness flag and the chosen groups.
            host = torch.cat([loss.detach().reshape(1), finite.reshape(1).float(), top.float()]).tolist()
            if step == 0:
                loss_before = host[0]
            if host[1] != 1.0:
                raise EditRejected(f"non-finite loss or gradient at step {step + 1}; the editor state is unchanged")
            taken += 1
            active = [used[int(i)] for i in host[2:]]
            touched.update(active)
            scale = self.hooks.step_scale(taken)
            self._local_step(capture, grads, active, tx, policy, scale)
            policy.reached(capture)
            gates = self._shared_step(capture, grads, active, job.scope, tx, policy, scale)
        policy.finish(tx)
        return loss_before, touched, gates, taken

    def _local_step(self, capture: Capture, grads: dict, active: list[str], tx: Transaction,
                    policy: Any, scale: float) -> None:
        method = self.config.method
        with torch.no_grad():
            for group in active:
                eta = scale * (method.projector_eta if group == PROJECTOR else method.eta)
                for path in self.groups[group]:
                    site, record = self.sites[path], capture.sites[path]
                    tx.touch(site)
                    local_update(site, grads[id(site.B_local)], record.z, eta, method.lambda_local,
                                 fold=policy.fold_each_step)
                    policy.local(path, record, record.z)

    def _group_order(self, group: str) -> tuple[int, int]:
        return (1, 0) if group == PROJECTOR else (0, int(group.split(".")[-1]))

    def _positions(self, inputs: ModelInputs) -> Positions:
        return Positions(target=inputs.target_positions, image=inputs.image_positions)

    def _loss(self, inputs: ModelInputs) -> torch.Tensor:
        return target_loss(self.vlm, inputs)

    def _trainable(self):
        """Gradients on every non-empty ``B`` for the duration of the block."""
        return trainable([p for s in self.sites.values() for p in (s.B_local, s.B_shared) if p.numel()])


class ScopeEdit(RecursiveEditor):
    """ScopeEdit: a local branch for absorption and a shared branch whose writes are gated by
    the agreement of textual and visual evidence (``shared = None``: the branch is off, M-ORE)."""

    name = "scopeedit"

    def _ranks(self) -> tuple[int, int]:
        return self.config.method.rank_local, self.config.rank - self.config.method.rank_local

    def _shared_groups(self, active: list[str]) -> list[str]:
        # The projector never writes a shared branch: its input holds image features only, so
        # there is no text key and the gate stays closed.
        decoder = sorted((g for g in active if g != PROJECTOR), key=self._group_order)
        return decoder[: self.config.shared.shared_layers]

    def _key_sites(self, inputs: ModelInputs, scope: str) -> frozenset[str]:
        if scope == "instance" or inputs.image_positions.numel() == 0 or self.config.shared is None:
            return frozenset()  # the gate is closed: no keys needed
        return frozenset(p for g, paths in self.groups.items() if g != PROJECTOR for p in paths)

    def _shared_step(self, capture: Capture, grads: dict, active: list[str], scope: str, tx: Transaction,
                     policy: Any, scale: float) -> dict:
        shared = self.config.shared
        gates: dict[str, torch.Tensor] = {}
        if shared is None:
            return gates
        for group in self._shared_groups(active):
            values = []
            for path in self.groups[group]:
                site, record = self.sites[path], capture.sites[path]
                if record.k_text is None or record.k_image is None:
                    continue  # a missing key closes the gate
                tx.touch(site)
                gate = shared_update(
                    site, grads[id(site.B_shared)], record.k_text, record.k_image,
                    eta=scale * shared.eta_shared, lam=shared.lambda_shared, tau=shared.tau, beta=shared.beta,
                    eps=shared.gate_eps, force_open=scope == "broad", fold=policy.fold_each_step,
                )
                values.append(torch.stack([gate.cos, gate.support, gate.g]))
                policy.shared(path, gate)
            if values:
                gates[group] = torch.stack(values).mean(0)
        return gates


class MORE(ScopeEdit):
    """M-ORE: ScopeEdit with the shared branch off (``shared = None``), its one preconditioned
    branch per site of rank ``rank_local + shared.rank_shared`` (a configuration that has a
    shared section gives its rank to the local branch, so that one preset serves both)."""

    name = "more"

    def _variant(self, config: ScopeEditConfig) -> ScopeEditConfig:
        if config.shared is None:
            return config
        return dataclasses.replace(config, method=dataclasses.replace(config.method, rank_local=config.rank),
                                   shared=None)
