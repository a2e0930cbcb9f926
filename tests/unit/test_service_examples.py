"""Scope examples and scoping rules in the service, without a model: the JSON and form fields
checked entry by entry, the idempotency fingerprint covering the examples, and the writer
(on the fake editor that takes examples) journaling them as the CLI does, with the rule that
decided the scope in the edit's view."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from PIL import Image

from editscope.service.httpkit import edit_view
from editscope.service.inputs import MAX_EXAMPLES, EditInput, ExampleInput, InputError, edit_from_form, edit_from_json
from editscope.service.worker import EditService
from editscope.store import EditStore
from editscope.store.rules import ScopeRuleConflict
from scope_fakes import ExampleBackend
from store_fakes import make_checkpoint

LIMIT = 50


def png(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (colour, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = {"prompt": "what is this?", "target": "a lynx", "image": b64(png(1))}


def test_json_examples_are_decoded_with_their_prompts():
    edit = edit_from_json({**GOOD, "also": [{"image": b64(png(2))}],
                           "never": [{"image": b64(png(3)), "prompt": "and this?"}]}, LIMIT)
    assert edit.also == (ExampleInput(png(2), None),)
    assert edit.never == (ExampleInput(png(3), "and this?"),)
    assert edit.scope is None  # not stated: the store's rules decide


@pytest.mark.parametrize("change, field", [
    ({"also": "x"}, "also"),
    ({"also": [b64(png(2))]}, "also[0]"),
    ({"never": [{"prompt": "p"}]}, "never[0].image"),
    ({"never": [{"image": "%%%"}]}, "never[0].image"),
    ({"never": [{"image": b64(b"GIF89a broken")}]}, "never[0].image"),
    ({"also": [{"image": b64(png(2)), "prompt": ""}]}, "also[0].prompt"),
    ({"also": [{"image": b64(png(2)), "prompt": "x" * (LIMIT + 1)}]}, "also[0].prompt"),
    ({"also": [{"image": b64(png(2)), "colour": 1}]}, "also[0].colour"),
    ({"never": [{"image": b64(png(2))}] * (MAX_EXAMPLES + 1)}, "never"),
])
def test_each_bad_example_is_named(change, field):
    with pytest.raises(InputError) as caught:
        edit_from_json({**GOOD, **change}, LIMIT)
    assert (caught.value.status, caught.value.field) == (422, field)


def test_form_examples_are_files_that_take_the_edits_prompt():
    fields = {"prompt": ["what is this?"], "target": ["a lynx"], "image": [png(1)], "also": [png(2), png(3)],
              "never": [png(4)]}
    edit = edit_from_form(fields, LIMIT)
    assert edit.also == (ExampleInput(png(2)), ExampleInput(png(3))) and edit.never == (ExampleInput(png(4)),)
    with pytest.raises(InputError) as caught:
        edit_from_form({**fields, "never": ["not a file"]}, LIMIT)
    assert caught.value.field == "never[0]"
    with pytest.raises(InputError) as caught:
        edit_from_form({**fields, "also": [b"broken"]}, LIMIT)
    assert caught.value.field == "also[0]"


def test_the_idempotency_fingerprint_covers_the_examples():
    base = edit_from_json({**GOOD, "never": [{"image": b64(png(3))}]}, LIMIT)
    same = edit_from_json({**GOOD, "never": [{"image": b64(png(3))}]}, LIMIT)
    assert base.fingerprint() == same.fingerprint()
    others = [
        edit_from_json(GOOD, LIMIT),
        edit_from_json({**GOOD, "never": [{"image": b64(png(4))}]}, LIMIT),
        edit_from_json({**GOOD, "never": [{"image": b64(png(3)), "prompt": "other?"}]}, LIMIT),
        edit_from_json({**GOOD, "also": [{"image": b64(png(3))}]}, LIMIT),
    ]
    assert len({base.fingerprint(), *(o.fingerprint() for o in others)}) == 1 + len(others)


@pytest.fixture
def service(tmp_path):
    directory = tmp_path / "store"
    EditStore.init(directory, make_checkpoint(tmp_path / "base", seed=1), "tiny", backend=ExampleBackend()).close()
    opened = EditService.open(directory, backend=ExampleBackend())
    opened.start()
    yield opened
    opened.close()


def test_the_writer_journals_the_examples_and_the_rule(service):
    (service.store.directory / "scope_rules.yaml").write_text("tags: {product: instance, safety: broad}\n")
    edit = EditInput("what is this?", "a lynx", png(1), tags=("product",),
                     also=(ExampleInput(png(2)),), never=(ExampleInput(png(3), "and this?"),))
    record, duplicate = service.submit_edit(edit, "ci", "key-1")
    assert not duplicate
    settled = service.wait_settled(record.id, 10.0)
    assert settled.status == "applied", settled.error
    view = edit_view(settled, "ci")
    assert (view["scope"], view["scope_rule"]) == ("instance", "tag product")
    assert view["also"] == [{"image_sha256": hashlib.sha256(png(2)).hexdigest(), "prompt": "what is this?"}]
    (never,) = view["never"]
    assert (never["image_sha256"], never["prompt"]) == (hashlib.sha256(png(3)).hexdigest(), "and this?")
    assert never["answer_before"] == "slot=0"  # the fake's answer on the state before the edit (no slot written)
    again, duplicate = service.submit_edit(edit, "ci", "key-1")
    assert duplicate and again.id == record.id
    conflicting = EditInput("what is this?", "a lynx", png(1), tags=("product", "safety"))
    count = len(service.store.log())
    with pytest.raises(ScopeRuleConflict, match="product: instance, safety: broad"):
        service.submit_edit(conflicting, "ci", None)
    assert len(service.store.log()) == count
