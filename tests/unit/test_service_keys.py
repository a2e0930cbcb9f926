"""API keys, roles, the rate limiter and the ledger's idempotency keys, on a bare store
directory (no model)."""

from __future__ import annotations

import json

import pytest

from editscope.service.auth import AuthError, RateLimiter, authenticate
from editscope.service.keys import KeyRing, KeyRingError, role_allows
from editscope.service.ledger import IdempotencyConflict, Ledger
from editscope.store.layout import STORE_FORMAT, StoreError


@pytest.fixture()
def store_dir(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"format": STORE_FORMAT}))
    return tmp_path


def test_keys_are_stored_as_hashes_and_revocation_is_immediate(store_dir):
    ring = KeyRing(store_dir)
    record, key = ring.add("ci-bot", "editor")
    assert key.encode() not in (store_dir / "service.sqlite").read_bytes()
    assert ring.lookup(key).name == "ci-bot" and ring.lookup(key + "x") is None
    other = KeyRing(store_dir)  # another process's view (the CLI)
    other.revoke("ci-bot")
    assert ring.lookup(key) is None and not ring.any_active()
    _, again = ring.add("ci-bot", "reader")  # the name is free again once revoked
    assert ring.lookup(again).role == "reader"
    with pytest.raises(KeyRingError, match="already exists"):
        ring.add("ci-bot", "admin")
    with pytest.raises(KeyRingError, match="unknown role"):
        ring.add("x", "root")
    with pytest.raises(KeyRingError, match="no active key"):
        ring.revoke("nobody")
    assert [k.revoked_at is None for k in ring.list()] == [False, True]


def test_a_directory_that_is_not_a_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not an editscope store"):
        KeyRing(tmp_path)


def test_roles_nest_and_the_status_is_401_or_403(store_dir):
    assert role_allows("admin", "editor") and role_allows("editor", "reader") and not role_allows("reader", "editor")
    ring = KeyRing(store_dir)
    assert authenticate(ring, None, None, "admin", False).name == "anonymous"  # no keys: open
    _, key = ring.add("r", "reader")
    for header, status in ((None, 401), ("Bearer nope", 401), ("Basic abc", 401), (f"Bearer {key}", 403)):
        with pytest.raises(AuthError) as caught:
            authenticate(ring, header, None, "editor", False)
        assert caught.value.status == status
    assert authenticate(ring, f"Bearer {key}", None, "reader", False).name == "r"
    assert authenticate(ring, None, key, "reader", True).name == "r"  # the page's cookie, for reads
    with pytest.raises(AuthError):
        authenticate(ring, None, key, "reader", False)


def test_revoking_the_last_key_closes_the_store_instead_of_opening_it(store_dir):
    ring = KeyRing(store_dir)
    _, key = ring.add("only", "admin")
    KeyRing(store_dir).revoke("only")  # the CLI, while the server runs
    for header in (None, f"Bearer {key}"):
        with pytest.raises(AuthError) as caught:
            authenticate(ring, header, None, "reader", False)
        assert caught.value.status == 401
    _, fresh = ring.add("next", "reader")
    assert authenticate(ring, f"Bearer {fresh}", None, "reader", False).name == "next"


def test_the_rate_limiter_counts_per_caller_within_its_window():
    limiter = RateLimiter(3, window_s=0.2)
    assert [limiter.check("a") for _ in range(3)] == [None] * 3
    assert limiter.check("a") > 0 and limiter.check("b") is None
    assert RateLimiter(0).check("a") is None


def test_an_idempotency_key_maps_to_one_edit_and_a_changed_body_conflicts(store_dir):
    ledger = Ledger(store_dir)
    ledger.record("ci-bot", "edit", edit_id=7, idempotency_key="k", body_sha256="aaa")
    assert ledger.by_idempotency_key("ci-bot", "k", "aaa").edit_id == 7
    assert ledger.by_idempotency_key("other", "k", "aaa") is None  # scoped per API key
    with pytest.raises(IdempotencyConflict):
        ledger.by_idempotency_key("ci-bot", "k", "bbb")
    assert ledger.acknowledged_edits() == {7} and ledger.authors([7, 8]) == {7: "ci-bot"}


def test_the_store_sees_which_pending_edits_the_service_acknowledged(store_dir, tmp_path):
    from editscope.store.recovery import acknowledged_by_service

    assert acknowledged_by_service(store_dir, [5, 7]) == []  # no service file: none
    ledger = Ledger(store_dir)
    ledger.record("ci-bot", "edit", edit_id=7, idempotency_key=None, body_sha256="aaa")
    ledger.record("root", "snapshot", detail={"name": "x"})
    assert acknowledged_by_service(store_dir, [5, 7]) == [7]
    assert acknowledged_by_service(store_dir, []) == []
