"""How the store's commands print: a journal row, an audit (with each edit's scope), a check
report and a store's scoping rules."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from editscope.store import AuditReport, EditRecord
from editscope.store.audit import AuditEntry
from editscope.store.rules import RULES_FILE, ScopeRules


def rule_label(rule: str | None) -> str:
    """What decided an edit's scope, for people: ``stated``, ``tag product``, ``default``,
    ``none`` (no rule: ``auto``), or ``not recorded`` (an edit journaled before rules)."""
    return rule if rule is not None else "not recorded"


def print_record(record: EditRecord) -> None:
    """One line of ``editscope log``: id, status, time, scope and the rule that decided it,
    image, tags, the number of scope examples, prompt and target (and the error)."""
    image = record.image_sha256[:12] if record.image_sha256 else "-"
    tags = ",".join(record.tags) or "-"
    error = f"  ({record.error})" if record.error else ""
    examples = f"  also={len(record.also)} never={len(record.never)}" if record.has_examples else ""
    typer.echo(
        f"{record.id:>5}  {record.status:<11}  {record.created_at[:19]}  {record.scope:<8} "
        f"({rule_label(record.scope_rule)})  image={image}  tags={tags}{examples}  "
        f"{record.prompt!r} -> {record.target!r}{error}"
    )


def _scope_verdict(entry: AuditEntry) -> str:
    if entry.scope_holds is None:
        return ""
    if entry.scope_holds:
        return f"  scope holds ({len(entry.examples)} example(s))"
    broken = [f"{e.kind} {e.prompt!r} on {e.image_sha256[:12]}" + (
        f": was {e.before!r}, now {e.now!r}" if e.kind == "never" else f": accuracy {e.token_accuracy:.2f}")
        for e in entry.examples if not e.holds]
    return "  SCOPE BROKEN (" + "; ".join(broken) + ")"


def print_audit(report: AuditReport) -> None:
    """The audit, one line per edit: its verdict, accuracies, the rule that decided its scope
    and, for an edit with examples, whether its scope holds (and which examples broke it)."""
    for entry in report.entries:
        if entry.superseded_by is not None:
            verdict = f"superseded by {entry.superseded_by}"
        else:
            verdict = "holds" if entry.holds else "FAILS"
        rephrased = "".join(f", rephrase {r.token_accuracy:.2f}" for r in entry.rephrases)
        scope = f"  scope {entry.scope} ({rule_label(entry.scope_rule)})" if entry.scope is not None else ""
        typer.echo(f"{entry.edit_id:>5}  {verdict:<18}  accuracy {entry.own.token_accuracy:.2f}{rephrased}  "
                   f"{entry.prompt!r} -> {entry.target!r}{scope}{_scope_verdict(entry)}")
    where = f"journal event {report.audit_id}" if report.audit_id is not None else "dry run, not journaled"
    broken = f", {len(report.scope_broken)} with a broken scope" if report.scope_broken else ""
    typer.echo(
        f"audit ({where}): {len(report.holding)} hold, {len(report.failing)} fail, "
        f"{len(report.superseded)} superseded{broken}"
    )


def print_rules(store: Path, rules: ScopeRules, as_json: bool) -> None:
    """A store's scoping rules (``editscope rules``)."""
    if as_json:
        typer.echo(json.dumps(rules.to_dict(), indent=2))
        return
    typer.echo(f"scoping rules of {store} ({RULES_FILE}): an edit that states no scope gets its tag's rule, "
               "else the default")
    typer.echo(f"  default: {rules.default or 'auto (no default set)'}")
    for tag, scope in sorted(rules.tags.items()):
        typer.echo(f"  tag {tag}: {scope}")
    if not rules.tags:
        typer.echo("  (no tag rules)")


def check(store: Path, repair: bool, as_json: bool) -> None:
    """``editscope check``: the report, and exit code 1 while problems remain."""
    from editscope.store.check import check_store

    report = check_store(store, repair=repair)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            done = f"\n  repaired: {problem.repaired}" if problem.repaired else ""
            typer.echo(f"problem: {problem.file}: {problem.what}\n  affects: {problem.affects}{done}")
        for note in report.notes:
            typer.echo(f"note: {note}")
        left = report.unrepaired
        checked = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        if not report.problems:
            typer.echo(f"store {store}: no problems ({checked} checked)")
        else:
            typer.echo(f"store {store}: {len(report.problems)} problem(s), {len(left)} not repaired"
                       + ("" if repair or not left else " (see check --repair)"))
    if report.unrepaired:
        raise typer.Exit(1)
