"""The writer's request timeouts and the visibility rule, with stand-ins for the store and the
replica (no model): a query that cannot get the replica in time, and a writer task that does
not finish in time, are ``Busy`` (the service's 504); an edit whose outcome is journaled but not
yet published is reported pending."""

from __future__ import annotations

import json
import threading

import pytest

from editscope.service.ledger import Ledger
from editscope.service.metrics import Metrics
from editscope.service.worker import Busy, EditService
from editscope.store.layout import STORE_FORMAT
from editscope.store.records import EditRecord


class Replica:
    def answer(self, image, prompt, max_new_tokens=16):
        return f"answer to {prompt}"


def record(edit_id: int, status: str) -> EditRecord:
    return EditRecord(edit_id, "t", "t", "p", "x", "auto", None, (), (), (), status, {"steps": 1}, None, "h")


@pytest.fixture()
def service(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"format": STORE_FORMAT}))
    made = EditService(store=None, replica=Replica(), ledger=Ledger(tmp_path), metrics=Metrics())  # type: ignore[arg-type]
    yield made
    made.ledger.close()


def test_a_query_waiting_longer_than_its_timeout_is_busy(service):
    assert service.query(None, "hi", 4, timeout_s=1.0).answer == "answer to hi"
    with service._state_lock:  # a publish (or another query) holds the replica
        with pytest.raises(Busy, match="no answer within"):
            service.query(None, "hi", 4, timeout_s=0.05)


def test_a_writer_task_not_done_in_time_is_busy_and_still_runs(service):
    ran = threading.Event()
    with pytest.raises(Busy, match="still queued or running"):
        service.in_writer(lambda store: ran.set(), timeout_s=0.05)  # the writer is not started
    kind, task, future = service._tasks.get_nowait()  # still queued for the writer
    assert kind == "task" and not future.done()
    task(None)
    assert ran.is_set()


def test_an_outcome_journaled_but_not_published_is_pending(service):
    service._in_flight = 3
    assert service.visible(record(3, "applied")).status == "pending"
    assert service.visible(record(3, "applied")).result is None
    assert service.visible(record(2, "applied")).status == "applied"
    service._in_flight = None
    assert service.visible(record(3, "applied")).status == "applied"
