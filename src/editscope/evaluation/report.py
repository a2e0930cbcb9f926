"""Aggregates, ``results.json``, ``summary.md`` and plots of a comparison.

Layout of ``results.json``::

    {"command": "...", "created": "...", "config": {...}, "stream": [{case}, ...],
     "editors": {name: {
         "config": {...},
         "online":    {"<N>": {metric: value}},   # the first N edits, each scored right after it
         "retention": {"<N>": {metric: value}},   # all facts edited so far, scored after N edits
         "cost": {...},                           # edit times, memory, state bytes
         "edits": [per-edit rows], "retention_rows": {"<N>": [rows]}}}}

Metric keys: ``rel t_gen m_gen t_loc m_loc exact_match port text_transfer near_miss_leak
proper_share under_share over_share entangled_share edit_time_median_s`` and the variants
named in ``EXTRA_METRICS``. A metric the data cannot measure is ``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from editscope.evaluation import metrics as M
from editscope.evaluation.protocol import EditorRun

MAIN_METRICS: tuple[str, ...] = (
    "rel", "t_gen", "m_gen", "t_loc", "m_loc", "exact_match", "port", "text_transfer",
    "near_miss_leak", "proper_share", "under_share", "over_share", "entangled_share",
    "edit_time_median_s",
)
EXTRA_METRICS: tuple[str, ...] = (
    "t_gen_exact_match", "m_gen_exact_match", "t_loc_full", "m_loc_full_top1", "m_loc_full_top10",
    "other_fact_loc", "transfer", "leak_rate", "n_scored", "n_classified",
)
_ROW_MEANS = ("rel", "t_gen", "m_gen", "t_loc", "m_loc", "exact_match", "port", "text_transfer",
              "near_miss_leak", "t_gen_exact_match", "m_gen_exact_match", "t_loc_full",
              "m_loc_full_top1", "m_loc_full_top10", "other_fact_loc", "transfer")


def aggregate(rows: Sequence[dict[str, Any]], edit_times: Sequence[float]) -> dict[str, Any]:
    """Means of the per-case metrics over ``rows``, the scope shares, and the median edit time."""
    out: dict[str, Any] = {k: M.mean_or_none(r.get(k) for r in rows) for k in _ROW_MEANS}
    out.update(M.scope_shares(r.get("scope_class") for r in rows))
    out["leak_rate"] = M.leak_rate(bool(r.get("leaked")) for r in rows)
    out["edit_time_median_s"] = M.median_or_none(list(edit_times))
    out["n_scored"] = len(rows)
    out["n_classified"] = sum(r.get("scope_class") is not None for r in rows)
    return {k: out.get(k) for k in (*MAIN_METRICS, *EXTRA_METRICS)}


def window_size(n: int) -> int:
    """Edits in the 'start' and 'end' windows of a stream of ``n`` edits (100 for 1000)."""
    return min(100, max(1, n // 10))


def cost_summary(run: EditorRun) -> dict[str, Any]:
    times = [r["edit_time_s"] for r in run.edits]
    w = window_size(len(times))
    ratios = [r["edit_time_s"] / (r["steps"] * run.fwd_bwd_s)
              for r in run.edits if run.fwd_bwd_s and r.get("steps")]
    return {
        "edit_time_median_s": M.median_or_none(times),
        "edit_time_p95_s": M.quantile(times, 0.95),
        "edit_time_start_median_s": M.median_or_none(times[:w]),
        "edit_time_end_median_s": M.median_or_none(times[-w:]),
        "window": w,
        "fwd_bwd_s": run.fwd_bwd_s,
        "overhead_ratio": M.median_or_none(ratios),
        "rss_max_bytes": max((r.get("rss_bytes", 0) for r in run.edits), default=None),
        "peak_rss_bytes": max((r["peak_rss_bytes"] for r in run.edits), default=None),
        "peak_gpu_bytes": max((r.get("peak_gpu_bytes", 0) for r in run.edits), default=None) or None,
        "state_bytes_first": run.edits[0]["state_bytes"] if run.edits else None,
        "state_bytes_last": run.edits[-1]["state_bytes"] if run.edits else None,
        "rejected_edits": sum(r.get("rejected") is not None for r in run.edits),
    }


def editor_results(run: EditorRun, checkpoints: Iterable[int]) -> dict[str, Any]:
    times = [r["edit_time_s"] for r in run.edits]
    online, retention = {}, {}
    for n in checkpoints:
        online[str(n)] = aggregate(run.edits[:n], times[:n])
        if n in run.retention:
            retention[str(n)] = aggregate(run.retention[n], times[:n])
    cost = cost_summary(run)
    for block in (*online.values(), *retention.values()):
        block["edit_time_start_median_s"] = cost["edit_time_start_median_s"]
        block["edit_time_end_median_s"] = cost["edit_time_end_median_s"]
    return {
        "config": run.config, "online": online, "retention": retention, "cost": cost,
        "edits": run.edits, "retention_rows": {str(n): rows for n, rows in run.retention.items()},
    }


def build_results(runs: Sequence[EditorRun], checkpoints: Sequence[int], config: dict[str, Any],
                  stream: Sequence[dict[str, Any]], command: str, created: str) -> dict[str, Any]:
    return {
        "command": command,
        "created": created,
        "config": config,
        "stream": list(stream),
        "editors": {run.name: editor_results(run, checkpoints) for run in runs},
    }


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null; floats keep 7 significant digits (the scores are means
    of float32 values, and the per-edit rows of a 1000-edit comparison are megabytes)."""
    if isinstance(value, float):
        return float(f"{value:.7g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(results), separators=(",", ":")) + "\n", encoding="utf-8")
    return path


# -- summary.md ----------------------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rel", "Rel"), ("exact_match", "EM"), ("t_gen", "T-Gen"), ("m_gen", "M-Gen"),
    ("text_transfer", "Text"), ("port", "Port"), ("t_loc", "T-Loc"), ("m_loc", "M-Loc"),
    ("m_loc_full_top10", "M-Loc@10 full"), ("other_fact_loc", "Other fact"), ("near_miss_leak", "Near-miss leak"),
    ("proper_share", "Proper"), ("under_share", "Under"), ("over_share", "Over"),
    ("entangled_share", "Entangled"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_time(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def editor_label(name: str, config: dict[str, Any]) -> str:
    """An editor's name in the tables: ``scopememory +examples 1`` for a run with scope examples."""
    n = config.get("scope_examples") or 0
    return f"{name} +examples {n}" if n else name


def _table(results: dict[str, Any], block: str, n: str) -> list[str]:
    columns = [c for c in _COLUMNS if any(
        e[block].get(n, {}).get(c[0]) is not None for e in results["editors"].values())]
    head = ["editor", *[label for _, label in columns], "edit time (median)", "start", "end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in results["editors"].items():
        agg = entry[block].get(n)
        if agg is None:
            continue
        cells = [editor_label(name, results.get("config", {})), *[_fmt(agg.get(key)) for key, _ in columns],
                 _fmt_time(agg.get("edit_time_median_s")), _fmt_time(agg.get("edit_time_start_median_s")),
                 _fmt_time(agg.get("edit_time_end_median_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# The project's goals for ScopeEdit (retention after the last checkpoint of a long stream):
# (metric, direction, target). Shown in every summary that has a ScopeEdit row.
GOALS: tuple[tuple[str, str, float], ...] = (
    ("rel", ">=", 0.95), ("t_gen", ">=", 0.90), ("m_gen", ">=", 0.85), ("text_transfer", ">=", 0.50),
    ("t_loc", ">=", 0.95), ("m_loc", ">=", 0.95), ("near_miss_leak", "<=", 0.05), ("proper_share", ">=", 0.80),
)
# ScopeMemory's goals (the routed editor; its rival is GRACE, the other editor with a per-edit
# routing test).
MEMORY_GOALS: tuple[tuple[str, str, float], ...] = (
    ("rel", ">=", 0.97), ("t_gen", ">=", 0.90), ("m_gen", ">=", 0.80), ("text_transfer", ">=", 0.50),
    ("t_loc", ">=", 0.98), ("m_loc", ">=", 0.97), ("other_fact_loc", ">=", 0.95), ("near_miss_leak", "<=", 0.05),
    ("proper_share", ">=", 0.80),
)
# The editors whose goals a summary shows: editor -> (goals, rival).
EDITOR_GOALS: dict[str, tuple[tuple[tuple[str, str, float], ...], str]] = {
    "scopememory": (MEMORY_GOALS, "grace"), "scopeedit": (GOALS, "more"),
}
IN_SCOPE = ("t_gen", "m_gen", "text_transfer")
OUT_OF_SCOPE = ("t_loc", "m_loc", "near_miss_leak")  # leakage counts as 1 - leak


def _mean_of(agg: dict[str, Any], keys: Sequence[str]) -> float | None:
    values = [agg.get(k) for k in keys]
    values = [None if v is None else (1.0 - v if k == "near_miss_leak" else v) for k, v in zip(keys, values)]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def goals_section(results: dict[str, Any], checkpoint: str, editor: str = "scopeedit",
                  rival: str = "more", goals: Sequence[tuple[str, str, float]] = GOALS) -> list[str]:
    """Each goal against the value every editor reached (retention at ``checkpoint``), whether
    ``editor`` met it, and whether ``editor`` is ahead of ``rival`` on in-scope transfer at
    equal or better out-of-scope locality. Empty when ``editor`` is not in the results."""
    editors = results["editors"]
    if editor not in editors or checkpoint not in editors[editor]["retention"]:
        return []
    names = [n for n in editors if checkpoint in editors[n]["retention"]]
    lines = [f"## Goals for {editor} (retention after {checkpoint} edits)", "",
             "| metric | goal | " + " | ".join(names) + f" | {editor}: goal |",
             "|" + "---|" * (len(names) + 3)]
    for key, direction, target in goals:
        value = editors[editor]["retention"][checkpoint].get(key)
        if value is None:
            verdict = "n/a"
        else:
            verdict = "met" if (value >= target if direction == ">=" else value <= target) else "**missed**"
        cells = [_fmt(editors[n]["retention"][checkpoint].get(key)) for n in names]
        lines.append(f"| {key} | {direction} {target:.2f} | " + " | ".join(cells) + f" | {verdict} |")
    lines.append("")
    if rival in editors and checkpoint in editors[rival]["retention"]:
        mine, theirs = editors[editor]["retention"][checkpoint], editors[rival]["retention"][checkpoint]
        transfer = (_mean_of(mine, IN_SCOPE), _mean_of(theirs, IN_SCOPE))
        locality = (_mean_of(mine, OUT_OF_SCOPE), _mean_of(theirs, OUT_OF_SCOPE))
        if None not in transfer and None not in locality:
            ahead = transfer[0] > transfer[1] and locality[0] >= locality[1]
            lines += [f"In-scope transfer (mean of {', '.join(IN_SCOPE)}): {editor} {transfer[0]:.3f}, "
                      f"{rival} {transfer[1]:.3f}; out-of-scope locality (mean of t_loc, m_loc, "
                      f"1 - near_miss_leak): {editor} {locality[0]:.3f}, {rival} {locality[1]:.3f}. "
                      f"{editor} ahead of {rival} on transfer at equal or better locality: "
                      f"{'met' if ahead else '**missed**'}.", ""]
    return lines


# edges of the age buckets: edits since a fact's last edit (1 = the last edit of the stream)
AGE_EDGES: tuple[int, ...] = (1, 11, 31, 101, 301, 1001)


def age_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else (f"{low}" if high - 1 == low else f"{low}-{high - 1}")


def retention_by_age(entry: dict[str, Any], checkpoint: str,
                     metric: str = "rel") -> list[tuple[str, float | None, int]]:
    """Forgetting: the retention ``metric`` after ``checkpoint`` edits, grouped by the age of
    each fact's latest edit (edits made since it, counting it: 1 for the last edit of the stream)
    over the facts whose latest edit was absorbed when it was made (online ``metric`` = 1), so
    that what is measured is what later edits undid. ``[(bucket label, mean or None, facts)]``
    for the buckets of ``AGE_EDGES`` up to the checkpoint."""
    n = int(checkpoint)
    last: dict[Any, dict[str, Any]] = {}
    for row in entry["edits"][:n]:
        last[row["fact_id"]] = row
    edges = [e for e in AGE_EDGES if e <= n] + [None]
    groups: list[list[float]] = [[] for _ in edges[:-1]]
    for row in entry.get("retention_rows", {}).get(checkpoint, []):
        edit = last.get(row["fact_id"])
        if edit is None or edit.get(metric) != 1.0 or row.get(metric) is None:
            continue
        age = n - int(edit["edit_index"])
        for i in range(len(groups)):
            if age >= edges[i] and (edges[i + 1] is None or age < edges[i + 1]):
                groups[i].append(float(row[metric]))
    return [(age_label(edges[i], edges[i + 1]), sum(g) / len(g) if g else None, len(g))
            for i, g in enumerate(groups)]


def forgetting_tables(results: dict[str, Any], checkpoint: str) -> dict[str, list[tuple[str, float | None, int]]]:
    """``retention_by_age`` of every editor that has a fact to show, without the buckets that
    are empty for all of them."""
    tables = {name: retention_by_age(entry, checkpoint) for name, entry in results["editors"].items()
              if checkpoint in entry.get("retention_rows", {})}
    tables = {name: t for name, t in tables.items() if any(count for _, _, count in t)}
    if not tables:
        return {}
    keep = [i for i in range(len(next(iter(tables.values())))) if any(t[i][2] for t in tables.values())]
    return {name: [t[i] for i in keep] for name, t in tables.items()}


def forgetting_section(results: dict[str, Any], checkpoint: str) -> list[str]:
    tables = forgetting_tables(results, checkpoint)
    if not tables:
        return []
    labels = [label for label, _, _ in next(iter(tables.values()))]
    lines = [f"## Forgetting: Rel after {checkpoint} edits by the age of each fact's latest edit", "",
             "Facts whose latest edit was reliable when it was made (online Rel = 1), grouped by the "
             "number of edits made since (1 = the last edit of the stream); each cell is the mean "
             "retention Rel and, in brackets, the number of facts.", "",
             "| editor | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, table in tables.items():
        cells = " | ".join(f"{_fmt(v)} ({c})" for _, v, c in table)
        lines.append(f"| {editor_label(name, results.get('config', {}))} | {cells} |")
    return lines + [""]


GATE_OPEN = 0.05  # a gate whose shared-step scale g is above this counts as open in the report


def gate_summary(entry: dict[str, Any], open_at: float = GATE_OPEN) -> dict[str, Any] | None:
    """How open an editor's evidence gate was over its stream: the number of gates recorded (one
    per shared-branch group and edit), the mean ``cos``, ``support`` and ``g``, and the share of
    gates with ``g > open_at``; None for an editor that records no gates."""
    gates = [g for row in entry["edits"] if row.get("gates") for g in row["gates"].values()]
    if not gates:
        return None
    summary: dict[str, Any] = {"gates": len(gates)}
    for key in ("cos", "support", "g"):
        summary[key] = sum(float(g[key]) for g in gates) / len(gates)
    summary["open_share"] = sum(float(g["g"]) > open_at for g in gates) / len(gates)
    return summary


def gate_section(results: dict[str, Any]) -> list[str]:
    rows = {name: gate_summary(entry) for name, entry in results["editors"].items()}
    rows = {name: row for name, row in rows.items() if row is not None}
    if not rows:
        return []
    lines = ["## Evidence gate", "",
             "Over the whole stream, one gate per edit and shared-branch group: mean cos(u_t, u_v), "
             f"support and shared-step scale g, and the share of gates with g > {GATE_OPEN}.", "",
             "| editor | gates | cos | support | g | open |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {editor_label(name, results.get('config', {}))} | {row['gates']} | {_fmt(row['cos'])} | "
                     f"{_fmt(row['support'])} | {_fmt(row['g'])} | {_fmt(row['open_share'])} |")
    return lines + [""]


def summary_markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    checkpoints = [str(n) for n in cfg["checkpoints"]]
    last = checkpoints[-1]
    out = [
        "# Edit benchmark",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Model: `{cfg.get('model')}` · data: `{cfg.get('data')}` · edits: {cfg.get('edits')} · "
        + (f"facts: the first {cfg['facts']} records · " if cfg.get("facts") else "")
        + (f"scope examples: {cfg['scope_examples']} also and {cfg['scope_examples']} never per edit · "
           if cfg.get("scope_examples") else "")
        + f"seed: {cfg.get('seed')} · preset: `{cfg.get('preset')}` · scope threshold: "
        f"{cfg.get('scope_threshold')} · created {results['created']}",
        "",
        "Retention: after N edits, every fact edited so far is scored on the final model "
        "(against its latest value). T-Loc and M-Loc are top-1 agreement with the unedited "
        "model on the answer tokens; M-Loc@10 full is the field's top-10 agreement over the "
        "whole sequence; Other fact is the same agreement for another fact of the edited subject, asked "
        "on the edit image (world data). Scope shares are over reliable edits (Rel = 1). Edit time: median over "
        "the first N edits, and over the first and last "
        f"{results['editors'][next(iter(results['editors']))]['cost']['window'] if results['editors'] else 0} "
        "edits of the stream.",
        "",
    ]
    for editor, (goals, rival) in EDITOR_GOALS.items():
        out += goals_section(results, last, editor, rival, goals)
    for n in checkpoints:
        out += [f"## Retention after {n} edits", "", *_table(results, "retention", n), ""]
    out[4:4] = [f"Merged from: `{command}`\n" for command in cfg.get("merged_from", [])] + [
        f"Replaced: `{r['editor']}` by the run of `{r['by']}`\n" for r in cfg.get("replaced", [])
    ]
    out += [f"## Online (each edit scored right after it), {last} edits", "",
            *_table(results, "online", last), ""]
    out += forgetting_section(results, last)
    out += gate_section(results)
    out += ["## Cost per edit", "",
            "| editor | median | p95 | start | end | fwd+bwd | overhead ratio | RSS (max during run) | state (first) | state (last) | rejected |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["editors"].items():
        c = entry["cost"]
        out.append("| " + " | ".join([
            editor_label(name, cfg), _fmt_time(c["edit_time_median_s"]), _fmt_time(c["edit_time_p95_s"]),
            _fmt_time(c["edit_time_start_median_s"]), _fmt_time(c["edit_time_end_median_s"]),
            _fmt_time(c["fwd_bwd_s"]), _fmt(c["overhead_ratio"], 2), _fmt_bytes(c["rss_max_bytes"]),
            _fmt_bytes(c["state_bytes_first"]), _fmt_bytes(c["state_bytes_last"]), str(c["rejected_edits"]),
        ]) + " |")
    out.append("")
    return "\n".join(out)


def write_summary(results: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_markdown(results), encoding="utf-8")
    return path
