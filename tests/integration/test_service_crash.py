"""SIGKILL during a stream of edits, then restart: every edit the server acknowledged (202) is
applied exactly once, in journal order, before anything new; a client's retry with the same
``Idempotency-Key`` does not apply it twice."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from editscope.store import EditStore, StoreError
from service_support import Server, call, copy_store, template_store, wait_settled, world_edits

N_EDITS = 5


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return template_store(tmp_path_factory.getbasetemp())


def journal(store):
    with sqlite3.connect(f"file:{store / 'journal.sqlite'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT id, prompt, target, status, result FROM edits ORDER BY id").fetchall()


def test_sigkill_mid_stream_then_restart_applies_every_acknowledged_edit_once(template, tmp_path):
    edits = world_edits(N_EDITS)
    store = copy_store(template, tmp_path / "store")
    acknowledged: dict[int, int] = {}  # edit number -> id
    first_applied, first_sent = threading.Event(), threading.Event()
    server = Server(store)
    try:
        def stream() -> None:
            for n, e in enumerate(edits):
                try:
                    reply = call(server.url + "/v1/edits", "POST", json_body=e.body(),
                                 headers={"Idempotency-Key": f"edit-{n}"}, timeout=30)
                except OSError:
                    break  # the server is gone
                if reply.status != 202:
                    break
                acknowledged[n] = reply.body["id"]
                first_sent.set()
                if n == 2:
                    first_applied.wait(240)  # the rest arrive while the writer works

        sender = threading.Thread(target=stream)
        sender.start()
        assert first_sent.wait(120)
        wait_settled(server.url, acknowledged[0])
        first_applied.set()
        while len(acknowledged) < 4 and sender.is_alive():
            sender.join(0.05)
        server.kill()  # mid-stream: edits acknowledged, some pending, one being applied
        sender.join(60)
    finally:
        server.stop()
    rows = journal(store)
    pending_at_kill = [r[0] for r in rows if r[3] == "pending"]
    assert len(acknowledged) >= 4 and pending_at_kill, (acknowledged, rows)
    # a CLI writer opened now would abandon them: it is refused, naming them, and changes nothing
    # (a pending row whose ledger row the kill cut off was never acknowledged: the service
    # abandons it too, so there may be none to refuse for)
    served = sorted(set(pending_at_kill) & set(acknowledged.values()))
    if served:
        with pytest.raises(StoreError, match="acknowledged by `editscope serve` and not yet applied") as refused:
            EditStore.open(store)
        assert str(served) in str(refused.value) and journal(store) == rows

    with Server(store) as restarted:
        # the client retries everything it sent, with the same idempotency keys
        for n, e in enumerate(edits):
            reply = call(restarted.url + "/v1/edits", "POST", json_body=e.body(), headers={"Idempotency-Key": f"edit-{n}"})
            assert reply.status == 202, reply
            if n in acknowledged:
                assert reply.body["id"] == acknowledged[n] and reply.body["duplicate"], reply.body
            acknowledged[n] = reply.body["id"]
        settled = {n: wait_settled(restarted.url, i) for n, i in acknowledged.items()}
        answers = [call(restarted.url + "/v1/query", "POST", json_body={"prompt": e.prompt, "image": e.image_b64}).body
                   for e in edits]

    assert all(s["status"] == "applied" for s in settled.values()), settled
    rows = journal(store)
    applied = [r for r in rows if r[3] == "applied"]
    # each edit exactly once in the state, in journal order (the editor's counter follows the ids)
    assert sorted((r[1], r[2]) for r in applied) == sorted((e.prompt, e.target) for e in edits)
    assert [json.loads(r[4])["editor_edit_id"] for r in applied] == list(range(1, N_EDITS + 1))
    assert [r[0] for r in applied] == sorted(acknowledged.values())
    assert not [r for r in rows if r[3] == "pending"]
    assert all(a["state"]["last_edit"] == max(acknowledged.values()) for a in answers)
