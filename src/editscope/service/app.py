"""The HTTP API under ``/v1``, ``/healthz``, ``/metrics`` and the OpenAPI document
(``/openapi.json``, browsable at ``/docs``); the web page is added by ``editscope.service.page``."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

import editscope
from editscope.service import page
from editscope.service.auth import Principal, RateLimiter
from editscope.service.httpkit import (
    ApiError, Context, edit_input, edit_view, guard, idempotency_key, install_error_handlers, query_input,
)
from editscope.service.images import image_routes
from editscope.service.keys import KeyRing, KeyRingError
from editscope.service.settings import ServiceSettings
from editscope.service.worker import EditService
from editscope.store import journal as jr
from editscope.store.layout import StoreError
from editscope.store.rules import ScopeRuleConflict
from editscope.store.scoping import ExamplesUnsupported

EXAMPLES_SCHEMA = {"type": "array", "description": "scope examples: images (base64) with an optional prompt (default: the edit's)",
                   "items": {"type": "object", "required": ["image"],
                             "properties": {"image": {"type": "string"}, "prompt": {"type": "string"}}}}
EDIT_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["prompt", "target", "image"], "properties": {
                "prompt": {"type": "string"}, "target": {"type": "string"},
                "image": {"type": "string", "description": "the image file, base64"},
                "scope": {"type": "string", "enum": ["auto", "instance", "broad"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "rephrases": {"type": "array", "items": {"type": "string"}},
                "also": EXAMPLES_SCHEMA, "never": EXAMPLES_SCHEMA}}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["prompt", "target", "image"], "properties": {
                "prompt": {"type": "string"}, "target": {"type": "string"},
                "image": {"type": "string", "format": "binary"}, "scope": {"type": "string"},
                "tags": {"type": "string", "description": "comma separated, or repeated"},
                "rephrases": {"type": "string", "description": "one per line, or repeated"},
                "also": {"type": "string", "format": "binary", "description": "a positive example image (repeated; the edit's prompt)"},
                "never": {"type": "string", "format": "binary", "description": "a negative example image (repeated; the edit's prompt)"}}}},
        },
        "required": True,
    }
}
QUERY_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string"}, "image": {"type": "string", "description": "base64"}}}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string"}, "image": {"type": "string", "format": "binary"}}}},
        },
        "required": True,
    }
}


def create_app(service: EditService, keys: KeyRing, settings: ServiceSettings) -> FastAPI:
    """The app over an open ``service``; the caller starts and closes the service."""
    app = FastAPI(title="editscope", version=editscope.__version__,
                  description="Online knowledge editing of a vision-language model over an edit store.")
    context = Context(service, keys, settings, RateLimiter(settings.rate_limit_per_minute))
    install_error_handlers(app, context)
    reader, editor, admin = (guard(context, role) for role in ("reader", "editor", "admin"))
    store = service.store

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        state = service.published
        return {"status": "ok", "store": str(store.directory), "queued": service.queued,
                "state": {"version": state.version, "last_edit": state.last_edit}}

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/edits", status_code=202, tags=["edits"], openapi_extra=EDIT_BODY)
    async def post_edit(request: Request, who: Principal = Depends(editor)) -> JSONResponse:
        """Journal an edit as pending and acknowledge it (``202``); the writer applies it in
        journal order. A retry with the same ``Idempotency-Key`` (and body) gets the same edit."""
        key = idempotency_key(request)
        edit = await edit_input(request, settings)
        try:
            record, duplicate = await run_in_threadpool(service.submit_edit, edit, who.name, key)
        except ScopeRuleConflict as error:  # the store's rules cannot decide: the client must
            raise ApiError(422, str(error), "scope") from None
        except ExamplesUnsupported as error:
            raise ApiError(422, str(error), "also" if edit.also else "never") from None
        return JSONResponse({"id": record.id, "status": "pending" if not duplicate else service.get_visible(record.id).status,
                             "duplicate": duplicate}, status_code=202, headers={"Location": f"/v1/edits/{record.id}"})

    @app.get("/v1/edits", tags=["edits"])
    def list_edits(tag: Optional[str] = None, status: Optional[str] = None,
                   offset: int = Query(0, ge=0), limit: int = Query(50, ge=1),
                   who: Principal = Depends(reader)) -> dict[str, Any]:
        """The log in id order, filtered by ``tag`` and ``status``, ``limit`` entries from ``offset``."""
        if status is not None and status not in jr.STATUSES:
            raise ApiError(422, f"status must be one of {', '.join(jr.STATUSES)}, got {status!r}", "status")
        limit = min(limit, settings.page_size_max)
        records = store.journal.edits(tag=tag)
        records = [service.visible(r) for r in records]
        if status is not None:
            records = [r for r in records if r.status == status]
        chosen = records[offset:offset + limit]
        authors = service.ledger.authors([r.id for r in chosen])
        following = offset + limit if offset + limit < len(records) else None
        return {"edits": [edit_view(r, authors.get(r.id)) for r in chosen], "total": len(records),
                "offset": offset, "limit": limit, "next_offset": following}

    @app.get("/v1/edits/{edit_id}", tags=["edits"])
    def get_edit(edit_id: int, wait: float = Query(0.0, ge=0.0, le=60.0),
                 who: Principal = Depends(reader)) -> dict[str, Any]:
        """One edit: status and result. ``wait`` (seconds) waits for a pending edit to settle."""
        try:
            record = service.wait_settled(edit_id, wait) if wait else service.get_visible(edit_id)
        except StoreError:
            raise ApiError(404, f"no edit with id {edit_id}", "edit_id") from None
        row = service.ledger.for_edit(edit_id)
        return edit_view(record, row.key_name if row else None)

    @app.post("/v1/query", tags=["queries"], openapi_extra=QUERY_BODY)
    async def post_query(request: Request, who: Principal = Depends(reader)) -> dict[str, Any]:
        """The published state's greedy answer to ``prompt`` (on ``image``)."""
        asked = await query_input(request, settings)
        answer = await run_in_threadpool(service.query, asked.image, asked.prompt, settings.max_new_tokens,
                                         settings.request_timeout_s)
        return {"answer": answer.answer, "state": {"version": answer.state.version, "last_edit": answer.state.last_edit}}

    def in_writer(task: Any, who: Principal, action: str, detail: dict[str, Any]) -> Any:
        """``task`` in the writer; once it has succeeded, the ledger records who asked for it
        (in the writer too, so a request that timed out is still recorded)."""
        def attributed(s: Any) -> Any:
            result = task(s)
            service.ledger.record(who.name, action, detail=detail)
            return result

        return service.in_writer(attributed, settings.request_timeout_s)

    @app.post("/v1/snapshots", status_code=201, tags=["state"])
    async def post_snapshot(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
        name = _json_field(await _json_body(request, settings), "name", str)
        record = await run_in_threadpool(in_writer, lambda s: s.snapshot(name), who, "snapshot", {"name": name})
        return record.__dict__

    @app.get("/v1/snapshots", tags=["state"])
    def list_snapshots(who: Principal = Depends(reader)) -> dict[str, Any]:
        return {"snapshots": [s.__dict__ for s in store.snapshots()]}

    @app.post("/v1/rollback", tags=["state"])
    async def post_rollback(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
        """Back to the state right after applied edit ``to`` (an id) or to snapshot ``to`` (a name)."""
        to = _json_field(await _json_body(request, settings), "to", (int, str))
        change = await run_in_threadpool(in_writer, lambda s: s.rollback(to), who, "rollback", {"to": to})
        return change.__dict__

    @app.post("/v1/edits/{edit_id}/revert", tags=["state"])
    def post_revert(edit_id: int, who: Principal = Depends(admin)) -> dict[str, Any]:
        change = in_writer(lambda s: s.revert(edit_id), who, "revert", {"edit": edit_id})
        return change.__dict__

    @app.post("/v1/audit", tags=["audit"])
    def post_audit(who: Principal = Depends(admin)) -> dict[str, Any]:
        """Re-score every applied edit against the current state; the report is journaled."""
        report = in_writer(lambda s: s.audit(), who, "audit", {})
        return report.to_dict()

    @app.get("/v1/audit/latest", tags=["audit"])
    def latest_audit(who: Principal = Depends(reader)) -> dict[str, Any]:
        audits = store.audits()
        if not audits:
            raise ApiError(404, "no audit has been run on this store")
        return {**audits[-1].payload, "audit_id": audits[-1].id, "created_at": audits[-1].created_at}

    @app.get("/v1/keys", tags=["keys"])
    def list_keys(who: Principal = Depends(admin)) -> dict[str, Any]:
        return {"keys": [k.to_dict() for k in keys.list()]}

    @app.post("/v1/keys", status_code=201, tags=["keys"])
    async def add_key(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
        """A new key; the reply holds the key itself, shown only this once."""
        data = await _json_body(request, settings)
        name, role = _json_field(data, "name", str), _json_field(data, "role", str)
        try:
            record, secret = keys.add(name, role)
        except KeyRingError as error:
            raise ApiError(422, str(error), "role" if "role" in str(error) else "name") from None
        service.ledger.record(who.name, "key_add", detail={"name": name, "role": role})
        return {**record.to_dict(), "key": secret}

    @app.delete("/v1/keys/{name}", tags=["keys"])
    def revoke_key(name: str, who: Principal = Depends(admin)) -> dict[str, Any]:
        try:
            record = keys.revoke(name)
        except KeyRingError as error:
            raise ApiError(404, str(error), "name") from None
        service.ledger.record(who.name, "key_revoke", detail={"name": name})
        return record.to_dict()

    image_routes(app, context)
    page.page_routes(app, context)
    return app


async def _json_body(request: Request, settings: ServiceSettings) -> dict[str, Any]:
    from editscope.service.httpkit import read_body
    from editscope.service.inputs import json_object

    return json_object(await read_body(request, settings))


def _json_field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if value is None:
        raise ApiError(422, f"{name} is missing", name)
    if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise ApiError(422, f"{name} must be a non-empty {' or '.join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))}", name)
    return value
