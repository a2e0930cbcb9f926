"""Typed configuration of ScopeEdit and M-ORE, and named presets.

``ScopeEditConfig`` nests one frozen section per part of the editor:

- ``method``: the paper's editor loop and local branch (docs/method.md);
- ``shared``: the evidence-gated shared branch; ``None`` is M-ORE's single branch;
- one section per option beyond the paper, each served by a plug-in of
  ``editscope.editors.scopeedit`` (``stopping``, ``reedit``, ``rehearsal``, ``prior``);
  ``None`` means "as in the paper".

Every field carries its help text (:func:`config_reference` prints the reference). Presets are
YAML files in ``editscope/presets/`` (one per model family) with the same sections; unknown keys
are rejected so that a typo never silently falls back to a default. The flat form of earlier
versions (one mapping of 35 keys, as stores, saved editors and results files written before the
sections hold it) is migrated when it is read (:meth:`ScopeEditConfig.from_dict`), and
``config.<flat key>`` still reads a value. The options removed since (``history_fold`` and
``history_*``, ``site_rank: fill``; see :data:`REMOVED`) still load at the value that meant "as
in the paper" and are a clear error at any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from editscope.editors.scopeedit.options import check_choice, check_int, check_number, option, reference_table
from editscope.editors.scopeedit.prior import PriorConfig
from editscope.editors.scopeedit.reedit import ReeditConfig
from editscope.editors.scopeedit.rehearsal import RehearsalConfig
from editscope.editors.scopeedit.stopping import StoppingConfig

BASES = ("orthogonal", "nested")


@dataclass(frozen=True)
class MethodConfig:
    """The editor loop and the local branch, as in the paper (docs/method.md)."""

    rank_local: int = option(448, "rows of each site's frozen local basis A_l (M-ORE: its one branch has rank "
                                  "rank_local + shared.rank_shared)")
    alpha: float = option(1024.0, "branch scaling numerator: s = alpha / (rank_local + rank_shared)")
    top_k: int = option(7, "groups (decoder MLPs, the projector) written per step: those with the largest "
                           "local gradient norms")
    eta: float = option(0.1, "local step size of the decoder groups")
    lambda_local: float = option(1.0, "lambda of the local preconditioner's recursion, P_l = lambda inv(lambda I + "
                                      "sum z z^T)")
    n_last_layers: int = option(12, "edit sites: the MLP linears of the last this many decoder layers")
    include_projector: bool = option(True, "the multimodal projector's linears are edit sites too (group 'projector')")
    projector_eta: float = option(0.001, "local step size of the projector group")
    steps_per_edit: int = option(5, "steps per edit (with a stopping rule: the most)")
    code_norm: bool = option(False, "a LayerNorm without affine parameters on each branch's code (BLIP-2); "
                                    "such edits cannot be merged into the weights")
    basis: str = option("orthogonal", "'orthogonal': A_l and A_g from one orthogonal matrix (A_l A_g^T = 0); "
                                      "'nested': the shared rows a subset of the local rows (the paper's ablation)")
    seed: int = option(0, "seed of the frozen bases (each site's from its path)")
    anchors_per_edit: int = option(2, "locality anchors from the deployment reference set folded after each edit")

    def __post_init__(self) -> None:
        for name in ("rank_local", "top_k", "n_last_layers", "steps_per_edit"):
            check_int(f"method.{name}", getattr(self, name), 1)
        for name in ("seed", "anchors_per_edit"):
            check_int(f"method.{name}", getattr(self, name), 0)
        for name in ("alpha", "eta", "lambda_local"):
            check_number(f"method.{name}", getattr(self, name), positive=True)
        check_number("method.projector_eta", self.projector_eta, non_negative=True)
        check_choice("method.basis", self.basis, BASES)


@dataclass(frozen=True)
class SharedConfig:
    """ScopeEdit's shared branch, written where textual and visual evidence agree (the evidence gate)."""

    rank_shared: int = option(64, "rows of each site's frozen shared basis A_g")
    eta_shared: float = option(1.0, "shared step size (times the gate's g)")
    lambda_shared: float = option(1.0, "lambda of the shared preconditioner's recursion")
    tau: float = option(0.2, "the gate opens where cos(u_text, u_image) is above tau")
    beta: float = option(10.0, "sharpness of the gate's sigmoid, sigmoid(beta (cos - tau))")
    shared_layers: int = option(6, "the shared branch writes at the first this many active decoder groups")
    gate_eps: float = option(1e-6, "epsilon in the gate's norms")

    def __post_init__(self) -> None:
        check_int("shared.rank_shared", self.rank_shared, 1)
        check_int("shared.shared_layers", self.shared_layers, 0)
        for name in ("lambda_shared", "beta", "gate_eps"):
            check_number(f"shared.{name}", getattr(self, name), positive=True)
        check_number("shared.eta_shared", self.eta_shared, non_negative=True)
        check_number("shared.tau", self.tau)


SECTIONS: dict[str, type] = {
    "method": MethodConfig, "shared": SharedConfig, "stopping": StoppingConfig, "reedit": ReeditConfig,
    "rehearsal": RehearsalConfig, "prior": PriorConfig,
}

# -- the flat form (before the sections) ------------------------------------------------------
# flat key -> (section, field); a section's absence is the flat value in FLAT_OFF
FLAT: dict[str, tuple[str, str]] = {
    **{f.name: ("method", f.name) for f in fields(MethodConfig)},
    **{f.name: ("shared", f.name) for f in fields(SharedConfig)},
    "stop_loss": ("stopping", "stop_loss"), "eta_growth": ("stopping", "eta_growth"),
    "reedit": ("reedit", "rule"), "reedit_memory": ("reedit", "memory"),
    "reference_weight": ("prior", "weight"), "reference_size": ("prior", "size"),
    "rehearse": ("rehearsal", "count"), "rehearse_loss": ("rehearsal", "loss"),
    "rehearse_write": ("rehearsal", "write"), "rehearse_steps": ("rehearsal", "steps"),
}
# the flat value that means "section off"
FLAT_OFF = {"shared": ("rank_shared", 0), "reedit": ("reedit", "protect"), "prior": ("reference_weight", 0.0),
            "rehearsal": ("rehearse", 0)}
# a valid value of the switch of a section, to check the other values of a section that is off
SWITCH_ON = {"shared": {"rank_shared": 64}, "reedit": {"rule": "release"}, "prior": {"weight": 1.0},
             "rehearsal": {"count": 1}}


# -- options removed since (issue 20): no preset used them and they measured no better on dev
# key (flat, or a section of the sectioned form) -> (the option, the values that meant "as in
# the paper"); the flat ones are still written by to_flat (at the first value), so that the flat
# form and the fingerprint stay what they were
REMOVED: dict[str, tuple[str, tuple[Any, ...]]] = {
    "history_fold": ("history_fold", ("step",)), "history_weight": ("history_fold", (1.0,)),
    "history_codes": ("history_fold", ("mean",)), "history_sites": ("history_fold", ("active",)),
    "history": ("history_fold", (None,)),
    "site_rank": ("site_rank", ("fixed", None)),  # a flat key, and a section of the sectioned form
}
REMOVED_FLAT = {key: off[0] for key, (_, off) in REMOVED.items() if off[0] is not None}


def _without_removed(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` without the keys of removed options; each must hold a value that meant "as in
    the paper" (anything else is a ValueError naming the removed option)."""
    for key, value in data.items():
        if key in REMOVED and not any(value == off and type(value) is not bool for off in REMOVED[key][1]):
            option = REMOVED[key][0]
            raise ValueError(f"ScopeEditConfig.{key} = {value!r}: {option} was removed in issue 20 (no preset "
                             f"used it and it measured no better on dev); its measurement is in "
                             f"docs/results/tuning.md, its code in git history")
    return {k: v for k, v in data.items() if k not in REMOVED}


def _flat_defaults() -> dict[str, Any]:
    defaults = {(s, f.name): f.default for s, cls in SECTIONS.items() for f in fields(cls)}
    values = {key: defaults[(section, name)] for key, (section, name) in FLAT.items()}
    values.update(reedit="protect", rehearse=0, reference_weight=0.0)
    return values


def _build(section: str, values: dict[str, Any]) -> Any:
    """Section ``section`` of flat values; an error names the flat key too."""
    try:
        return SECTIONS[section](**values)
    except ValueError as err:
        keys = [k for k, (s, n) in FLAT.items() if s == section and f"{section}.{n} " in str(err)]
        raise ValueError(f"{err} (flat key {keys[0]})" if keys else str(err)) from err


def _is_section(key: str, value: Any) -> bool:
    # "reedit" is a flat key too: a string there is the flat form
    return key in SECTIONS and not isinstance(value, str)


@dataclass(frozen=True)
class ScopeEditConfig:
    """Hyper-parameters of ScopeEdit and M-ORE: the paper's ``method`` and ``shared`` branch,
    and one section per option beyond the paper (``None``: as in the paper)."""

    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "the editor loop and local branch"})
    shared: SharedConfig | None = field(default_factory=SharedConfig,
                                        metadata={"help": "the gated shared branch (None: M-ORE's single branch)"})
    stopping: StoppingConfig | None = field(default=None, metadata={"help": "stopping rule and step growth"})
    reedit: ReeditConfig | None = field(default=None, metadata={"help": "re-edit rule (None: 'protect')"})
    rehearsal: RehearsalConfig | None = field(default=None, metadata={"help": "rehearsal of earlier facts"})
    prior: PriorConfig | None = field(default=None, metadata={"help": "reference prior"})

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls) and not (value is None and name != "method"):
                raise TypeError(f"ScopeEditConfig.{name} must be a {cls.__name__}"
                                f"{'' if name == 'method' else ' or None'}, got {type(value).__name__} "
                                "(from_dict reads plain data)")
        if self.method.basis == "nested" and self.shared is not None and self.shared.rank_shared > self.method.rank_local:
            raise ValueError("a nested basis needs rank_shared <= rank_local")
        if self.rehearsal is not None:
            self.rehearsal.check(self)

    @property
    def rank(self) -> int:
        return self.method.rank_local + (self.shared.rank_shared if self.shared is not None else 0)

    @property
    def scaling(self) -> float:
        return float(self.method.alpha) / self.rank

    def __getattr__(self, name: str) -> Any:
        """``config.<flat key>``: the value in the flat form of earlier versions (read only)."""
        if name in REMOVED_FLAT:
            raise AttributeError(f"ScopeEditConfig.{name}: {REMOVED[name][0]} was removed in issue 20 (its "
                                 "measurement is in docs/results/tuning.md)")
        if name.startswith("_") or name not in FLAT:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.to_flat()[name]

    # -- plain data -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The sections as plain data (``None`` for a section that is off)."""
        return {name: None if getattr(self, name) is None else dataclasses.asdict(getattr(self, name))
                for name in SECTIONS}

    def to_flat(self) -> dict[str, Any]:
        """The configuration in the flat form of earlier versions (every key, defaults where a
        section is off, the removed options at the value that meant "as in the paper")."""
        values = {**_flat_defaults(), **REMOVED_FLAT}
        for key, (section, name) in FLAT.items():
            value = getattr(self, section)
            if value is not None:
                values[key] = getattr(value, name)
        values.update({key: off for section, (key, off) in FLAT_OFF.items() if getattr(self, section) is None})
        return values

    def replace(self, **changes: Any) -> "ScopeEditConfig":
        """A copy with sections (``stopping=StoppingConfig(...)`` or plain data) or flat keys
        (``stop_loss=0.1``) changed."""
        changes = _without_removed(changes)
        sections = {k: v for k, v in changes.items() if _is_section(k, v)}
        flat = {k: v for k, v in changes.items() if k not in sections}
        unknown = sorted(set(flat) - set(FLAT))
        if unknown:
            raise ValueError(f"unknown ScopeEditConfig key(s) {unknown}; sections are {sorted(SECTIONS)}, "
                             f"flat keys {sorted(FLAT)}")
        config = self.from_flat({**self.to_flat(), **flat}) if flat else self
        return dataclasses.replace(config, **{k: _section(k, v) for k, v in sections.items()}) if sections else config

    def fingerprint(self) -> str:
        """A short, stable hash of the configuration (of its flat form, so that it is the same
        as before the sections)."""
        text = json.dumps(self.to_flat(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_flat(cls, data: Mapping[str, Any]) -> "ScopeEditConfig":
        """The configuration of a flat mapping (missing keys: defaults)."""
        values = {**_flat_defaults(), **_without_removed(data)}
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, (section, name) in FLAT.items():
            parts[section][name] = values[key]
        off = {section for section, (key, value) in FLAT_OFF.items() if values[key] == value}
        if values["stop_loss"] == 0 and values["eta_growth"] == 1:
            off.add("stopping")
        for name in off - {"stopping"}:  # the values of a section that is off are checked too
            _build(name, {**parts[name], **SWITCH_ON.get(name, {})})
        return cls(**{name: None if name in off else _build(name, parts[name]) for name in SECTIONS})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScopeEditConfig":
        """The configuration of plain data: sections (``{"method": {...}, "shared": None}``), the
        flat form of earlier versions, or both (flat keys change the sections)."""
        data = _without_removed(data)
        sections = {k: v for k, v in data.items() if _is_section(k, v)}
        flat = {k: v for k, v in data.items() if k not in sections}
        unknown = sorted(set(flat) - set(FLAT))
        if unknown:
            raise ValueError(f"unknown ScopeEditConfig key(s) {unknown}; sections are {sorted(SECTIONS)}, "
                             f"flat keys {sorted(FLAT)}")
        config = cls(**{k: _section(k, v) for k, v in sections.items()})
        return config.replace(**flat) if flat else config

    @classmethod
    def normalise(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` (sections or the flat form) as :meth:`to_dict` writes it now."""
        return cls.from_dict(data).to_dict()

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


def _section(name: str, value: Any) -> Any:
    """A section from plain data (unknown keys rejected), a sub-config or None."""
    cls = SECTIONS[name]
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"ScopeEditConfig.{name} must be a mapping or null, got {value!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown ScopeEditConfig.{name} key(s) {unknown}; known keys are {sorted(known)}")
    return cls(**dict(value))


def config_reference() -> str:
    """The configuration reference, one Markdown table per section, generated from the fields'
    help text (never kept by hand)."""
    return "\n\n".join(reference_table(name, cls) for name, cls in SECTIONS.items()) + "\n"


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
