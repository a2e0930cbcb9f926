"""The hooks through which the options beyond the paper plug into the editor loop.

The loop in ``core`` is the method of docs/method.md and nothing else; each option is a
:class:`Plugin` (one module each, with its own frozen sub-config and its own state) installed
once, when its section of ``ScopeEditConfig`` is not ``None``, much as peft's ``LoraVariant``
hooks DoRA into one layer. The loop calls every hook through :class:`Hooks`, never an option
by name. The hooks, in the order of one edit:

- ``site_rank(path, base, rank_local, rank_shared)``: a site's local rank (construction);
- ``before_edit(job)``: before the edit input is written (``job.key`` may be set here);
- ``begin_write(job, tx)``: at the start of every write's transaction;
- ``stop(loss)``: whether the write ends before this step's backward;
- ``step_scale(taken)``: the factor of the ``taken``-th step's learning rates;
- ``fold_policy(job, hooks)``: when the write's codes enter the preconditioners (at most one
  plug-in may decide; :class:`StepFold`, the method's, otherwise);
- ``on_fold(job, path, branch, code)``: a code the write folded into ``P`` ("local" | "shared");
- ``after_steps(job, tx)``: after the steps, before the locality anchors;
- ``commit(job)``: the write succeeded (its transaction is kept);
- ``after_edit(job) -> int``: after the edit; returns how many earlier facts it rewrote;
- ``reset()``, ``state_dict()`` / ``load_state_dict(state)`` (``read_state`` then ``set_state``)
  / ``state_bytes()``: the plug-in's state, kept by the editor under the plug-in's ``name``
  (``"<name>/<key>"``), described by a small JSON index (``"<name>/index"``) where it has parts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import torch

from editscope.types import ModelInputs

if TYPE_CHECKING:
    from editscope.core.capture import Capture, SiteCapture
    from editscope.core.gate import Gate
    from editscope.editors.transaction import Transaction

INDEX = "index"  # the key of a plug-in's JSON index inside its state


@dataclass
class Write:
    """One write of an edit input as one transaction: the edit itself, or an earlier fact a
    plug-in writes again. ``key``: the fact's identity, where a plug-in needs one; ``topup``:
    write on top of what the fact holds; ``max_steps``: fewer steps than the method's;
    ``notes``: each plug-in's scratch space for this write, by plug-in name."""

    inputs: ModelInputs
    anchors: list[ModelInputs]
    scope: str
    key: str | None = None
    topup: bool = False
    max_steps: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Plugin:
    """An option beyond the paper. Subclasses set ``name`` (their state's namespace) and
    override the hooks they need; every hook here does nothing."""

    name = ""

    def __init__(self, editor: Any, config: Any) -> None:
        self.editor = editor
        self.config = config

    def site_rank(self, path: str, base: torch.nn.Module, rank_local: int, rank_shared: int) -> int:
        return rank_local

    def before_edit(self, job: Write) -> None: ...

    def begin_write(self, job: Write, tx: "Transaction") -> None: ...

    def stop(self, loss: torch.Tensor) -> bool:
        return False

    def step_scale(self, taken: int) -> float:
        return 1.0

    def fold_policy(self, job: Write, hooks: "Hooks") -> Any:
        return None

    def on_fold(self, job: Write, path: str, branch: str, code: torch.Tensor) -> None: ...

    def after_steps(self, job: Write, tx: "Transaction") -> None: ...

    def commit(self, job: Write) -> None: ...

    def after_edit(self, job: Write) -> int:
        return 0

    def reset(self) -> None: ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def read_state(self, state: dict[str, torch.Tensor]) -> Any:
        """The plug-in's state read from ``state`` (its own keys, without the namespace) and
        checked, changing nothing: the editor reads every part before it loads any."""
        if state:
            raise ValueError(f"editor state: the {self.name!r} option keeps no state, got {sorted(state)[:5]}")
        return None

    def set_state(self, parsed: Any) -> None:
        """Take the state :meth:`read_state` read."""

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.set_state(self.read_state(state))

    def state_bytes(self) -> int:
        return 0


class StepFold:
    """The method's fold (docs/method.md, steps 5 and 6): every step folds its codes at once."""

    codes = None  # the capture keeps the mean code z only
    fold_each_step = True

    def __init__(self, hooks: "Hooks", job: Write) -> None:
        self.hooks, self.job = hooks, job

    def local(self, path: str, record: "SiteCapture", code: torch.Tensor) -> None:
        self.hooks.on_fold(self.job, path, "local", code)

    def shared(self, path: str, gate: "Gate") -> None:
        # a closed gate folded nothing: its code counts as zeros
        self.hooks.on_fold(self.job, path, "shared", gate.q * (gate.g > 0))

    def reached(self, capture: "Capture") -> None: ...

    def finish(self, tx: "Transaction") -> None: ...


class Hooks:
    """The installed plug-ins, called in order."""

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        self.plugins = list(plugins)
        if sum(type(p).fold_policy is not Plugin.fold_policy for p in self.plugins) > 1:
            raise ValueError("at most one installed option may set when codes are folded")

    def by_name(self) -> dict[str, Plugin]:
        return {p.name: p for p in self.plugins}

    def site_rank(self, path: str, base: torch.nn.Module, rank_local: int, rank_shared: int) -> int:
        for p in self.plugins:
            rank_local = p.site_rank(path, base, rank_local, rank_shared)
        return rank_local

    def before_edit(self, job: Write) -> None:
        for p in self.plugins:
            p.before_edit(job)

    def begin_write(self, job: Write, tx: "Transaction") -> None:
        for p in self.plugins:
            p.begin_write(job, tx)

    def stop(self, loss: torch.Tensor) -> bool:
        return any(p.stop(loss) for p in self.plugins)

    def step_scale(self, taken: int) -> float:
        return math.prod((p.step_scale(taken) for p in self.plugins), start=1.0)

    def fold_policy(self, job: Write) -> Any:
        for p in self.plugins:
            policy = p.fold_policy(job, self)
            if policy is not None:
                return policy
        return StepFold(self, job)

    def on_fold(self, job: Write, path: str, branch: str, code: torch.Tensor) -> None:
        for p in self.plugins:
            p.on_fold(job, path, branch, code)

    def after_steps(self, job: Write, tx: "Transaction") -> None:
        for p in self.plugins:
            p.after_steps(job, tx)

    def commit(self, job: Write) -> None:
        for p in self.plugins:
            p.commit(job)

    def after_edit(self, job: Write) -> int:
        return sum(p.after_edit(job) for p in self.plugins)

    def reset(self) -> None:
        for p in self.plugins:
            p.reset()

    def state_bytes(self) -> int:
        return sum(p.state_bytes() for p in self.plugins)


def index_tensor(data: Any) -> torch.Tensor:
    """A plug-in's JSON index as a uint8 tensor (it is saved with the tensors it describes)."""
    return torch.frombuffer(bytearray(json.dumps(data, sort_keys=True).encode()), dtype=torch.uint8).clone()


def read_index(state: dict[str, torch.Tensor], owner: str) -> Any:
    """The JSON index of plug-in ``owner``'s state (a ValueError naming it if it is missing or
    unreadable)."""
    tensor = state.get(INDEX)
    if tensor is None or tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise ValueError(f"editor state: the {owner!r} state has no readable index ({owner}/{INDEX})")
    try:
        return json.loads(tensor.cpu().numpy().tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"editor state: the {owner!r} index is not JSON: {error}") from error
