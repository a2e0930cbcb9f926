"""What an edit that cannot be applied becomes (issue 22, defects 8 and 10): an over-long prompt
is a rejected edit (the store goes on, the state as before), and with ``require_absorbed`` an
edit that did not take is a rejected edit with the state as before it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from editscope.store import EditStore
from editscope.types import EditRequest
from store_fakes import CONTEXT, FakeBackend, make_checkpoint

BACKEND = FakeBackend()


@pytest.fixture
def store(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(image)
    with EditStore.init(tmp_path / "store", make_checkpoint(tmp_path / "base", seed=1), "tiny", snapshot_every=100,
                        backend=BACKEND, editor="scopeedit") as opened:
        opened.edit(EditRequest(prompt="What is shown?", target="a cat", image=image))
        yield opened


def state(store: EditStore) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in store.editor.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_over_long_prompt_is_a_rejected_edit_and_the_store_goes_on(store):
    before = state(store)
    record = store.edit(EditRequest(prompt="what " * CONTEXT, target="x"))
    assert record.status == "rejected" and "exceeds the model's text context" in record.error
    assert same(state(store), before) and store.applied_ids() == [1]
    assert store.edit(EditRequest(prompt="What else?", target="a dog")).status == "applied"


def test_require_absorbed_rejects_an_edit_that_did_not_take_and_keeps_the_state(store):
    before = state(store)
    record = store.edit(EditRequest(prompt="What else?", target="WEAK answer"), require_absorbed=True)
    assert record.status == "rejected" and record.error.startswith("did not take (--require-absorbed): target loss")
    assert "state unchanged" in record.error and record.result is not None
    assert same(state(store), before) and store.applied_ids() == [1]
    assert store.edit(EditRequest(prompt="What else?", target="WEAK answer")).status == "applied"  # without: applied
    held = store.edit(EditRequest(prompt="What now?", target="a bird"), require_absorbed=True)
    assert held.status == "applied" and store.applied_ids() == [1, 3, 4]
    with EditStore.open(store.directory, backend=BACKEND, read_only=True) as reader:  # replay agrees
        assert same(state(reader), state(store))
