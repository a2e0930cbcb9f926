"""The interface every editor implements (ScopeEdit, M-ORE and the baselines).

An editor owns a wrapped vision-language model (``self.vlm``) and changes it one edit at a
time. Reading the model (``answer``, ``score``, ``logits``) is shared by all editors through
``VisionLanguageModel``; only ``edit`` and the state handling differ.
"""

from __future__ import annotations

import abc
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from editscope.types import EditRequest, EditResult, ImageInput, ModelInputs, Probe, Score

if TYPE_CHECKING:
    from editscope.models.vlm import VisionLanguageModel


class Editor(abc.ABC):
    """Common interface. Subclasses set ``name`` and implement the abstract methods."""

    name: str = "editor"
    #: whether ``edit`` uses a request's scope examples (``also``/``never``)
    uses_examples: bool = False

    def __init__(self, vlm: VisionLanguageModel) -> None:
        self.vlm = vlm
        self.edits_applied = 0

    # -- writing ---------------------------------------------------------------------------
    @abc.abstractmethod
    def edit(self, request: EditRequest) -> EditResult:
        """Apply one edit now. Raises ``EditRejected`` (state unchanged) when it cannot."""

    def refuse_examples(self, request: EditRequest) -> None:
        """Raise ``ValueError`` when ``request`` has scope examples this editor cannot use."""
        if not self.uses_examples and (request.also or request.never):
            raise ValueError(f"the {self.name} editor does not take scope examples (also/never); "
                             "ScopeMemory does")

    def add_locality_anchors(self, probes: Sequence[Probe]) -> None:
        """Add probes to the reference set used after each edit (editors without anchoring
        ignore them)."""

    # -- reading ---------------------------------------------------------------------------
    def answer(self, image: ImageInput | None, prompt: str, max_new_tokens: int = 16) -> str:
        return self.vlm.answer(image, prompt, max_new_tokens=max_new_tokens)

    def score(self, image: ImageInput | None, prompt: str, target: str) -> Score:
        return self.vlm.score(image, prompt, target)

    def logits(self, image: ImageInput | None, prompt: str, target: str) -> torch.Tensor:
        return self.vlm.logits(image, prompt, target)

    # -- state -----------------------------------------------------------------------------
    @abc.abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to reproduce the edited model from the base model."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The editor's configuration as plain data (saved beside the state)."""

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def save(self, directory: str | Path) -> Path:
        from editscope.state_io import save_editor

        return save_editor(self, directory)

    def load(self, directory: str | Path) -> None:
        from editscope.state_io import load_editor_state

        load_editor_state(self, directory)

    def remove(self) -> nn.Module:
        """Take the editor's modules and hooks out of the model and return it (editors that
        add none have nothing to take out)."""
        return self.vlm.model

    def merge(self) -> torch.nn.Module:
        """A plain Hugging Face model with the edits folded into its weights."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge its edits into the weights")

    def save_pretrained(self, directory: str | Path, processor: Any) -> Path:
        """Write the edited model and ``processor`` to ``directory`` as a Hugging Face checkpoint
        that plain ``from_pretrained`` loads: by default :meth:`merge` saved with
        ``save_pretrained`` (editors that cannot merge override this or raise)."""
        self.merge().save_pretrained(directory)
        processor.save_pretrained(directory)
        return Path(directory)


def target_loss(vlm: Any, inputs: ModelInputs) -> torch.Tensor:
    """The target loss every editor writes against: the mean negative log-likelihood of the
    target tokens (teacher-forced), a 0-d float32 tensor."""
    logits = vlm.forward(inputs)[0]
    positions = inputs.target_positions.to(logits.device)
    return F.cross_entropy(logits.index_select(0, positions).float(), inputs.target_ids.to(logits.device))


@contextmanager
def trainable(params: list[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    """Enable gradients on ``params`` for the duration of the block."""
    try:
        for p in params:
            p.requires_grad_(True)
        yield params
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None


class EditRejected(RuntimeError):
    """An edit could not be applied; the editor state is exactly what it was before."""
