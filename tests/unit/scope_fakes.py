"""A fake editor that takes scope examples, for the store's scope tests (no model files).

It is ``store_fakes.FakeEditor`` with ``uses_examples``: an edit also writes its target to the
slot of each ``also`` example (so positives follow, and a replay that dropped them would not),
and ``answer`` reads the slot of its input (so a ``never`` example changes its answer only when
an edit writes to its own slot, as a later edit directly on it does).
"""

from __future__ import annotations

from typing import Any

from editscope.types import EditRequest, EditResult
from store_fakes import FakeBackend, FakeEditor, _slot, _target_code


class ExampleEditor(FakeEditor):
    name = "fake-examples"
    uses_examples = True
    requests: list[EditRequest] = []  # every request edit() was given, replays included

    def edit(self, request: EditRequest) -> EditResult:
        ExampleEditor.requests.append(request)
        result = super().edit(request)
        for example in request.also:
            self.memory[_slot(example.prompt, example.image)] = _target_code(request.target)
        return result

    def answer(self, image: Any, prompt: str, max_new_tokens: int = 16) -> str:
        return f"slot={float(self.memory[_slot(prompt, image)]):.0f}"


class ExampleBackend(FakeBackend):
    """``FakeBackend`` building ``ExampleEditor`` (``editor="plain"``: the plain ``FakeEditor``)."""

    def build_editor(self, vlm: Any, editor_name: str, config: dict[str, Any]) -> FakeEditor:
        return FakeEditor(vlm, config) if editor_name == "plain" else ExampleEditor(vlm, config)
