"""A real ``editscope serve`` with API keys: 401/403 where they belong, idempotent retries,
every class of bad input refused with its field named and nothing journaled, the upload and
rate limits, the admin operations with the key that made each write recorded, and the
service's own pages (OpenAPI, metrics, the web page)."""

from __future__ import annotations

import base64
import sqlite3

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from editscope.cli.main import app
from service_support import Server, call, copy_store, multipart, template_store, wait_settled, world_edits
from store_support import store_state

ROLES = {"reader": "reader", "ci-bot": "editor", "root": "admin", "hammer": "reader", "gone": "reader"}
RATE = 40


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    template = template_store(tmp_path_factory.getbasetemp())
    store = copy_store(template, tmp_path_factory.mktemp("service-api") / "store")
    keys, outputs = {}, {}
    for name, role in ROLES.items():
        result = cli("keys", "add", "--store", store, "--role", role, "--name", name)
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
        keys[name] = result.output.strip().splitlines()[-1]
    edits = world_edits(2)
    with Server(store, "--rate-limit", str(RATE), "--max-upload-mb", "0.1", "--max-prompt-chars", "200") as server:
        yield {"url": server.url, "store": store, "keys": keys, "outputs": outputs, "edits": edits}


def test_keys_are_printed_once_on_the_last_line_and_only_their_hashes_stored(served):
    stored = (served["store"] / "service.sqlite").read_bytes()
    for name, key in served["keys"].items():
        assert key.startswith("esk_") and len(key) > 40
        assert served["outputs"][name].count(key) == 1
        assert key.encode() not in stored
    listed = cli("keys", "list", "--store", served["store"])
    assert listed.exit_code == 0 and "ci-bot" in listed.output and "editor" in listed.output
    assert not any(key in listed.output for key in served["keys"].values())


def test_no_key_is_401_a_weaker_role_403_a_revoked_key_401(served):
    url, keys, edit = served["url"], served["keys"], served["edits"][0]
    query = {"prompt": edit.prompt}
    assert call(url + "/v1/query", "POST", json_body=query).status == 401
    assert call(url + "/v1/edits").status == 401
    assert call(url + "/v1/edits", key="esk_not-a-key").status == 401
    assert call(url + "/v1/edits", "POST", json_body=edit.body(), key=keys["reader"]).status == 403
    assert call(url + "/v1/rollback", "POST", json_body={"to": "initial"}, key=keys["ci-bot"]).status == 403
    assert call(url + "/v1/snapshots", "POST", json_body={"name": "x"}, key=keys["ci-bot"]).status == 403
    assert call(url + "/v1/keys", key=keys["ci-bot"]).status == 403
    assert call(url + "/v1/query", "POST", json_body=query, key=keys["reader"]).status == 200
    assert call(url + "/v1/edits", key=keys["gone"]).status == 200
    assert cli("keys", "revoke", "--store", served["store"], "--name", "gone").exit_code == 0
    assert call(url + "/v1/edits", key=keys["gone"]).status == 401
    assert call(url + "/healthz").status == 200 and call(url + "/metrics").status == 200


def test_a_retry_with_the_same_idempotency_key_does_not_duplicate(served):
    url, key, edit = served["url"], served["keys"]["ci-bot"], served["edits"][0]
    first = call(url + "/v1/edits", "POST", json_body=edit.body(tags=["api"]), key=key, headers={"Idempotency-Key": "k-1"})
    again = call(url + "/v1/edits", "POST", json_body=edit.body(tags=["api"]), key=key, headers={"Idempotency-Key": "k-1"})
    assert first.status == again.status == 202
    assert again.body["id"] == first.body["id"] and again.body["duplicate"] and not first.body["duplicate"]
    before = store_state(served["store"])
    other = call(url + "/v1/edits", "POST", json_body=edit.body(target="another"), key=key, headers={"Idempotency-Key": "k-1"})
    assert other.status == 409, other
    assert wait_settled(url, first.body["id"], key)["status"] == "applied"
    log = call(url + "/v1/edits?tag=api", key=key).body
    assert [e["id"] for e in log["edits"]] == [first.body["id"]] and log["edits"][0]["submitted_by"] == "ci-bot"
    assert store_state(served["store"])[0]["edits"][:-1] == before[0]["edits"][:-1]  # no row added


def _png_truncated(edit) -> str:
    return base64.b64encode(edit.image[: len(edit.image) // 2]).decode()


def test_bad_input_gets_a_4xx_naming_the_field_and_nothing_is_journaled(served):
    url, key, edit = served["url"], served["keys"]["ci-bot"], served["edits"][1]
    good = edit.body()
    json_cases = [
        ({k: v for k, v in good.items() if k != "prompt"}, 422, "prompt"),
        ({k: v for k, v in good.items() if k != "image"}, 422, "image"),
        ({**good, "target": ""}, 422, "target"),
        ({**good, "target": "   "}, 422, "target"),
        ({**good, "target": 5}, 422, "target"),
        ({**good, "tags": "demo"}, 422, "tags"),
        ({**good, "rephrases": ["ok", 3]}, 422, "rephrases[1]"),
        ({**good, "scope": "everywhere"}, 422, "scope"),
        ({**good, "image": "not base64 !"}, 422, "image"),
        ({**good, "image": base64.b64encode(b"plain text, no image").decode()}, 422, "image"),
        ({**good, "image": _png_truncated(edit)}, 422, "image"),
        ({**good, "prompt": "x" * 201}, 422, "prompt"),
        ({**good, "colour": "red"}, 422, "colour"),
    ]
    before = store_state(served["store"])
    for body, status, field in json_cases:
        reply = call(url + "/v1/edits", "POST", json_body=body, key=key)
        assert (reply.status, reply.body.get("field")) == (status, field), (body.keys(), reply)
    assert call(url + "/v1/edits", "POST", data=b"{not json", key=key,
                headers={"Content-Type": "application/json"}).status == 400
    form, kind = multipart({"prompt": edit.prompt}, {"image": edit.image})
    reply = call(url + "/v1/edits", "POST", data=form, key=key, headers={"Content-Type": kind})
    assert (reply.status, reply.body.get("field")) == (422, "target"), reply
    form, kind = multipart({"prompt": edit.prompt, "target": edit.target}, {"image": edit.image[:200]})
    reply = call(url + "/v1/edits", "POST", data=form, key=key, headers={"Content-Type": kind})
    assert (reply.status, reply.body.get("field")) == (422, "image"), reply
    big = {**good, "image": base64.b64encode(b"\0" * 200_000).decode()}
    assert call(url + "/v1/edits", "POST", json_body=big, key=key).status == 413
    reply = call(url + "/v1/query", "POST", json_body={"image": edit.image_b64}, key=key)
    assert (reply.status, reply.body.get("field")) == (422, "prompt")
    reply = call(url + "/v1/query", "POST", json_body={"prompt": "what?", "image": _png_truncated(edit)}, key=key)
    assert (reply.status, reply.body.get("field")) == (422, "image")
    reply = call(url + "/v1/edits?status=bogus", key=key)
    assert (reply.status, reply.body.get("field")) == (422, "status")
    assert store_state(served["store"]) == before


def test_a_key_over_its_rate_gets_429(served):
    url, key = served["url"], served["keys"]["hammer"]
    statuses = [call(url + "/v1/edits?limit=1", key=key).status for _ in range(RATE + 1)]
    assert statuses[:RATE] == [200] * RATE and statuses[RATE] == 429
    reply = call(url + "/v1/edits?limit=1", key=key)
    assert reply.status == 429 and int(reply.headers["retry-after"]) >= 1
    assert call(url + "/v1/edits?limit=1", key=served["keys"]["reader"]).status == 200  # per key


def test_admin_operations_record_the_key_and_the_page_shows_the_log(served):
    url, keys, edit = served["url"], served["keys"], served["edits"][1]
    admin = keys["root"]
    posted = call(url + "/v1/edits", "POST", json_body=edit.body(tags=["admin"]), key=keys["ci-bot"])
    record = wait_settled(url, posted.body["id"], admin)
    assert record["status"] == "applied" and record["submitted_by"] == "ci-bot"
    assert call(url + "/v1/snapshots", "POST", json_body={"name": "two-edits"}, key=admin).status == 201
    audit = call(url + "/v1/audit", "POST", key=admin)
    assert audit.status == 200 and record["id"] in audit.body["state"]
    latest = call(url + "/v1/audit/latest", key=keys["reader"])
    assert latest.status == 200 and latest.body["state"] == audit.body["state"]
    reverted = call(url + f"/v1/edits/{record['id']}/revert", "POST", key=admin)
    assert reverted.status == 200 and record["id"] in reverted.body["removed"]
    assert call(url + f"/v1/edits/{record['id']}", key=admin).body["status"] == "reverted"
    back = call(url + "/v1/rollback", "POST", json_body={"to": "two-edits"}, key=admin)
    assert back.status == 200 and record["id"] in back.body["restored"], back
    assert call(url + "/v1/rollback", "POST", json_body={"to": "no-such-snapshot"}, key=admin).status == 409
    page = call(url + "/", headers={"Cookie": f"editscope_key={keys['reader']}"}).body.decode()
    assert f"id='edit-{record['id']}'" in page and "/v1/images/" in page and "holds" in page
    thumb = call(url + "/v1/images/" + page.split("/v1/images/")[1].split("/")[0] + "/thumbnail",
                 headers={"Cookie": f"editscope_key={keys['reader']}"})
    assert thumb.status == 200 and thumb.body[:8] == b"\x89PNG\r\n\x1a\n"
    anonymous = call(url + "/").body.decode()
    assert "id='log'" not in anonymous and "an API key is needed" in anonymous  # no key, no log
    with sqlite3.connect(served["store"] / "service.sqlite") as ledger:
        writes = ledger.execute("SELECT key_name, action FROM writes WHERE action != 'edit'").fetchall()
    assert {("root", a) for a in ("snapshot", "audit", "revert", "rollback")} <= set(writes)
    metrics = {m.name: m for m in text_string_to_metric_families(call(url + "/metrics").body.decode())}
    applied = call(url + "/v1/edits?status=applied&limit=1", key=admin).body["total"]
    assert metrics["editscope_edits_applied"].samples[0].value >= 1
    assert metrics["editscope_edits_queued"].samples[0].value == 0
    timed = {s.name: s.value for s in metrics["editscope_edit_seconds"].samples}
    assert timed["editscope_edit_seconds_count"] >= 1 and timed["editscope_edit_seconds_sum"] > 0
    assert "editscope_query_seconds" in metrics and "editscope_edits_rejected" in metrics
    assert applied >= 1
    paths = call(url + "/openapi.json").body["paths"]
    assert {"/v1/edits", "/v1/query", "/v1/rollback", "/v1/audit", "/v1/audit/latest"} <= set(paths)


def test_serve_refuses_a_public_address_without_keys(tmp_path_factory):
    template = template_store(tmp_path_factory.getbasetemp())
    store = copy_store(template, tmp_path_factory.mktemp("service-public") / "store")
    result = cli("serve", "--store", store, "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 1 and "no API key" in result.output


def test_a_second_writer_is_refused_while_cli_log_and_query_read_the_served_store(served, tmp_path):
    url, store, key, edit = served["url"], served["store"], served["keys"]["reader"], served["edits"][0]
    image = tmp_path / "probe.png"
    image.write_bytes(edit.image)
    second = cli("serve", "--store", store, "--port", "0")
    assert second.exit_code == 1 and "open in another process" in second.output
    writer = cli("edit", "--store", store, "--image", image, "--prompt", edit.prompt, "--target", "x")
    assert writer.exit_code == 1 and "open in another process" in writer.output
    assert call(url + "/healthz").body["queued"] == 0
    served_answer = call(url + "/v1/query", "POST", json_body={"prompt": edit.prompt, "image": edit.image_b64}, key=key)
    assert served_answer.status == 200 and served_answer.body["state"]["last_edit"] is not None
    logged = cli("log", "--store", store, "--status", "applied")
    assert logged.exit_code == 0, logged.output
    applied = [r["id"] for r in call(url + "/v1/edits?status=applied", key=key).body["edits"]]
    assert [int(line.split()[0]) for line in logged.output.splitlines() if line.strip()] == applied
    queried = cli("query", "--store", store, "--image", image, "--prompt", edit.prompt)
    assert queried.exit_code == 0, queried.output
    assert queried.output.strip().splitlines()[-1] == served_answer.body["answer"] == edit.target


def test_the_log_pages_through_every_edit_once_in_id_order(served):
    url, key = served["url"], served["keys"]["reader"]
    whole = call(url + "/v1/edits?limit=1000", key=key).body
    assert whole["next_offset"] is None and whole["total"] == len(whole["edits"]) >= 2
    seen, offset = [], 0
    while offset is not None:
        page = call(url + f"/v1/edits?limit=1&offset={offset}", key=key).body
        assert page["total"] == whole["total"] and len(page["edits"]) == 1
        seen += [r["id"] for r in page["edits"]]
        offset = page["next_offset"]
    assert seen == [r["id"] for r in whole["edits"]] == sorted(seen)
    past = call(url + f"/v1/edits?offset={whole['total']}", key=key).body
    assert past["edits"] == [] and past["next_offset"] is None
    assert call(url + "/v1/edits?limit=0", key=key).status == 422
