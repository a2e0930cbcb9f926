"""A fake base model, editor and backend for the store's unit tests (no model files).

The fake editor's state is a small vector ``w`` updated non-commutatively by each edit (so the
order of edits matters, as in the real editor) and an associative ``memory`` from (prompt,
image) slots to a hash of the last target written there (so ``score`` can tell whether an edit
holds). Targets starting with ``REJECT`` are rejected cleanly; ``CRASH`` fails midway after
changing the state (a non-transactional failure the store must repair); ``WEAK`` is applied
but does not take (``score`` misses it); a prompt over ``CONTEXT`` characters is a
``ValueError`` after changing the state, as a model's encoder refuses an over-long prompt.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from editscope.editors.base import Editor, EditRejected
from editscope.types import EditRequest, EditResult, Score

SLOTS = 64
CONTEXT = 1000


def _digest(*parts: object) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (str, Path)) and _is_file(part):
            h.update(Path(part).read_bytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.digest()


def _is_file(part: str | Path) -> bool:
    try:
        return Path(part).is_file()
    except OSError:  # e.g. a prompt too long to be a file name
        return False


def _vector(*parts: object) -> torch.Tensor:
    raw = torch.tensor(list(_digest(*parts)[:8]), dtype=torch.float64)
    return raw / 127.5 - 1.0


def _slot(prompt: str, image: object) -> int:
    return int.from_bytes(_digest(prompt, image)[:4], "little") % SLOTS


def _target_code(target: str) -> float:
    return float(int.from_bytes(_digest(target)[:4], "little"))


class FakeProcessor:
    def save_pretrained(self, directory: str | Path) -> None:
        (Path(directory) / "processor.json").write_text("{}")


class FakeModel(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(8, 8, generator=generator, dtype=torch.float64))

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({"weight": self.weight.detach().contiguous()}, str(Path(directory) / "model.safetensors"))


class FakeVLM:
    def __init__(self, seed: int) -> None:
        self.model = FakeModel(seed)
        self.processor = FakeProcessor()


class FakeEditor(Editor):
    name = "fake"

    def __init__(self, vlm: FakeVLM, config: dict[str, Any]) -> None:
        super().__init__(vlm)
        self.config = dict(config)
        generator = torch.Generator().manual_seed(int(config["seed"]))
        self.w = torch.randn(8, generator=generator, dtype=torch.float64) * 0.1
        self.memory = torch.zeros(SLOTS, dtype=torch.float64)
        self.calls = 0  # edit() calls, replays included (not part of the state)

    def edit(self, request: EditRequest) -> EditResult:
        self.calls += 1
        if request.target.startswith("REJECT"):
            raise EditRejected(f"fake rejection of {request.target!r}")
        if request.image is not None and not Path(request.image).is_file():
            raise EditRejected(f"image not found: {request.image}")
        before = float(self.w.sum())
        self.w = torch.tanh(0.9 * self.w + _vector(request.prompt, request.target, request.scope, request.image))
        if request.target.startswith("CRASH"):
            raise RuntimeError("fake editor failed midway")
        if len(request.prompt) > CONTEXT:
            raise ValueError(f"prompt ({len(request.prompt)} characters) exceeds the model's text context of {CONTEXT}")
        if not request.target.startswith("WEAK"):
            self.memory[_slot(request.prompt, request.image)] = _target_code(request.target)
        return EditResult(edit_id=self.calls, loss_before=before, loss_after=float(self.w.sum()), active_groups=("g0",))

    def logits(self, image: Any, prompt: str, target: str) -> torch.Tensor:
        return (self.vlm.model.weight @ self.w) * _vector(prompt, image, target)

    def score(self, image: Any, prompt: str, target: str) -> Score:
        hit = bool(self.memory[_slot(prompt, image)] == _target_code(target))
        return Score(target_ids=(1,), logprobs=(0.0 if hit else -5.0,), predicted_ids=(1 if hit else 0,))

    def answer(self, image: Any, prompt: str, max_new_tokens: int = 16) -> str:
        return f"w={float(self.w.sum()):.6f}"

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.w.clone(), "memory": self.memory.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"w", "memory"}:
            raise KeyError(f"unexpected state keys {sorted(state)}")
        self.w = state["w"].clone()
        self.memory = state["memory"].clone()

    def config_dict(self) -> dict[str, Any]:
        return dict(self.config)

    def merge(self) -> torch.nn.Module:
        merged = copy.deepcopy(self.vlm.model)
        with torch.no_grad():
            merged.weight += torch.diag(self.w)
        return merged


class FakeBackend:
    """Model "checkpoints" are directories holding ``fake.json`` with a seed."""

    def load_model(self, source: str, device: str | None = None) -> FakeVLM:
        path = Path(source) / "fake.json"
        if not path.is_file():
            raise OSError(f"no fake checkpoint at {source}")
        return FakeVLM(int(json.loads(path.read_text())["seed"]))

    def default_config(self, editor_name: str, preset: str | None) -> dict[str, Any]:
        if preset not in (None, "tiny"):
            raise ValueError(f"unknown preset {preset!r}")
        return {"seed": 3, "preset": preset}

    def build_editor(self, vlm: FakeVLM, editor_name: str, config: dict[str, Any]) -> FakeEditor:
        return FakeEditor(vlm, config)

    def prepare_editor(self, editor: FakeEditor, source: str, config: dict[str, Any],
                       reference: str | None = None) -> None:
        self.prepared = getattr(self, "prepared", 0) + 1


def make_checkpoint(directory: Path, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fake.json").write_text(json.dumps({"seed": seed}))
    return directory
