"""``none``: the unedited model, the floor every editor is compared with."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from editscope.editors.base import Editor
from editscope.editors.baselines.common import target_loss
from editscope.types import EditRequest, EditResult


@dataclass(frozen=True)
class NoEditConfig:
    """No hyper-parameters: ``edit`` only measures the target loss."""


class NoEdit(Editor):
    """Accepts every edit and changes nothing."""

    name = "none"

    def __init__(self, vlm: Any, config: NoEditConfig | None = None) -> None:
        super().__init__(vlm)
        self.config = config if config is not None else NoEditConfig()

    def edit(self, request: EditRequest) -> EditResult:
        self.refuse_examples(request)
        start = time.perf_counter()
        inputs = self.vlm.encode(request.image, request.prompt, request.target)
        with torch.no_grad():
            loss = float(target_loss(self.vlm, inputs))
        self.edits_applied += 1
        return EditResult(edit_id=self.edits_applied, loss_before=loss, loss_after=loss,
                          active_groups=(), wall_time_s=time.perf_counter() - start, steps=0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"the 'none' editor has no state, got keys {sorted(state)[:5]}")

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": asdict(self.config)}
