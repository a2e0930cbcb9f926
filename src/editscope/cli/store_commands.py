"""CLI commands of the store area: a thin layer over ``editscope.store.EditStore``.

Every command takes ``--store DIR``. Errors are printed as one line on stderr, with exit code 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import json
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import typer

from editscope.store import EditRecord, EditStore, ProbeCheck, StoreError
from editscope.cli.errors import CommandError
from editscope.cli.store_output import check as _check, print_audit as _print_audit, print_record as _print_record
from editscope.cli.store_output import print_rules
from editscope.cli.stream_input import example_option, stream_lines
from editscope.store import rules as scope_rules
from editscope.store.audit import ANSWER_TOKENS, check_own
from editscope.store.replay import check_text
from editscope.types import SCOPES, EditRequest

STORE = typer.Option(..., "--store", help="The store directory.")
EDIT_HELP = " ".join(
    [
        "Apply one edit, or a stream of JSONL edits (--stream FILE, or - for stdin).",
        'Stream lines are JSON objects with "prompt", "target" and optionally "image" (relative',
        "to the stream file's folder, or to the current folder for stdin), \"scope\", \"tags\" and",
        '"rephrases" (lists of strings). Each edit is acknowledged on stdout ("applied edit N")',
        "only once it is journaled as applied, followed by whether it holds (the audit's check:",
        "every target token is the model's top-1 answer; where a query of the edit's input answers more than",
        "the target, that answer is shown) or did not take. With --stream, --scope,",
        "--tag and --rephrase are defaults for every line: a line's own \"scope\" or \"rephrases\" win, its \"tags\" are",
        "added to the --tag ones. Fields are checked by type; a bad line stops the stream with an",
        "error naming its line and field (the edits before it stay applied), or with --keep-going is",
        'reported on stdout ("failed line N: ...") and the stream goes on. A stream exits with 0 when',
        "every edit was applied, 2 when some were rejected, 1 when some lines failed.",
        "--also IMG[:PROMPT] and --never IMG[:PROMPT] (repeatable; IMG alone takes the edit's prompt) give",
        "examples of the edit's scope: inputs that must follow it, and inputs that must keep their answer",
        '(scopememory only); stream lines take "also" and "never": lists of image paths or',
        '{"image", "prompt"} objects. An edit that states no --scope gets its scope from the store\'s',
        "scoping rules (editscope rules).",
    ]
)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Print a failing command's error as one line and exit with status 1. (Also silences
    transformers' weight-loading progress bars, so that stderr holds only what matters.)"""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        yield
    except (StoreError, CommandError, ValueError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


@dataclass(frozen=True)
class OwnCheck:
    """The audit's own-probe check right after an edit, and the greedy answer on that probe."""

    probe: ProbeCheck
    answer: str


def _own_check(store: EditStore, record: EditRecord) -> Optional[OwnCheck]:
    """For an applied edit, the audit's own-probe check on the state just after it (one scoring
    pass: it holds when every target token is the model's top-1 prediction) and the answer that
    a query of the edit's own input now gets."""
    if record.status != "applied":
        return None
    def image_path(sha: Optional[str]) -> Optional[Path]:
        return store.images.get(sha) if sha is not None else None

    probe = check_own(store.editor, record, image_path)
    answer = store.editor.answer(image_path(record.image_sha256), record.prompt, max_new_tokens=ANSWER_TOKENS)
    return OwnCheck(probe, answer)


def _ack(record: EditRecord, where: str = "", check: Optional[OwnCheck] = None) -> str:
    """The acknowledgement of one edit. With ``check`` (run right after the edit) an applied
    edit is reported as holding or as not having taken, with the target loss the editor
    journaled (``result``: loss before/after and steps), and, where a query of the edit's input
    would answer more than the target, that answer."""
    if record.status != "applied":
        return f"rejected edit {record.id}{where}: {record.error}"
    line = f"applied edit {record.id}{where}: {record.prompt!r} -> {record.target!r}"
    if check is None:
        return line
    result = getattr(record, "result", None) or {}
    steps = result.get("steps")
    in_steps = f" after {steps} step{'s' if steps != 1 else ''}" if steps is not None else ""
    if check.probe.holds:
        loss = (f" (target loss {result['loss_before']:.2f} -> {result['loss_after']:.2f}{in_steps})"
                if "loss_before" in result and "loss_after" in result else "")
        if check.answer.strip() == record.target.strip():
            return f"{line}: holds{loss}"
        return (f"{line}: holds{loss}, but the answer runs on past the target: {check.answer!r} (every target "
                "token is top-1; the editor did not learn where the answer ends)")
    loss = f"target loss {result['loss_after']:.2f}{in_steps}; " if "loss_after" in result else ""
    return (
        f"{line}: did not take ({loss}the model's answer is not the target: "
        f"{check.probe.token_accuracy:.0%} of its tokens are top-1, it answers {check.answer!r}) - see `editscope audit`"
    )


def _run_stream(
    store: EditStore,
    source: str,
    *,
    scope: Optional[str] = None,
    tags: Sequence[str] = (),
    rephrases: Sequence[str] = (),
    keep_going: bool = False,
    require_absorbed: bool = False,
) -> int:
    """Apply a JSONL stream; returns the exit code: 0 when every line was applied, 2 when some
    edits were rejected, 1 when some lines failed (``keep_going``: reported with their number,
    and the stream goes on; without it the first bad line is a ``CommandError``)."""
    from tqdm import tqdm

    if source == "-":
        # bytes where possible: each line is decoded on its own, so that an invalid byte is
        # reported with its line number and field
        handle, base, total = getattr(sys.stdin, "buffer", sys.stdin), Path.cwd(), None
    else:
        path = Path(source)
        if not path.is_file():
            raise CommandError(f"stream file not found: {path}")
        handle, base = path.open("rb"), path.parent
        with path.open("rb") as counted:
            total = sum(1 for line in counted if line.strip())
    applied = rejected = untaken = failed = 0
    options = {"require_absorbed": True} if require_absorbed else {}
    with contextlib.ExitStack() as opened, tqdm(total=total, unit="edit", file=sys.stderr, desc="editing") as bar:
        if source != "-":
            opened.callback(handle.close)
        for line in stream_lines(handle, base, scope=scope, tags=tags, rephrases=rephrases):
            error = line.error
            if error is None:
                try:
                    record = store.edit(line.request, tags=line.tags, rephrases=line.rephrases, **options)
                except StoreError as store_error:
                    error = str(store_error)
            if error is not None:
                if not keep_going:
                    raise CommandError(f"stream line {line.number}: {error}")
                failed += 1
                print(f"failed line {line.number}: {error}", flush=True)
                bar.update(1)
                continue
            applied += record.status == "applied"
            rejected += record.status != "applied"
            check = _own_check(store, record)
            untaken += check is not None and not check.probe.holds
            print(_ack(record, f" (line {line.number})", check), flush=True)
            bar.update(1)
    untaken_note = f" ({untaken} of them did not take; see `editscope audit`)" if untaken else ""
    failed_note = f", {failed} line(s) failed" if keep_going else ""
    print(f"done: {applied} applied{untaken_note}, {rejected} rejected{failed_note}", flush=True)
    return 1 if failed else 2 if rejected else 0


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""

    @app.command("init")
    def init_command(
        store: Path = STORE,
        model: str = typer.Option(..., "--model", help="'builtin' or a checkpoint directory."),
        preset: Optional[str] = typer.Option(None, "--preset", help="Editor preset name or YAML file."),
        editor: str = typer.Option("scopememory", "--editor", help="scopememory (the default), scopeedit or more."),
        snapshot_every: int = typer.Option(10, "--snapshot-every", help="Snapshot every K applied edits."),
        device: Optional[str] = typer.Option(None, "--device", help="Device for the model (e.g. cuda); later commands use it too."),
        reference: Optional[Path] = typer.Option(
            None, "--reference",
            help="JSON list of ordinary {prompt, answer, image} inputs the editor calibrates against "
            "(needed by scopememory on a model not trained on a world)."),
    ) -> None:
        """Create an edit store for one base model."""
        with _errors(), EditStore.init(
            store, model, preset, editor=editor, snapshot_every=snapshot_every, device=device,
            reference=reference,
        ) as s:
            base = s.manifest["base_model"]
            typer.echo(f"created store {store} on {base['source']} ({base['fingerprint'][:23]}…)")

    @app.command("edit", help=EDIT_HELP)
    def edit_command(
        store: Path = STORE,
        image: Optional[Path] = typer.Option(None, "--image", help="The edit's image (omit: text-only)."),
        prompt: Optional[str] = typer.Option(None, "--prompt"),
        target: Optional[str] = typer.Option(None, "--target"),
        scope: Optional[str] = typer.Option(
            None, "--scope", help="auto, instance or broad (not given: the store's scoping rules decide, else auto); "
            "with --stream, the default for lines without \"scope\"."),
        tag: List[str] = typer.Option([], "--tag", help="A tag (repeatable); with --stream, added to every line's tags."),
        rephrase: List[str] = typer.Option(
            [], "--rephrase", help="A rephrased prompt kept for audits (repeatable); with --stream, for lines without \"rephrases\"."),
        also: List[str] = typer.Option(
            [], "--also", help="IMG[:PROMPT]: an input that must follow the edit (repeatable; IMG alone: the edit's prompt)."),
        never: List[str] = typer.Option(
            [], "--never", help="IMG[:PROMPT]: an input that must keep its current answer (repeatable)."),
        stream: Optional[str] = typer.Option(None, "--stream", help="JSONL file of edits, or '-' for stdin. --scope, --tag and --rephrase "
            "are then per-line defaults; --image, --prompt, --target, --also and --never are refused (each line "
            "gives its own)."),
        keep_going: bool = typer.Option(
            False, "--keep-going", help="With --stream: report a bad line with its number and go on (exit code 1 "
            "when some lines failed)."),
        require_absorbed: bool = typer.Option(
            False, "--require-absorbed", help="An edit that did not take (its target is not the model's answer right "
            "after it) is rejected, the state left as before it."),
    ) -> None:
        # The help text is EDIT_HELP (below), so that it wraps to the terminal's width.
        with _errors():
            if stream is not None and (image or prompt or target):
                raise CommandError("--stream reads image, prompt and target from the stream; do not pass them too")
            if keep_going and stream is None:
                raise CommandError("--keep-going applies to --stream only")
            if stream is not None and (also or never):
                raise CommandError("--also and --never apply to one edit; in a stream, give each line \"also\"/\"never\"")
            if stream is None and (prompt is None or target is None):
                raise CommandError("edit needs --prompt and --target (or --stream FILE)")
            if scope is not None and scope not in SCOPES:
                raise CommandError(f"--scope must be one of {', '.join(SCOPES)}, got {scope!r}")
            request = None
            if stream is None:
                request = EditRequest(prompt=prompt, target=target, image=image, scope=scope,  # type: ignore[arg-type]
                                      also=[example_option(v, "--also") for v in also],
                                      never=[example_option(v, "--never") for v in never])
            with EditStore.open(store) as s:
                if request is None:
                    code = _run_stream(s, stream, scope=scope, tags=tag, rephrases=rephrase, keep_going=keep_going,
                                       require_absorbed=require_absorbed)
                    if code:
                        raise typer.Exit(code)
                    return
                record = s.edit(request, tags=tag, rephrases=rephrase, require_absorbed=require_absorbed)
                typer.echo(_ack(record, check=_own_check(s, record)))
                if record.status != "applied":
                    raise typer.Exit(2)

    @app.command("query")
    def query_command(
        store: Path = STORE,
        image: Optional[Path] = typer.Option(None, "--image"),
        prompt: str = typer.Option(..., "--prompt"),
        max_new_tokens: int = typer.Option(16, "--max-new-tokens"),
    ) -> None:
        """Answer a prompt with the current state of the store (the last committed one: works on
        a read-only store and while another process writes to it)."""
        with _errors():
            check_text("--prompt", prompt, "the model cannot read it")  # before the model loads
        with _errors(), EditStore.open(store, read_only=True) as s:
            typer.echo(s.query(image, prompt, max_new_tokens=max_new_tokens))

    @app.command("log")
    def log_command(
        store: Path = STORE,
        tag: Optional[str] = typer.Option(None, "--tag"),
        status: Optional[str] = typer.Option(None, "--status", help="pending, applied, rejected, reverted, rolled_back."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The journal of edits (no model is loaded; works on a read-only store and while another
        process writes to it)."""
        with _errors(), EditStore.open(store, load_model=False, read_only=True) as s:
            records = s.log(tag=tag, status=status)
            if as_json:
                typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
                return
            for record in records:
                _print_record(record)

    @app.command("snapshot")
    def snapshot_command(store: Path = STORE, name: str = typer.Option(..., "--name")) -> None:
        """Save the current editor state under a name."""
        with _errors(), EditStore.open(store) as s:
            snap = s.snapshot(name)
            typer.echo(f"snapshot {snap.name}: {len(snap.lineage)} applied edit(s), {snap.file}")

    @app.command("rollback")
    def rollback_command(
        store: Path = STORE, to: str = typer.Option(..., "--to", help="An applied edit id or a snapshot name.")
    ) -> None:
        """Return to the state right after an edit, or to a snapshot (nothing is deleted)."""
        with _errors(), EditStore.open(store) as s:
            change = s.rollback(to=int(to) if to.isdigit() else to)
            typer.echo(
                f"rolled back to {change.target}: {len(change.applied)} edit(s) in effect, "
                f"rolled back {list(change.removed)}, restored {list(change.restored)}"
            )

    @app.command("revert")
    def revert_command(edit_id: int = typer.Argument(..., help="The applied edit to take out."), store: Path = STORE) -> None:
        """Take one edit out: restore the snapshot before it and replay the later edits
        (ScopeMemory: remove its fact's slot and apply the fact's earlier edit again)."""
        with _errors(), EditStore.open(store) as s:
            change = s.revert(edit_id)
            if change.method == "slot":
                again = f", applied edit {change.reapplied} of the same fact again" if change.reapplied else ""
                typer.echo(f"reverted edit {edit_id}: removed its fact's slot{again}")
            elif change.method == "unchanged":
                typer.echo(f"reverted edit {edit_id}: a later edit of the same fact had replaced it; state unchanged")
            else:
                start = s.journal.get_snapshot(change.from_snapshot)  # None: the rebuilt initial state
                replayed = len(change.applied) - (len(start.lineage) if start is not None else 0)
                typer.echo(f"reverted edit {edit_id}: from snapshot {change.from_snapshot}, replayed {replayed} edit(s)")

    @app.command("audit")
    def audit_command(
        store: Path = STORE,
        as_json: bool = typer.Option(False, "--json"),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Do not journal the audit: works on a read-only store and while another "
            "process writes to it (on the last committed state)."),
    ) -> None:
        """Re-score every applied edit against the current state (the audit is journaled)."""
        with _errors(), EditStore.open(store, read_only=dry_run or None) as s:
            report = s.audit(record=not dry_run)
            if as_json:
                typer.echo(json.dumps(report.to_dict(), indent=2))
                return
            _print_audit(report)

    @app.command("rules")
    def rules_command(
        store: Path = STORE,
        set_default: Optional[str] = typer.Option(None, "--set-default", help="auto, instance or broad: the scope of "
                                                  "edits no tag rule covers."),
        clear_default: bool = typer.Option(False, "--clear-default", help="Remove the default (edits then get auto)."),
        tag: List[str] = typer.Option([], "--tag", help="TAG=SCOPE: the scope of edits tagged TAG (repeatable)."),
        remove_tag: List[str] = typer.Option([], "--remove-tag", help="Remove the rule of a tag (repeatable)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Show (and check) or change the store's scoping rules (scope_rules.yaml): the scope an edit
        that states none gets, by its tags, else the default. The journal records which rule decided
        each edit's scope (editscope log, audit)."""
        with _errors():
            if not (store / "store.json").is_file():
                raise CommandError(f"{store} is not an editscope store (no store.json)")
            rules = scope_rules.load_rules(store)
            if set_default or clear_default or tag or remove_tag:
                if set_default and clear_default:
                    raise CommandError("--set-default and --clear-default contradict each other")
                set_tags = {}
                for value in tag:
                    name, _, scope = value.partition("=")
                    if not name.strip() or not scope.strip():
                        raise CommandError(f"--tag takes TAG=SCOPE (e.g. product=instance), got {value!r}")
                    set_tags[name.strip()] = scope.strip()
                rules = scope_rules.updated(rules, default=set_default, set_tags=set_tags, remove_tags=remove_tag,
                                            clear_default=clear_default)
                scope_rules.save_rules(store, rules)
            print_rules(store, rules, as_json)

    @app.command("check")
    def check_command(
        store: Path = STORE,
        repair: bool = typer.Option(
            False, "--repair", help="Remove crash debris and rebuild bad or missing snapshots from an earlier one "
            "plus replay (loads the model); never deletes journal rows, never recreates a journal."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Verify the store's files: journal (every row's integrity check), images, snapshots and crash
        debris; each problem is reported with what it affects. Exit code 1 while problems remain."""
        with _errors():
            _check(store, repair, as_json)

    @app.command("export")
    def export_command(
        store: Path = STORE,
        out: Path = typer.Option(..., "--out"),
        merged: bool = typer.Option(
            False, "--merged",
            help="Write a Hugging Face checkpoint instead of the editor state: scopeedit and more fold "
            "the edits into the weights (plain checkpoint); scopememory, which cannot merge, writes a "
            "routed checkpoint (base weights, slots.safetensors, its own modeling code) that loads "
            "with trust_remote_code=True."),
    ) -> None:
        """Write the current state out with manifest.json (the applied edits). Without --merged:
        the editor state and config only (the base model is not copied; load it back with the
        editor on the same base model). With --merged: a checkpoint with the processor, merged
        (scopeedit, more) or routed (scopememory)."""
        with _errors(), EditStore.open(store) as s:
            s.export(out, merged=merged)
            routed = s.manifest["editor"]["name"] == "scopememory"
            kind = ("routed checkpoint" if routed else "merged checkpoint") if merged else "adapter"
            typer.echo(f"exported {kind} with {len(s.applied_ids())} edit(s) to {out}")


__all__: list[Any] = ["register"]
