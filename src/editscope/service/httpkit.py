"""What every route shares: the error replies, reading a body within the upload limit, the
role check with the rate limit, and plain-data views of journal records."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from editscope.service.auth import COOKIE, AuthError, Principal, RateLimiter, authenticate
from editscope.service.inputs import InputError, edit_from_form, edit_from_json, json_object
from editscope.service.inputs import MAX_EXAMPLES, EditInput, QueryInput, query_from_form, query_from_json
from editscope.service.keys import KeyRing
from editscope.service.ledger import IdempotencyConflict
from editscope.service.settings import ServiceSettings
from editscope.service.worker import Busy, EditService
from editscope.store.journal import EditRecord
from editscope.store.layout import StoreError

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What the routes of one app use."""

    service: EditService
    keys: KeyRing
    settings: ServiceSettings
    limiter: RateLimiter


class ApiError(Exception):
    """A reply other than success: ``status``, a message and, where one is to blame, a field."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def error_reply(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, context: Context) -> None:
    refused = context.service.metrics.requests_refused

    def reply(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
        if 400 <= status < 500:
            refused.labels(str(status)).inc()
        return error_reply(status, message, field, headers)

    @app.exception_handler(ApiError)
    async def _api(request: Request, error: ApiError) -> JSONResponse:
        return reply(error.status, error.message, error.field, error.headers)

    @app.exception_handler(InputError)
    async def _input(request: Request, error: InputError) -> JSONResponse:
        return reply(error.status, str(error), error.field)

    @app.exception_handler(AuthError)
    async def _auth(request: Request, error: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return reply(error.status, str(error), None, headers)

    @app.exception_handler(IdempotencyConflict)
    async def _conflict(request: Request, error: IdempotencyConflict) -> JSONResponse:
        return reply(409, str(error), "Idempotency-Key")

    @app.exception_handler(Busy)
    async def _busy(request: Request, error: Busy) -> JSONResponse:
        return reply(504, str(error))

    @app.exception_handler(StoreError)
    async def _store(request: Request, error: StoreError) -> JSONResponse:
        return reply(409, str(error))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return reply(422, f"{field or 'request'}: {first.get('msg')}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return reply(error.status_code, str(error.detail), None, dict(error.headers or {}))


def guard(context: Context, role: str, *, allow_cookie: bool = False) -> Callable[[Request], Principal]:
    """A dependency: the request's principal, which must have ``role`` and be within its rate."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(context.keys, request.headers.get("authorization"),
                                 request.cookies.get(COOKIE), role, allow_cookie)
        caller = principal.name if principal.name != "anonymous" else f"anonymous@{_client(request)}"
        wait = context.limiter.check(caller)
        if wait is not None:
            raise ApiError(429, f"rate limit of {context.limiter.per_minute} requests a minute reached for"
                           f" {principal.name!r}; retry in {wait:.0f} s", None, {"Retry-After": str(int(wait) + 1)})
        return principal

    return dependency


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_body(request: Request, settings: ServiceSettings) -> bytes:
    """The request body, or ``413`` as soon as it is known to be over the upload limit, or
    ``408`` when the client takes longer than the request timeout to send it."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within the request timeout of "
                            f"{settings.request_timeout_s:g} s") from None
    body = b"".join(chunks)
    request._body = body  # noqa: SLF001 (Starlette's cache of the body: form() parses it from here)
    return body


async def form_fields(request: Request, limit: int) -> dict[str, list[Any]]:
    """Multipart or urlencoded fields; files as their bytes."""
    try:
        form = await request.form(max_part_size=limit, max_files=2 + 2 * MAX_EXAMPLES, max_fields=200)
    except Exception as error:  # python-multipart's parse errors, Starlette's MultiPartException
        raise InputError(f"the form data cannot be parsed: {error}", None, 400) from None
    fields: dict[str, list[Any]] = {}
    for name, value in form.multi_items():
        fields.setdefault(name, []).append(value if isinstance(value, str) else await value.read())
    return fields


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("multipart/form-data", "application/x-www-form-urlencoded")


async def edit_input(request: Request, settings: ServiceSettings) -> EditInput:
    body = await read_body(request, settings)
    if _is_form(request):
        return edit_from_form(await form_fields(request, settings.max_upload_bytes), settings.max_prompt_chars)
    return edit_from_json(json_object(body), settings.max_prompt_chars)


async def query_input(request: Request, settings: ServiceSettings) -> QueryInput:
    body = await read_body(request, settings)
    if _is_form(request):
        return query_from_form(await form_fields(request, settings.max_upload_bytes), settings.max_prompt_chars)
    return query_from_json(json_object(body), settings.max_prompt_chars)


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not value.strip() or len(value) > 200 or not value.isprintable():
        raise InputError("Idempotency-Key must be 1 to 200 printable characters", "Idempotency-Key", 400)
    return value.strip()


def edit_view(record: EditRecord, submitted_by: str | None = None) -> dict[str, Any]:
    view = record.to_dict()
    view["submitted_by"] = submitted_by
    return view
