"""Typed editor configuration and named presets.

A configuration is a frozen dataclass validated at construction. Presets are YAML files in
``editscope/presets/`` (one per model family); unknown keys are rejected so that a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

BASES = ("orthogonal", "nested")
REEDIT_RULES = ("protect", "release", "replace")
HISTORY_FOLDS = ("step", "edit")
REHEARSE_WRITES = ("replace", "topup")
HISTORY_CODES = ("mean", "target", "all")
HISTORY_SITES = ("active", "all")
SITE_RANKS = ("fixed", "fill")


@dataclass(frozen=True)
class ScopeEditConfig:
    """Hyper-parameters of ScopeEdit and M-ORE (see docs/method.md for the equations).

    ``rank_local`` and ``rank_shared`` are the rows of the frozen bases ``A_l`` and ``A_g``;
    the branch scaling is ``alpha / (rank_local + rank_shared)``. M-ORE uses one branch of
    rank ``rank_local + rank_shared`` and ignores the shared-branch fields.

    ``reedit`` is a rule beyond the paper for a fact edited again: ``"protect"`` (the method)
    keeps the codes of the fact's earlier edits in the preconditioners, so the history
    protection damps the new value along exactly the directions it has to move; ``"release"``
    takes those codes back out of ``P`` first (a Sherman–Morrison downdate), so the latest
    correction writes as freely as a first one; ``"replace"`` does that and also subtracts the
    fact's earlier writes from the ``B`` matrices, so the old value is taken out before the new
    one is written and a fact edited many times leaves one write in the model, not one per
    edit. A fact is the same image and prompt; the codes (and, for ``"replace"``, the writes)
    of the last ``reedit_memory`` facts are kept with the editor state.

    ``reference_weight`` (beyond the paper; 0 = off) is the weight of the reference prior: before
    the first edit, the second moment of every site's inputs over a reference set of
    ``reference_size`` ordinary inputs is folded into ``P_l`` and ``P_g`` as if
    ``reference_weight`` codes had been folded (``RecursiveEditor.fold_reference``). The bench
    and the store fold it when they create the editor (the reference set of a world model is a
    sample of its training distribution; see ``editscope.editors.reference``). The recursion
    from ``P = I`` gives ``P = lambda * inv(lambda I + sum c c^T)``, so under a strong prior
    ``P_l / P_g`` is about ``lambda_local / lambda_shared``: raising one lambda alone makes its
    branch's steps larger against the other's by about that factor (the ``builtin`` preset's
    2000 / 1 leaves its shared branch writing under 0.1% of an edit; docs/results/tuning.md,
    round 8).

    ``stop_loss`` (beyond the paper; 0 = off) ends an edit early: ``steps_per_edit`` becomes the
    most steps an edit may take, and the edit stops at the first step whose forward finds the
    target's mean NLL below ``stop_loss``, before writing. An edit the model already satisfies
    writes nothing; an easy one is not pushed further than it needs; the cost per edit stays
    bounded by ``steps_per_edit``. ``eta_growth`` (beyond the paper; 1 = off) multiplies the
    steps of an edit by ``eta_growth ** k`` at its k-th step (k = 0, 1, ...), so that an edit
    the first steps did not absorb moves faster; with ``stop_loss`` an easy edit stops before its
    step has grown.

    ``history_fold`` (beyond the paper) says when an edit's codes enter the preconditioners:
    ``"step"`` (the method) folds the code of every step, so the later steps of an edit are
    damped along the very direction it writes and its protection from later edits grows with
    its step count; ``"edit"`` writes every step with the ``P`` from before the edit and folds
    the codes of its last step once, at the end, each with weight ``history_weight`` (as if
    folded that many times), so how hard an edit writes and how strongly later edits keep off it
    are set apart. ``history_codes`` (with ``"edit"``) says which codes: ``"mean"`` the edit's
    code ``z`` (the mean over its target positions, as in the method), ``"target"`` the code of
    each target position, ``"all"`` the code of every position of the edit input.
    ``history_sites`` (with ``"edit"``) says where: ``"active"`` the sites the edit wrote (as in
    the method), ``"all"`` every site its forward reached, so that a later edit written at
    another layer keeps off it too.

    ``site_rank`` (beyond the paper) sets each site's local rank: ``"fixed"`` (the method)
    gives every site ``rank_local``; ``"fill"`` gives each site the whole of its input width
    not taken by the shared basis (``d_in - rank_shared``; M-ORE ``d_in``), so a wide site (an
    MLP down projection) can hold as many independent facts as its input has directions. The
    scaling stays ``alpha / (rank_local + rank_shared)`` at every site. Meant for small models:
    ``P`` is (d_in x d_in) at a filled site.

    ``rehearse`` (beyond the paper; 0 = off) re-checks, after each edit, that many earlier facts:
    the ones checked or edited longest ago, round robin over the facts the re-edit rule remembers.
    A fact whose latest target's mean NLL is at or above ``stop_loss`` is written again as a
    re-edit with that target (its earlier write out first under ``"replace"``), so that what later
    edits wore away is restored at a cost per edit bounded by ``rehearse`` more edits. Needs
    ``reedit`` ``"release"`` or ``"replace"`` and ``stop_loss > 0``; the encoded inputs of the
    remembered facts are kept with the editor state (on the host). ``rehearse_loss`` (0 = use
    ``stop_loss``) is the loss at or above which a re-checked fact is rewritten: a looser check
    (say 0.7, about the answer no longer being first) leaves alone the facts an edit brought
    near but not below ``stop_loss``. ``rehearse_write`` says how a re-checked fact is written:
    ``"replace"`` as a re-edit (its earlier write out first, under ``reedit: replace``, then
    written in full again), ``"topup"`` on top of what it already holds: no release, the new steps
    start from the current state, and what they write and fold joins the fact's remembered write,
    so that a later re-edit still takes all of it out. ``rehearse_steps`` (0 = ``steps_per_edit``)
    caps the steps of one rehearsal write, so a fact no edit brings below the loss costs at most
    that many steps at each turn.
    """

    rank_local: int = 448
    rank_shared: int = 64
    alpha: float = 1024.0
    top_k: int = 7
    eta: float = 0.1
    lambda_local: float = 1.0
    n_last_layers: int = 12
    include_projector: bool = True
    projector_eta: float = 0.001
    tau: float = 0.2
    beta: float = 10.0
    eta_shared: float = 1.0
    lambda_shared: float = 1.0
    shared_layers: int = 6
    steps_per_edit: int = 5
    code_norm: bool = False
    basis: str = "orthogonal"
    seed: int = 0
    anchors_per_edit: int = 2
    gate_eps: float = 1e-6
    reedit: str = "protect"
    reedit_memory: int = 4096
    reference_weight: float = 0.0
    reference_size: int = 256
    stop_loss: float = 0.0
    eta_growth: float = 1.0
    history_fold: str = "step"
    history_weight: float = 1.0
    history_codes: str = "mean"
    history_sites: str = "active"
    site_rank: str = "fixed"
    rehearse: int = 0
    rehearse_loss: float = 0.0
    rehearse_write: str = "replace"
    rehearse_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("rank_local", "top_k", "n_last_layers", "steps_per_edit", "reference_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ScopeEditConfig.{name} must be a positive integer, got {value!r}")
        for name in ("rank_shared", "shared_layers", "anchors_per_edit", "seed", "reedit_memory", "rehearse",
                     "rehearse_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ScopeEditConfig.{name} must be a non-negative integer, got {value!r}")
        for name in ("alpha", "eta", "lambda_local", "lambda_shared", "beta", "gate_eps", "eta_growth",
                     "history_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"ScopeEditConfig.{name} must be a positive number, got {value!r}")
        for name in ("projector_eta", "eta_shared", "tau", "reference_weight", "stop_loss", "rehearse_loss"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                raise ValueError(f"ScopeEditConfig.{name} must be a number, got {value!r}")
        if min(self.projector_eta, self.eta_shared, self.reference_weight, self.stop_loss, self.rehearse_loss) < 0:
            raise ValueError(
                "ScopeEditConfig.projector_eta, eta_shared, reference_weight, stop_loss and rehearse_loss must be >= 0"
            )
        if self.basis not in BASES:
            raise ValueError(f"ScopeEditConfig.basis must be one of {BASES}, got {self.basis!r}")
        if self.reedit not in REEDIT_RULES:
            raise ValueError(f"ScopeEditConfig.reedit must be one of {REEDIT_RULES}, got {self.reedit!r}")
        if self.history_fold not in HISTORY_FOLDS:
            raise ValueError(
                f"ScopeEditConfig.history_fold must be one of {HISTORY_FOLDS}, got {self.history_fold!r}"
            )
        if self.history_codes not in HISTORY_CODES:
            raise ValueError(
                f"ScopeEditConfig.history_codes must be one of {HISTORY_CODES}, got {self.history_codes!r}"
            )
        if self.history_sites not in HISTORY_SITES:
            raise ValueError(
                f"ScopeEditConfig.history_sites must be one of {HISTORY_SITES}, got {self.history_sites!r}"
            )
        if self.rehearse_write not in REHEARSE_WRITES:
            raise ValueError(
                f"ScopeEditConfig.rehearse_write must be one of {REHEARSE_WRITES}, got {self.rehearse_write!r}"
            )
        if self.site_rank not in SITE_RANKS:
            raise ValueError(f"ScopeEditConfig.site_rank must be one of {SITE_RANKS}, got {self.site_rank!r}")
        if (self.history_codes != "mean" or self.history_sites != "active") and self.history_fold != "edit":
            raise ValueError("ScopeEditConfig.history_codes and history_sites need history_fold: edit")
        if self.rehearse and (self.reedit == "protect" or not self.stop_loss > 0):
            raise ValueError(
                "ScopeEditConfig.rehearse needs reedit: release or replace (the facts it re-checks) "
                "and stop_loss > 0 (the loss under which a fact counts as held); rehearse: 0 turns it off"
            )
        if self.basis == "nested" and self.rank_shared > self.rank_local:
            raise ValueError("a nested basis needs rank_shared <= rank_local")

    @property
    def rank(self) -> int:
        return self.rank_local + self.rank_shared

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "ScopeEditConfig":
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """A short, stable hash of the configuration (recorded with saved state and journals)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScopeEditConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown ScopeEditConfig key(s) {unknown}; known keys are {sorted(known)}"
            )
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> "ScopeEditConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys to values")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    root = resources.files("editscope") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> ScopeEditConfig:
    """Load a shipped preset by name (``llava-1.5-7b``, ``blip2-opt-2.7b``, ``tiny``, ...) or a
    YAML file by path."""
    if Path(name).suffix in (".yaml", ".yml", ".json") and Path(name).is_file():
        return ScopeEditConfig.from_file(name)
    resource = resources.files("editscope") / "presets" / f"{name}.yaml"
    if not resource.is_file():
        raise ValueError(f"unknown preset {name!r}; available presets: {preset_names()}")
    with resources.as_file(resource) as path:
        return ScopeEditConfig.from_file(path)
