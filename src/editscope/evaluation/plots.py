"""PNG plots of a comparison, drawn from the ``results.json`` structure (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOTTED_METRICS: tuple[tuple[str, str], ...] = (
    ("rel", "Rel"), ("exact_match", "Exact match"), ("t_gen", "T-Gen"), ("m_gen", "M-Gen"),
    ("text_transfer", "Text-only transfer"), ("port", "Portability"), ("t_loc", "T-Loc"),
    ("m_loc", "M-Loc"), ("near_miss_leak", "Near-miss leakage"), ("proper_share", "Proper-scope share"),
)


def _label(results: dict[str, Any], name: str) -> str:
    """An editor's legend label (``scopememory +examples 1`` for a run with scope examples)."""
    from editscope.evaluation.report import editor_label

    return editor_label(name, results.get("config", {}))


def _series(entry: dict[str, Any], block: str, metric: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for n, agg in sorted(entry[block].items(), key=lambda kv: int(kv[0])):
        if agg.get(metric) is not None:
            xs.append(int(n))
            ys.append(agg[metric])
    return xs, ys


def plot_metrics(results: dict[str, Any], path: Path) -> Path:
    """One panel per metric: the metric against the number of edits, one line per editor
    (retention solid, online dashed)."""
    metrics = [(k, label) for k, label in PLOTTED_METRICS
               if any(_series(e, "retention", k)[0] for e in results["editors"].values())]
    cols = 3
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label) in zip(axes.flat, metrics):
        for i, (name, entry) in enumerate(results["editors"].items()):
            color = colors[i % len(colors)]
            xs, ys = _series(entry, "retention", key)
            ax.plot(xs, ys, marker="o", color=color, label=_label(results, name))
            xs, ys = _series(entry, "online", key)
            ax.plot(xs, ys, linestyle="--", color=color, alpha=0.5)
        ax.set_title(label)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("edits")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if metrics:
        axes.flat[0].legend(fontsize=8)
    fig.suptitle("Metrics against the number of edits (solid: retention, dashed: online)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def tradeoff_point(agg: dict[str, Any]) -> tuple[float | None, float | None]:
    """(out-of-scope locality, in-scope transfer) of one aggregate: locality is the mean of
    T-Loc, M-Loc and 1 - near-miss leakage; transfer the mean of T-Gen, M-Gen and text-only
    transfer (those the data has)."""
    leak = agg.get("near_miss_leak")
    locality = _mean([agg.get("t_loc"), agg.get("m_loc"), None if leak is None else 1.0 - leak])
    transfer = _mean([agg.get("t_gen"), agg.get("m_gen"), agg.get("text_transfer")])
    return locality, transfer


def _save(fig: Any, ax: Any, title: str, path: Path) -> Path:
    """Grid, title, tight layout; write ``path`` and close the figure."""
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(results: dict[str, Any], path: Path) -> Path:
    """In-scope transfer against out-of-scope locality, per editor, along the checkpoints
    (retention); the last checkpoint is the large labelled marker."""
    fig, ax = plt.subplots(figsize=(6, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, entry) in enumerate(results["editors"].items()):
        points = [tradeoff_point(agg) for _, agg in sorted(entry["retention"].items(), key=lambda kv: int(kv[0]))]
        points = [(x, y) for x, y in points if x is not None and y is not None]
        if not points:
            continue
        color = colors[i % len(colors)]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color=color, alpha=0.6)
        ax.scatter([points[-1][0]], [points[-1][1]], s=80, color=color, label=_label(results, name), zorder=3)
        ax.annotate(_label(results, name), points[-1], textcoords="offset points", xytext=(5, 5),
                    fontsize=9)
    ax.set_xlabel("out-of-scope locality (T-Loc, M-Loc, 1 - near-miss leakage)")
    ax.set_ylabel("in-scope transfer (T-Gen, M-Gen, text-only)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, ax, "Edit scope: transfer against locality (retention)", path)


def plot_edit_time(results: dict[str, Any], path: Path) -> Path:
    """Wall time of each edit against its index in the stream, per editor."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in results["editors"].items():
        times = [r["edit_time_s"] * 1000 for r in entry["edits"]]
        ax.plot(range(1, len(times) + 1), times, label=_label(results, name), linewidth=1,
                marker="." if len(times) < 50 else None)
    ax.set_xlabel("edit index")
    ax.set_ylabel("edit wall time (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _save(fig, ax, "Time per edit along the stream", path)


def plot_forgetting(results: dict[str, Any], path: Path) -> Path:
    """Retention Rel at the last checkpoint against the age of each fact's latest edit (facts
    whose latest edit was reliable when made), one line per editor: how fast later edits undo
    earlier ones."""
    from editscope.evaluation.report import forgetting_tables

    last = str(max(int(n) for n in results["config"]["checkpoints"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    labels: list[str] = []
    for name, table in forgetting_tables(results, last).items():
        labels = labels or [label for label, _, _ in table]
        xs = [i for i, (_, v, _) in enumerate(table) if v is not None]
        ax.plot(xs, [table[i][1] for i in xs], marker="o", label=_label(results, name))
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(f"edits since the fact's latest edit (after {last} edits)")
    ax.set_ylabel("retention Rel")
    ax.set_ylim(-0.05, 1.05)
    if labels:
        ax.legend(fontsize=8)
    return _save(fig, ax, "Forgetting: how later edits undo earlier ones", path)


def write_plots(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_metrics(results, out / "metrics_vs_edits.png"),
        plot_tradeoff(results, out / "scope_tradeoff.png"),
        plot_edit_time(results, out / "edit_time.png"),
        plot_forgetting(results, out / "forgetting.png"),
    ]
