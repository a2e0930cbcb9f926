"""A real ``editscope serve`` on the built-in model: 8 query clients run while a stream of
edits arrives. No query fails; every answer is the one the published state it reports gives
(the state after some edit, never a half-applied one); edits are applied in journal order,
each exactly once, none lost."""

from __future__ import annotations

import threading

import pytest

from service_support import Server, call, copy_store, template_store, wait_settled, world_edits

N_EDITS = 5
N_CLIENTS = 8


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return template_store(tmp_path_factory.getbasetemp())


def test_queries_during_an_edit_stream_see_only_states_between_edits(template, tmp_path):
    edits = world_edits(N_EDITS)
    store = copy_store(template, tmp_path / "store")
    with Server(store) as server:
        probe = lambda e: {"prompt": e.prompt, "image": e.image_b64}  # noqa: E731
        before = [call(server.url + "/v1/query", "POST", json_body=probe(e)).body["answer"] for e in edits]
        answers: list[tuple[int, str, int | None, int]] = []  # (probe, answer, last edit of the state, version)
        errors: list[str] = []
        done = threading.Event()

        def client(number: int) -> None:
            versions_seen = 0
            i = number
            while not done.is_set() or i < number + len(edits):
                which = i % len(edits)
                reply = call(server.url + "/v1/query", "POST", json_body=probe(edits[which]))
                if reply.status != 200:
                    errors.append(f"client {number}: {reply.status} {reply.body}")
                    return
                state = reply.body["state"]
                if state["version"] < versions_seen:
                    errors.append(f"client {number}: state version went back from {versions_seen} to {state['version']}")
                versions_seen = state["version"]
                answers.append((which, reply.body["answer"], state["last_edit"], state["version"]))
                i += 1

        clients = [threading.Thread(target=client, args=(n,)) for n in range(N_CLIENTS)]
        for thread in clients:
            thread.start()
        try:
            ids = []
            for e in edits:
                reply = call(server.url + "/v1/edits", "POST", json_body=e.body(tags=["stream"]))
                assert reply.status == 202, reply
                ids.append(reply.body["id"])
            settled = [wait_settled(server.url, i) for i in ids]
        finally:
            done.set()
            for thread in clients:
                thread.join(timeout=300)
        after = [call(server.url + "/v1/query", "POST", json_body=probe(e)).body["answer"] for e in edits]
        log = call(server.url + "/v1/edits?limit=100").body

    assert not errors, errors
    assert ids == sorted(ids) and len(set(ids)) == N_EDITS
    assert [s["status"] for s in settled] == ["applied"] * N_EDITS, [s.get("error") for s in settled]
    # applied in journal order, each once: the editor's own edit counter follows the ids
    assert [s["result"]["editor_edit_id"] for s in settled] == list(range(1, N_EDITS + 1))
    assert [r["id"] for r in log["edits"]] == ids and log["total"] == N_EDITS
    assert sum(a != b for a, b in zip(after, before)) >= N_EDITS - 1, (before, after)  # the edits took
    # Each answer is the one its state gives: edit j's own probe answers as before edit j until
    # the state holds edit j, and with edit j's answer from then on (facts are separate slots).
    position = {edit_id: n for n, edit_id in enumerate(ids)}
    states_seen = set()
    for which, answer, last_edit, version in answers:
        applied = -1 if last_edit is None else position[last_edit]
        expected = after[which] if which <= applied else before[which]
        assert answer == expected, (which, answer, last_edit, version, before, after)
        states_seen.add(last_edit)
    assert len(answers) >= N_CLIENTS * N_EDITS
    assert len(states_seen) >= 3, states_seen  # the queries really ran while the edits streamed
