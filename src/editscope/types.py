"""Plain data types shared by the model adapters, the editors, the evaluation harness and the store.

Everything here is a frozen dataclass with no behaviour beyond validation (and ``EditResult``'s
one JSON serialisation), so that each layer of the package can exchange them without importing
the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import torch
from PIL import Image

ImageInput = Union[str, Path, Image.Image]
Scope = Literal["auto", "instance", "broad"]
SCOPES: tuple[str, ...] = ("auto", "instance", "broad")


@dataclass(frozen=True)
class Probe:
    """A question with its expected answer, with or without an image.

    Used as a locality anchor (folded into the preconditioners after an edit) and by the
    evaluation harness as a scored probe.
    """

    prompt: str
    answer: str
    image: ImageInput | None = None


@dataclass(frozen=True)
class ScopeExample:
    """An input that states an edit's scope: ``image`` with ``prompt`` (an ``also`` example must
    follow the edit, a ``never`` example must keep its current answer). Examples always show an
    image: scope is about which images an edit reaches."""

    image: ImageInput
    prompt: str

    def __post_init__(self) -> None:
        if not isinstance(self.image, (str, Path, Image.Image)):
            raise TypeError(f"ScopeExample.image must be a path or a PIL.Image, got {type(self.image).__name__}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"ScopeExample.prompt must be a non-empty str, got {self.prompt!r}")

    @classmethod
    def of(cls, item: "ScopeExample | ImageInput | tuple", prompt: str, where: str = "example") -> "ScopeExample":
        """``item`` as an example: an example, an ``(image, prompt)`` pair (a ``None`` prompt
        takes ``prompt``) or a bare image (which takes ``prompt``)."""
        if isinstance(item, cls):
            return item
        if isinstance(item, (str, Path, Image.Image)):
            return cls(item, prompt)
        if isinstance(item, (tuple, list)) and len(item) == 2:
            image, own = item
            try:
                return cls(image, prompt if own is None else own)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{where}: {error}") from None
        raise TypeError(f"{where} must be a ScopeExample, an (image, prompt) pair or an image, "
                        f"got {type(item).__name__}")


@dataclass(frozen=True)
class EditRequest:
    """One correction: on ``image`` (or no image: a text-only edit), ``prompt`` must now be
    answered with ``target``.

    ``scope`` chooses how far the fix may spread: ``"auto"`` lets the evidence gate decide,
    ``"instance"`` keeps the shared branch closed, ``"broad"`` forces the gate open.
    ``anchors`` are locality probes folded into the local preconditioners after this edit, in
    addition to the editor's configured reference set (ScopeMemory calibrates its slot against
    them). ``fact_id`` names the fact the edit is about (ScopeMemory keeps one slot per fact;
    without it a fact is the same image content and prompt). ``scope=None`` means not stated:
    a store's scoping rules decide, and an editor given ``None`` treats it as ``"auto"``.

    ``also`` and ``never`` state the edit's scope by example (:class:`ScopeExample`, or
    ``(image, prompt)`` pairs, or bare images, which take the edit's prompt): ``also`` inputs
    must follow the edit, ``never`` inputs must keep their current answers. Only editors with
    ``uses_examples`` (ScopeMemory) take them; the others refuse a request that has any.
    """

    prompt: str
    target: str
    image: ImageInput | None = None
    scope: Scope | None = None
    anchors: tuple[Probe, ...] = ()
    fact_id: str | None = None
    also: tuple[ScopeExample, ...] = ()
    never: tuple[ScopeExample, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"EditRequest.prompt must be a str, got {type(self.prompt).__name__}")
        if not isinstance(self.target, str):
            raise TypeError(f"EditRequest.target must be a str, got {type(self.target).__name__}")
        if not self.prompt.strip():
            raise ValueError("EditRequest.prompt is empty")
        if not self.target.strip():
            raise ValueError("EditRequest.target is empty or whitespace: an edit needs a target answer")
        if self.scope is not None and self.scope not in SCOPES:
            raise ValueError(f"EditRequest.scope must be one of {SCOPES} or None, got {self.scope!r}")
        if self.image is not None and not isinstance(self.image, (str, Path, Image.Image)):
            raise TypeError(
                "EditRequest.image must be a path, a PIL.Image or None, "
                f"got {type(self.image).__name__}"
            )
        if self.fact_id is not None and (not isinstance(self.fact_id, str) or not self.fact_id.strip()):
            raise ValueError(f"EditRequest.fact_id must be a non-empty string or None, got {self.fact_id!r}")
        object.__setattr__(self, "anchors", tuple(self.anchors))
        for name in ("also", "never"):
            given = getattr(self, name)
            if isinstance(given, (str, Path, Image.Image, ScopeExample)):
                raise TypeError(f"EditRequest.{name} must be a sequence of examples, got one "
                                f"{type(given).__name__}: wrap it in a list")
            examples = tuple(ScopeExample.of(item, self.prompt, f"EditRequest.{name}[{i}]")
                             for i, item in enumerate(given))
            object.__setattr__(self, name, examples)

    @property
    def effective_scope(self) -> Scope:
        """The scope an editor applies: the stated one, else ``"auto"``."""
        return self.scope if self.scope is not None else "auto"


@dataclass(frozen=True)
class ModelInputs:
    """One encoded example (batch of one) ready for the model.

    - ``tensors``: keyword arguments of the model's ``forward`` (``input_ids`` (1, T),
      ``attention_mask`` (1, T), ``pixel_values`` and whatever the architecture needs).
    - ``target_ids`` (n,): the target's token ids (empty for a prompt-only encoding).
    - ``target_positions`` (n,): positions in ``input_ids`` whose logits predict ``target_ids``
      (the position just before each target token).
    - ``image_positions`` (m,): positions in ``input_ids`` holding image tokens (empty when
      there is no image).
    """

    tensors: dict[str, torch.Tensor]
    target_ids: torch.Tensor
    target_positions: torch.Tensor
    image_positions: torch.Tensor

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tensors["input_ids"]

    @property
    def length(self) -> int:
        return int(self.tensors["input_ids"].shape[-1])

    @property
    def batch_key(self) -> tuple:
        """Equal for encodings that :meth:`stack` can batch: the same token ids, and tensors of
        the same names, dtypes and shapes past the first dimension."""
        return (tuple(self.input_ids.flatten().tolist()), self.target_ids.numel(),
                tuple((k, v.dtype, tuple(v.shape[1:])) for k, v in sorted(self.tensors.items())))

    @classmethod
    def stack(cls, items: "list[ModelInputs]") -> "ModelInputs":
        """One batch of encodings with the same :attr:`batch_key` (the same prompt and target,
        other images): every tensor concatenated along its first dimension, which is the batch
        or, where an architecture flattens patches (Qwen2-VL), the patches of every image."""
        if not items or any(i.batch_key != items[0].batch_key for i in items[1:]):
            raise ValueError("ModelInputs.stack needs encodings of the same token ids and tensor shapes")
        first = items[0]
        return cls(tensors={k: torch.cat([i.tensors[k] for i in items]) for k in first.tensors},
                   target_ids=first.target_ids, target_positions=first.target_positions,
                   image_positions=first.image_positions)

    def to(self, device: torch.device | str) -> "ModelInputs":
        return ModelInputs(
            tensors={k: v.to(device) for k, v in self.tensors.items()},
            target_ids=self.target_ids.to(device),
            target_positions=self.target_positions.to(device),
            image_positions=self.image_positions.to(device),
        )


def stacked(items: "list[ModelInputs]") -> "list[ModelInputs]":
    """``items`` as batches: one :meth:`ModelInputs.stack` per distinct ``batch_key``, in the
    order each key first appears (rows keep their order within a batch)."""
    groups: dict[tuple, list[ModelInputs]] = {}
    for item in items:
        groups.setdefault(item.batch_key, []).append(item)
    return [group[0] if len(group) == 1 else ModelInputs.stack(group) for group in groups.values()]


@dataclass(frozen=True)
class GateValues:
    """The evidence gate of one group for one step (means over the group's sites)."""

    cos: float
    support: float
    g: float


@dataclass(frozen=True)
class EditResult:
    """What one edit did: its loss on the edit input before the first step and after the last,
    the groups it wrote, the gate of each group at the last step, its wall time and the number
    of steps that wrote (fewer than ``steps_per_edit`` when ``stop_loss`` ended it early), and the
    number of earlier facts written again after it (ScopeEdit and M-ORE with ``rehearse``)."""

    edit_id: int
    loss_before: float
    loss_after: float
    active_groups: tuple[str, ...]
    gates: dict[str, GateValues] = field(default_factory=dict)
    wall_time_s: float = 0.0
    steps: int = 0
    rehearsed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The one JSON-ready form of this result, written by the store's journal, the service
        and (the fields it records) the bench: every field, the id as ``editor_edit_id``, each
        gate as ``{"cos", "support", "g"}``. ``from_dict`` reads it back."""
        return {
            "editor_edit_id": self.edit_id,
            "loss_before": float(self.loss_before),
            "loss_after": float(self.loss_after),
            "active_groups": list(self.active_groups),
            "gates": {group: asdict(gate) for group, gate in self.gates.items()},
            "wall_time_s": float(self.wall_time_s),
            "steps": int(self.steps),
            "rehearsed": int(self.rehearsed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EditResult":
        """The result ``to_dict`` wrote. Other keys (a journal row's answers) are ignored; a
        row written before ``steps``/``rehearsed``/``wall_time_s`` were kept reads them as 0."""
        return cls(
            edit_id=int(data["editor_edit_id"]),
            loss_before=float(data["loss_before"]),
            loss_after=float(data["loss_after"]),
            active_groups=tuple(data.get("active_groups", ())),
            gates={group: GateValues(cos=float(gate["cos"]), support=float(gate["support"]), g=float(gate["g"]))
                   for group, gate in (data.get("gates") or {}).items()},
            wall_time_s=float(data.get("wall_time_s", 0.0)),
            steps=int(data.get("steps", 0)),
            rehearsed=int(data.get("rehearsed", 0)),
        )


@dataclass(frozen=True)
class Score:
    """Teacher-forced score of a target: per-token log-probabilities and top-1 agreement."""

    target_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    predicted_ids: tuple[int, ...]

    @property
    def token_accuracy(self) -> float:
        if not self.target_ids:
            return 0.0
        hits = sum(int(p == t) for p, t in zip(self.predicted_ids, self.target_ids))
        return hits / len(self.target_ids)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / max(len(self.logprobs), 1)
