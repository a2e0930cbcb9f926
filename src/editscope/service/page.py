"""The web page at ``/``: the edit log (thumbnail, prompt, target, status, gates, scope, the
latest audit's verdict), a query form, an edit form, and audit/rollback/revert buttons.

Server-rendered HTML; the forms send their requests with a little JavaScript, which adds the
key the reader typed (kept in the browser) as ``Authorization: Bearer``. The log is rendered
for a reader's key, sent by the page as a cookie."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from editscope.service.auth import COOKIE, AuthError, authenticate
from editscope.service.httpkit import Context
from editscope.service.page_assets import SCRIPT, STYLE
from editscope.store.journal import EditRecord
from editscope.types import SCOPES

LOG_ROWS = 200  # the newest edits shown


def page_routes(app: FastAPI, context: Context) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        try:
            who = authenticate(context.keys, request.headers.get("authorization"), request.cookies.get(COOKIE),
                               "reader", allow_cookie=True)
        except AuthError as error:
            return HTMLResponse(render(context, None, str(error)))
        return HTMLResponse(render(context, who.name, None))


def render(context: Context, reader: str | None, problem: str | None) -> str:
    store = context.service.store
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>editscope</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>editscope <span class='note'>{escape(str(store.directory))}</span></h1>",
        _key_form(reader, problem),
        _query_form(),
        _edit_form(),
        _admin_panel(),
    ]
    if reader is not None:
        parts.append(_log(context))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "".join(parts)


def _key_form(reader: str | None, problem: str | None) -> str:
    state = f"signed in as <b>{escape(reader)}</b>" if reader else escape(problem or "")
    return ("<form id='key-form' onsubmit='saveKey(event)'><label>API key "
            "<input id='key' type='password' autocomplete='off' size='50'></label>"
            f"<button type='submit'>Use key</button> <span class='note' id='who'>{state}</span></form>")


def _query_form() -> str:
    return ("<h2>Query</h2><form id='query-form' onsubmit='sendQuery(event)'>"
            "<label>Image <input name='image' type='file' accept='image/*'></label>"
            "<label>Prompt <input name='prompt' required size='40'></label>"
            "<button type='submit'>Ask</button> Answer: <output id='answer'></output></form>")


def _edit_form() -> str:
    scopes = "<option value=''>store rules</option>" + "".join(f"<option>{s}</option>" for s in SCOPES)
    return ("<h2>Edit</h2><form id='edit-form' onsubmit='sendEdit(event)'>"
            "<label>Image <input name='image' type='file' accept='image/*' required></label>"
            "<label>Prompt <input name='prompt' required size='40'></label>"
            "<label>Target <input name='target' required size='20'></label>"
            f"<label>Scope <select name='scope'>{scopes}</select></label>"
            "<label>Tags <input name='tags' size='15' placeholder='a,b'></label>"
            "<button type='submit'>Submit edit</button> <span id='edit-status' class='note'></span></form>")


def _admin_panel() -> str:
    return ("<h2>Admin</h2><div class='panel'>"
            "<button id='audit-button' onclick=\"admin('/v1/audit')\">Run audit</button> "
            "<form style='display:inline;border:0' onsubmit='rollback(event)'><label>Roll back to "
            "<input id='rollback-to' size='12' placeholder='edit id or snapshot'></label>"
            "<button id='rollback-button' type='submit'>Roll back</button></form> "
            "<span id='admin-status' class='note'></span></div>")


def _verdicts(context: Context) -> dict[int, str]:
    audits = context.service.store.audits()
    if not audits:
        return {}
    payload = audits[-1].payload
    verdicts = {i: "holds" for i in payload.get("holding", [])}
    verdicts.update({i: "fails" for i in payload.get("failing", [])})
    verdicts.update({i: "superseded" for i in payload.get("superseded", [])})
    for i in payload.get("scope_broken", []):
        verdicts[i] = verdicts.get(i, "") + ", scope broken"
    return verdicts


def _gates(result: dict[str, Any] | None) -> str:
    if not result or not result.get("gates"):
        return ""
    return "<br>".join(f"{escape(group)}: g={gate.get('g', 0):.2f}" for group, gate in sorted(result["gates"].items()))


def _rule(record: EditRecord) -> str:
    """What decided the scope, and the scope examples, under the scope."""
    rule = f"<br><span class=note>{escape(record.scope_rule)}</span>" if record.scope_rule else ""
    examples = (f"<br><span class=note>also {len(record.also)}, never {len(record.never)}</span>"
                if record.has_examples else "")
    return rule + examples


def _row(record: EditRecord, verdict: str | None, author: str | None) -> str:
    thumb = (f"<img class='thumb' alt='edit {record.id}' src='/v1/images/{record.image_sha256}/thumbnail'>"
             if record.image_sha256 else "")
    revert = (f"<button class='revert' onclick=\"admin('/v1/edits/{record.id}/revert')\">Revert</button>"
              if record.status == "applied" else "")
    return (f"<tr id='edit-{record.id}' data-status='{record.status}'><td>{record.id}</td><td>{thumb}</td>"
            f"<td class='prompt'>{escape(record.prompt)}</td><td class='target'>{escape(record.target)}</td>"
            f"<td class='status status-{record.status}'>{record.status}"
            f"{'<br><span class=note>' + escape(record.error) + '</span>' if record.error else ''}</td>"
            f"<td>{_gates(record.result)}</td><td>{record.scope}{_rule(record)}</td><td>{verdict or ''}</td>"
            f"<td>{escape(author or '')}</td><td>{revert}</td></tr>")


def _log(context: Context) -> str:
    service = context.service
    records = [service.visible(r) for r in service.store.journal.edits()][-LOG_ROWS:][::-1]
    verdicts = _verdicts(context)
    authors = service.ledger.authors([r.id for r in records])
    rows = "".join(_row(r, verdicts.get(r.id), authors.get(r.id)) for r in records)
    return ("<h2>Edit log</h2><table id='log'><thead><tr><th>id</th><th>image</th><th>prompt</th><th>target</th>"
            "<th>status</th><th>gates</th><th>scope</th><th>audit</th><th>by</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
