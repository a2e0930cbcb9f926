"""``EditService``: the store held open for writing, one writer thread, and a query replica.

- **One writer.** Every change to the state (edits, rollback, revert, snapshot, audit) runs in
  the writer thread, in arrival order; edits in journal order.
- **Queries concurrent with edits.** Queries never touch the writer's editor: they run on a
  replica (a second copy of the model with its own editor) that holds the *published* state.
  After each change the writer copies its state into the replica under the state lock, so a
  query sees the state after some edit, never one half-applied.
- **Visible means queryable.** An edit whose result the writer has journaled but not yet
  published is reported as ``pending``; once a client sees ``applied``, queries answer with it.
- **Acknowledged means applied.** ``submit_edit`` returns only once the pending row and its
  ledger row are committed; on restart, acknowledged pending edits are applied first, in order.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from editscope.editors.base import Editor
from editscope.service.inputs import EditInput
from editscope.service.ledger import Ledger
from editscope.service.metrics import Metrics
from editscope.service.store_access import ServiceStore
from editscope.store import journal as jr
from editscope.store.backend import Backend, DefaultBackend
from editscope.store.journal import EditRecord
from editscope.types import EditRequest

log = logging.getLogger(__name__)

NEVER_ACKNOWLEDGED = "abandoned: journaled by a server that stopped before acknowledging it"


def _upload(path: Path, data: bytes) -> Path:
    """``data`` written to ``path`` (uploaded bytes are stored unchanged, by their hash)."""
    path.write_bytes(data)
    return path


class Busy(TimeoutError):
    """The writer or the query replica did not get to a request in time."""


@dataclass(frozen=True)
class Published:
    """The state queries see: the applied edits in it, and how many times it changed."""

    version: int
    applied: tuple[int, ...]

    @property
    def last_edit(self) -> int | None:
        return self.applied[-1] if self.applied else None


@dataclass(frozen=True)
class Answer:
    answer: str
    state: Published


_STOP = object()


class EditService:
    """Open with ``EditService.open(directory)``, then ``start()``; ``close()`` stops the
    writer after the task it is on and releases the store."""

    def __init__(self, store: ServiceStore, replica: Editor, ledger: Ledger, metrics: Metrics) -> None:
        self.store = store
        self.ledger = ledger
        self.metrics = metrics
        self._replica = replica
        self._tasks: queue.Queue[Any] = queue.Queue()
        self._submit_lock = threading.Lock()
        self._state_lock = threading.Lock()  # the replica: one query, or one publish, at a time
        self._changed = threading.Condition()
        self._in_flight: int | None = None
        self._published = Published(0, ())
        self._thread = threading.Thread(target=self._run, name="editscope-writer", daemon=True)
        self._stopping = threading.Event()

    @classmethod
    def open(cls, directory: str | Path, *, device: str | None = None, backend: Backend | None = None) -> "EditService":
        """Open the store for writing (refused while another process has it open), build the
        query replica, and queue the acknowledged pending edits a stopped server left."""
        backend = backend or DefaultBackend()
        store = ServiceStore.open(directory, device=device, backend=backend)
        try:
            ledger = Ledger(directory)
            editor = store.manifest["editor"]
            vlm = backend.load_model(store.manifest["base_model"]["source"], device or store.manifest.get("device"))
            replica = backend.build_editor(vlm, editor["name"], editor["config"])
            service = cls(store, replica, ledger, Metrics())
            acknowledged = ledger.acknowledged_edits()
            pending = store.pending_ids()
            store.abandon([i for i in pending if i not in acknowledged], NEVER_ACKNOWLEDGED)
            service._publish()
            for edit_id in (i for i in pending if i in acknowledged):
                service._queue_edit(edit_id)
        except BaseException:
            store.close()
            raise
        if pending:
            log.warning("store %s: %d pending edit(s) from before the restart queued first", directory, len(pending))
        return service

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._tasks.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()
        self.store.close()
        self.ledger.close()

    # -- edits -------------------------------------------------------------------------------
    def submit_edit(self, edit: EditInput, key_name: str, idempotency_key: str | None) -> tuple[EditRecord, bool]:
        """Journal ``edit`` as pending, record who sent it, queue it for the writer. Returns the
        row and whether it is an earlier request's (same ``idempotency_key`` and body)."""
        fingerprint = edit.fingerprint()
        with self._submit_lock:
            if idempotency_key is not None:
                earlier = self.ledger.by_idempotency_key(key_name, idempotency_key, fingerprint)
                if earlier is not None and earlier.edit_id is not None:
                    return self.store.get(earlier.edit_id), True
            with tempfile.TemporaryDirectory(prefix="editscope-upload-") as folder:
                path = Path(folder) / "image"
                path.write_bytes(edit.image)  # the store keeps the uploaded bytes unchanged
                examples = {kind: [(_upload(Path(folder) / f"{kind}-{i}", e.image), e.prompt)
                                   for i, e in enumerate(getattr(edit, kind))] for kind in ("also", "never")}
                request = EditRequest(edit.prompt, edit.target, image=path, scope=edit.scope,  # type: ignore[arg-type]
                                      also=examples["also"], never=examples["never"])
                record = self.store.submit(request, tags=edit.tags, rephrases=edit.rephrases)
            try:
                self.ledger.record(key_name, "edit", edit_id=record.id, idempotency_key=idempotency_key,
                                   body_sha256=fingerprint)
            except BaseException:
                self.store.abandon([record.id], NEVER_ACKNOWLEDGED)
                raise
            self._queue_edit(record.id)
        return record, False

    def _queue_edit(self, edit_id: int) -> None:
        self.metrics.edits_queued.inc()
        self._tasks.put(("edit", edit_id))

    def visible(self, record: EditRecord) -> EditRecord:
        """``record`` as clients may see it: ``pending`` until its outcome is published."""
        if record.id == self._in_flight and record.status != jr.PENDING:
            return EditRecord(**{**record.__dict__, "status": jr.PENDING, "result": None, "error": None})
        return record

    def get_visible(self, edit_id: int) -> EditRecord:
        with self._changed:
            return self.visible(self.store.get(edit_id))

    def wait_settled(self, edit_id: int, timeout_s: float) -> EditRecord:
        """The edit once it is no longer pending (or as it is after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                record = self.visible(self.store.get(edit_id))
                left = deadline - time.monotonic()
                if record.status != jr.PENDING or left <= 0:
                    return record
                self._changed.wait(min(left, 1.0))

    # -- other writes ------------------------------------------------------------------------
    def in_writer(self, task: Callable[[ServiceStore], Any], timeout_s: float) -> Any:
        """Run ``task(store)`` in the writer thread, after what is queued before it; its result,
        its exception, or ``Busy`` after ``timeout_s`` (the task still runs then)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._tasks.put(("task", task, future))
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise Busy(f"the writer did not finish within {timeout_s:g} s; the operation is still queued or running") from None

    # -- queries -----------------------------------------------------------------------------
    def query(self, image: Any, prompt: str, max_new_tokens: int, timeout_s: float) -> Answer:
        started = time.perf_counter()
        if not self._state_lock.acquire(timeout=timeout_s):
            raise Busy(f"no answer within {timeout_s:g} s: the model is busy with other queries")
        try:
            answer = self._replica.answer(image, prompt, max_new_tokens=max_new_tokens)
            state = self._published
        finally:
            self._state_lock.release()
        self.metrics.query_seconds.observe(time.perf_counter() - started)
        return Answer(answer, state)

    @property
    def published(self) -> Published:
        return self._published

    @property
    def queued(self) -> int:
        return self._tasks.qsize()

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._tasks.get()
            if item is _STOP:
                break
            if item[0] == "edit":
                self._apply(item[1])
            else:
                self._task(item[1], item[2])

    def _apply(self, edit_id: int) -> None:
        self.metrics.edits_queued.dec()
        with self._changed:
            self._in_flight = edit_id
        started = time.perf_counter()
        try:
            record = self.store.apply_pending(edit_id)
        except Exception:
            log.exception("edit %d failed in the writer; it is journaled as rejected", edit_id)
            self.metrics.edits_rejected.inc()
        else:
            self.metrics.edit_seconds.observe(time.perf_counter() - started)
            (self.metrics.edits_applied if record.status == jr.APPLIED else self.metrics.edits_rejected).inc()
        self._publish()

    def _task(self, task: Callable[[ServiceStore], Any], future: concurrent.futures.Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = task(self.store)
        except BaseException as error:  # handed to the waiting request
            self._publish()
            future.set_exception(error)
        else:
            self._publish()
            future.set_result(result)

    def _publish(self) -> None:
        """Copy the writer's state into the replica; from now on queries see it."""
        state = {name: tensor.detach().clone() for name, tensor in self.store.editor.state_dict().items()}
        applied = tuple(self.store.applied_ids())
        with self._state_lock:
            self._replica.load_state_dict(state)
            published = Published(self._published.version + 1, applied)
            self._published = published
        with self._changed:
            self._in_flight = None
            self._changed.notify_all()
