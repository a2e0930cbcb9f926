"""The configuration of ScopeMemory: a frozen dataclass whose fields carry their own help text
(``field(metadata={"help": ...})``), loaded from YAML presets in ``editscope/presets/scopememory/``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

LINEARS = ("output", "all")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ScopeMemoryConfig:
    """Hyper-parameters of the routed editor (see ``docs/scopememory.md``)."""

    key_layer: int = _f(-2, "decoder layer whose MLP input gives the routing keys (negative: from the end); "
                            "slots write at the MLPs of this layer and every later one")
    linears: str = _f("output", "MLP linears that carry slot writes: 'output' (the one writing back to the "
                                "residual stream) or 'all'")
    rank_local: int = _f(12, "rows of each site's frozen local basis A_l")
    rank_shared: int = _f(4, "rows of each site's frozen shared basis A_g (orthogonal to A_l)")
    alpha: float = _f(32.0, "branch scaling numerator: s = alpha / (rank_local + rank_shared)")
    slot_rank: int = _f(4, "rank kept of a slot's write per site and branch (its SVD, truncated)")
    lr: float = _f(0.01, "Adam learning rate of a slot's write (a fresh optimiser per phase)")
    steps: int = _f(20, "most steps of each write phase (shared, then local), per input it trains on "
                        "(the edit and its also examples)")
    stop_loss: float = _f(0.1, "a phase stops once the target's mean NLL is below this ...")
    stop_margin: float = _f(2.0, "... or once every target token is top-1 by at least this many logits")
    shared_stop_loss: float = _f(0.1, "the shared phase's stop_loss: a shared write fitted past the edit input "
                                      "still carries the answer to other images of the subject")
    shared_stop_margin: float = _f(2.0, "the shared phase's stop_margin")
    shared_lr: float = _f(0.0, "the shared phase's Adam learning rate (0: lr)")
    tau: float = _f(0.2, "evidence gate: cosine threshold of the text and image keys")
    beta: float = _f(10.0, "evidence gate: sharpness")
    gate_eps: float = _f(1e-6, "evidence gate: epsilon in its denominators")
    gate_min: float = _f(0.05, "scope 'auto': the shared write may fire when the edit's gate g is at least this")
    text_threshold: float = _f(0.8, "cosine of the question keys at or above which an input matches a slot "
                                    "(the floor of each slot's calibrated threshold)")
    instance_threshold: float = _f(0.99, "cosine of the image keys at or above which an input shows the "
                                         "slot's own image (its local write applies)")
    subject_threshold: float = _f(0.85, "cosine of the image keys at or above which an input shows the slot's "
                                        "subject (its shared write applies; floor of the calibrated threshold)")
    text_only_threshold: float = _f(0.9, "cosine of the question keys at or above which a text-only input "
                                         "gets a slot's shared write")
    margin: float = _f(0.02, "calibration: a threshold is raised to this much above the strongest negative")
    subject_lead: float = _f(2.0, "an input gets a slot's shared write only where its image is within this "
                                  "(cosine) of its nearest live slot's image: another edited subject's image "
                                  "goes to that subject, and an input that shows a slot's own image (at "
                                  "instance_threshold) goes only to slots it shows that closely (2: no such test)")
    views: int = _f(0, "generic views of the edit image (crops, shifts, small turns, light and colour jitter) "
                       "kept as further positives of the slot's shared rule, where the shared write may fire")
    view_margin: float = _f(0.0, "a view counts as a positive this much (cosine) less near than it is: an input "
                                 "that only a view admits must clear the image threshold by this much (the views "
                                 "are the editor's own guesses at other pictures, less sure than the edit image)")
    train_views: int = _f(0, "how many of those views the shared write is also trained on, with the edit's "
                             "target (0: the edit input and any also examples only)")
    threshold_cap: float = _f(0.98, "calibration never raises a threshold above this (the edit itself must match)")
    image_whitening: float = _f(0.0, "image keys are whitened by the reference images' covariance, shrunk by "
                                     "this times its mean eigenvalue (0: centred only)")
    reference_size: int = _f(128, "ordinary inputs whose keys centre the router and serve as negatives (0: none)")
    reference_agreement: bool = _f(False, "a reference probe whose answer is the unedited model's answer to the "
                                          "edit input is not a negative of the new slot (it likely shows what "
                                          "the edit changes: the same subject asked the same thing)")
    seed: int = _f(0, "seed of the frozen bases")

    def __post_init__(self) -> None:
        if self.linears not in LINEARS:
            raise ValueError(f"ScopeMemoryConfig.linears must be one of {LINEARS}, got {self.linears!r}")
        for name in ("rank_local", "slot_rank", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ScopeMemoryConfig.{name} must be a positive integer, got {value!r}")
        for name in ("rank_shared", "reference_size", "seed", "key_layer", "views", "train_views"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"ScopeMemoryConfig.{name} must be an integer, got {getattr(self, name)!r}")
        if self.rank_shared < 0 or self.reference_size < 0 or self.views < 0 or self.train_views < 0:
            raise ValueError("ScopeMemoryConfig.rank_shared, reference_size, views and train_views must be >= 0")
        if self.train_views > self.views:
            raise ValueError(f"ScopeMemoryConfig.train_views ({self.train_views}) cannot exceed views ({self.views})")
        if not isinstance(self.reference_agreement, bool):
            raise ValueError(f"ScopeMemoryConfig.reference_agreement must be true or false, "
                             f"got {self.reference_agreement!r}")
        for name in ("alpha", "lr"):
            if not _number(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"ScopeMemoryConfig.{name} must be a number > 0, got {getattr(self, name)!r}")
        for name in ("stop_loss", "stop_margin", "shared_stop_loss", "shared_stop_margin", "gate_min", "margin",
                     "beta", "gate_eps", "image_whitening", "shared_lr",
                     "subject_lead", "view_margin"):
            if not _number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"ScopeMemoryConfig.{name} must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("text_threshold", "instance_threshold", "subject_threshold", "text_only_threshold",
                     "threshold_cap", "tau"):
            if not _number(getattr(self, name)) or not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ScopeMemoryConfig.{name} is a cosine: it must lie in [-1, 1], "
                                 f"got {getattr(self, name)!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / (self.rank_local + self.rank_shared)

    @property
    def reference_probes(self) -> int:
        """How many reference probes the editor takes at construction (0: none)."""
        return self.reference_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScopeMemoryConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ScopeMemoryConfig key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> "ScopeMemoryConfig":
        file = Path(path)
        data = yaml.safe_load(file.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a mapping of ScopeMemoryConfig keys")
        return cls.from_dict(data)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def memory_preset_names() -> list[str]:
    folder = resources.files("editscope") / "presets" / "scopememory"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_memory_preset(name: str) -> ScopeMemoryConfig:
    """The ScopeMemory preset ``name`` (``builtin``, ``tiny``, ...)."""
    names = memory_preset_names()
    if name not in names:
        raise ValueError(f"unknown ScopeMemory preset {name!r}; available: {', '.join(names)}")
    text = (resources.files("editscope") / "presets" / "scopememory" / f"{name}.yaml").read_text()
    return ScopeMemoryConfig.from_dict(yaml.safe_load(text) or {})


def config_reference() -> str:
    """A Markdown table of every field with its default and help text (the configuration
    reference is generated from here, never kept by hand)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in fields(ScopeMemoryConfig):
        rows.append(f"| `{f.name}` | `{f.default!r}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
