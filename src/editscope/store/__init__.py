"""The edit store: journal, content-addressed images, snapshots, rollback/revert, audit and
export of an editing session on one base model."""

from editscope.store.audit import AuditEntry, AuditReport, ProbeCheck
from editscope.store.journal import EditRecord, Journal, SnapshotRecord, SQLiteJournal
from editscope.store.store import EditStore, StateChange, StoreError

__all__ = [
    "AuditEntry",
    "AuditReport",
    "EditRecord",
    "EditStore",
    "Journal",
    "ProbeCheck",
    "SnapshotRecord",
    "SQLiteJournal",
    "StateChange",
    "StoreError",
]
