"""The service's request checks, without a model: every bad field is an ``InputError`` naming
it; a good request passes through unchanged."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from editscope.service.inputs import (
    InputError, edit_from_form, edit_from_json, json_object, query_from_json,
)

LIMIT = 50


def png(size=(8, 8), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = {"prompt": "what is this?", "target": "a lynx", "image": base64.b64encode(png()).decode()}


def field_of(call) -> tuple[int, str | None]:
    with pytest.raises(InputError) as caught:
        call()
    return caught.value.status, caught.value.field


def test_a_good_edit_passes_with_its_defaults():
    edit = edit_from_json({**GOOD, "tags": ["a"], "rephrases": ["what's that?"]}, LIMIT)
    assert (edit.prompt, edit.target, edit.scope, edit.tags, edit.rephrases) == (
        "what is this?", "a lynx", None, ("a",), ("what's that?",))
    assert edit.image == png()
    assert edit.fingerprint() == edit_from_json({**GOOD, "tags": ["a"], "rephrases": ["what's that?"]}, LIMIT).fingerprint()
    assert edit.fingerprint() != edit_from_json(GOOD, LIMIT).fingerprint()


@pytest.mark.parametrize("change, field", [
    ({"prompt": None}, "prompt"),
    ({"target": ""}, "target"),
    ({"target": " \n"}, "target"),
    ({"target": ["a"]}, "target"),
    ({"prompt": "x" * (LIMIT + 1)}, "prompt"),
    ({"prompt": "bad \ud800 text"}, "prompt"),
    ({"image": None}, "image"),
    ({"image": 12}, "image"),
    ({"image": "%%%"}, "image"),
    ({"image": base64.b64encode(b"GIF89a broken").decode()}, "image"),
    ({"image": base64.b64encode(png()[:40]).decode()}, "image"),
    ({"scope": "wide"}, "scope"),
    ({"tags": "demo"}, "tags"),
    ({"tags": ["ok", ""]}, "tags[1]"),
    ({"rephrases": [1]}, "rephrases[0]"),
    ({"extra": 1}, "extra"),
])
def test_each_bad_edit_field_is_named(change, field):
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert field_of(lambda: edit_from_json(body, LIMIT)) == (422, field)


def test_an_image_over_the_pixel_limit_is_refused(monkeypatch):
    monkeypatch.setenv("EDITSCOPE_MAX_IMAGE_PIXELS", "100")
    body = {**GOOD, "image": base64.b64encode(png((20, 20))).decode()}
    assert field_of(lambda: edit_from_json(body, LIMIT)) == (422, "image")


def test_bodies_that_are_not_json_objects_are_400():
    assert field_of(lambda: json_object(b"{nope")) == (400, None)
    assert field_of(lambda: json_object(b"[1, 2]")) == (400, None)


def test_form_fields_split_tags_and_refuse_files_in_text_fields():
    edit = edit_from_form({"prompt": ["p"], "target": ["t"], "image": [png()], "tags": ["a, b", "c"]}, LIMIT)
    assert edit.tags == ("a", "b", "c")
    assert field_of(lambda: edit_from_form({"prompt": ["p"], "target": [b"x"], "image": [png()]}, LIMIT)) == (422, "target")
    assert field_of(lambda: edit_from_form({"prompt": ["p"], "target": ["t"], "image": ["text"]}, LIMIT)) == (422, "image")
    assert field_of(lambda: edit_from_form({"prompt": ["p"], "target": ["t"]}, LIMIT)) == (422, "image")


def test_a_query_needs_a_prompt_and_takes_an_optional_image():
    assert query_from_json({"prompt": "hi"}, LIMIT).image is None
    assert query_from_json({"prompt": "hi", "image": GOOD["image"]}, LIMIT).image.size == (8, 8)
    assert field_of(lambda: query_from_json({"image": GOOD["image"]}, LIMIT)) == (422, "prompt")
    assert field_of(lambda: query_from_json({"prompt": "hi", "target": "x"}, LIMIT)) == (422, "target")


def _request(chunks: list[bytes], pause_s: float):
    """A Starlette request whose body arrives in ``chunks``, ``pause_s`` apart."""
    from starlette.requests import Request

    async def receive():
        await asyncio.sleep(pause_s)
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/v1/edits", "headers": []}, receive)


def test_a_body_slower_than_the_request_timeout_is_408_and_a_prompt_one_is_read():
    from editscope.service.httpkit import ApiError, read_body
    from editscope.service.settings import ServiceSettings

    settings = ServiceSettings(request_timeout_s=0.2)
    assert asyncio.run(read_body(_request([b'{"a":', b" 1}"], 0.01), settings)) == b'{"a": 1}'
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_body(_request([b"{", b"}", b"x"], 0.15), settings))
    assert caught.value.status == 408 and "within the request timeout of 0.2 s" in caught.value.message
