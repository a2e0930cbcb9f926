"""A real ``editscope serve`` (built-in model, ScopeMemory) taking scope examples: JSON and
multipart ``also``/``never`` journaled and shown by ``GET /v1/edits/{id}`` with the rule that
decided the scope, the idempotency fingerprint covering them, conflicting tag rules a ``422``
with nothing journaled, and the audit reporting each edit's scope."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from service_support import Server, call, copy_store, multipart, template_store, wait_settled, world_edits


def recoded(png: bytes) -> bytes:
    """The same pixels as other PNG bytes (another compression level)."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, format="PNG", compress_level=1)
    assert out.getvalue() != png
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    template = template_store(tmp_path_factory.getbasetemp())
    store = copy_store(template, tmp_path_factory.mktemp("scope-service") / "store")
    (store / "scope_rules.yaml").write_text("tags: {product: instance, safety: broad}\n")
    with Server(store) as server:
        yield {"url": server.url, "store": store, "edits": world_edits(3)}


def test_json_examples_are_journaled_and_shown_with_the_rule(served):
    url, (first, second, _) = served["url"], served["edits"]
    body = first.body(tags=["product"], never=[{"image": second.image_b64, "prompt": first.prompt}])
    reply = call(url + "/v1/edits", "POST", json_body=body, headers={"Idempotency-Key": "scope-1"})
    assert reply.status == 202, reply
    settled = wait_settled(url, reply.body["id"])
    assert settled["status"] == "applied", settled
    assert (settled["scope"], settled["scope_rule"]) == ("instance", "tag product")
    (never,) = settled["never"]
    assert (never["image_sha256"], never["prompt"]) == (hashlib.sha256(second.image).hexdigest(), first.prompt)
    assert never["answer_before"]
    again = call(url + "/v1/edits", "POST", json_body=body, headers={"Idempotency-Key": "scope-1"})
    assert again.status == 202 and again.body["duplicate"] and again.body["id"] == reply.body["id"]
    changed = dict(body, never=[{"image": second.image_b64, "prompt": "Another question?"}])
    assert call(url + "/v1/edits", "POST", json_body=changed, headers={"Idempotency-Key": "scope-1"}).status == 409
    audit = call(url + "/v1/audit", "POST")
    assert audit.status == 200, audit
    entry = next(e for e in audit.body["entries"] if e["edit_id"] == reply.body["id"])
    assert entry["scope_holds"] is True and entry["scope_rule"] == "tag product"


def test_multipart_examples_take_the_edits_prompt(served):
    url, (_, _, third) = served["url"], served["edits"]
    also = recoded(third.image)
    data, kind = multipart({"prompt": third.prompt, "target": third.target, "scope": "auto"},
                           {"image": third.image, "also": also})
    reply = call(url + "/v1/edits", "POST", data=data, headers={"Content-Type": kind})
    assert reply.status == 202, reply
    settled = wait_settled(url, reply.body["id"])
    assert settled["status"] == "applied", settled
    assert settled["scope_rule"] == "stated"
    assert settled["also"] == [{"image_sha256": hashlib.sha256(also).hexdigest(), "prompt": third.prompt}]


def test_conflicting_tag_rules_and_bad_examples_are_422_with_nothing_journaled(served):
    url, (first, _, _) = served["url"], served["edits"]
    total = call(url + "/v1/edits").body["total"]
    conflict = call(url + "/v1/edits", "POST", json_body=first.body(tags=["product", "safety"]))
    assert conflict.status == 422 and conflict.body["field"] == "scope"
    assert "product: instance, safety: broad" in conflict.body["error"]
    bad = call(url + "/v1/edits", "POST", json_body=first.body(never=[{"image": "%%%"}]))
    assert bad.status == 422 and bad.body["field"] == "never[0].image"
    assert call(url + "/v1/edits").body["total"] == total
