"""Running a stream of edits on editors and scoring them online and by retention.

One ``VisionLanguageModel`` is shared by every editor of a comparison: the unedited model's
locality references are computed once before any editor exists; each editor is then built
fresh on the same model, fed the same edits in the same order, and the model is put back to
its base state (and checked against the references) before the next editor starts.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from editscope.editors.base import Editor, EditRejected, target_loss
from editscope.evaluation import metrics as M
from editscope.evaluation.data import EditCase
from editscope.evaluation.stream import latest_per_fact
from editscope.evaluation.restore import ModelRestorePoint
from editscope.types import Probe

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS: tuple[int, ...] = (1, 10, 100, 1000)
EditorFactory = Callable[[Any], Editor]
ReferenceKey = tuple[str, str, int]  # (fact id, probe kind, index)


@dataclass(frozen=True)
class ProtocolConfig:
    checkpoints: tuple[int, ...] = DEFAULT_CHECKPOINTS
    scope_threshold: float = M.DEFAULT_SCOPE_THRESHOLD
    exact_match: bool = True
    extra_new_tokens: int = 3  # greedy answers get len(target tokens) + this many tokens
    record_anchors: bool = True  # pass the record's locality pair as the edit's anchors
    sibling_anchors: bool = False  # also pass the record's unscored sibling questions (world data)
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.checkpoints or any(int(c) < 1 for c in self.checkpoints):
            raise ValueError(f"checkpoints must be positive integers, got {self.checkpoints}")
        object.__setattr__(self, "checkpoints", tuple(sorted({int(c) for c in self.checkpoints})))
        if not 0.0 <= self.scope_threshold <= 1.0:
            raise ValueError(f"scope_threshold must lie in [0, 1], got {self.scope_threshold}")

    def checkpoints_for(self, n_edits: int) -> tuple[int, ...]:
        """The checkpoints within a stream of ``n_edits`` edits, always ending at the last edit."""
        return tuple(sorted({c for c in self.checkpoints if c <= n_edits} | {n_edits}))


@dataclass
class EditorRun:
    """Everything measured for one editor: one row per edit (online), rows per checkpoint
    (retention), and the editor's configuration."""

    name: str
    config: dict[str, Any]
    edits: list[dict[str, Any]] = field(default_factory=list)
    retention: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    fwd_bwd_s: float | None = None


# -- references from the unedited model ----------------------------------------------------


def _teacher_forced(vlm: Any, probe: Probe) -> tuple[torch.Tensor, Any]:
    """Logits (T, V) of ``probe`` teacher-forced on its answer, and the encoded inputs.

    Editors change the wrapped model in place (adapter modules), so reading through the
    ``VisionLanguageModel`` reads the edited model, as ``Editor.logits`` does; encoding once
    gives both the logits and the answer positions."""
    inputs = vlm.encode(probe.image, probe.prompt, probe.answer)
    with torch.no_grad():
        logits = vlm.forward(inputs)[0].float()
    return logits, inputs


def out_of_scope_keys(case: EditCase) -> list[tuple[ReferenceKey, Probe]]:
    return [((case.fact_id, kind, j), probe)
            for kind, probes in case.out_of_scope_probes().items() for j, probe in enumerate(probes)]


def compute_references(vlm: Any, stream: Sequence[EditCase], progress: bool = True) -> dict[ReferenceKey, M.ProbeOutputs]:
    """The unedited model's predictions on every out-of-scope probe of the stream, once."""
    refs: dict[ReferenceKey, M.ProbeOutputs] = {}
    todo = {key: probe for case in stream for key, probe in out_of_scope_keys(case)}
    for key, probe in tqdm(todo.items(), desc="references", disable=not progress, leave=False):
        logits, inputs = _teacher_forced(vlm, probe)
        refs[key] = M.probe_outputs(logits, inputs.target_positions)
    return refs


def check_matches_base(vlm: Any, refs: Mapping[ReferenceKey, M.ProbeOutputs],
                       probes: Mapping[ReferenceKey, Probe], what: str) -> None:
    """Raise when the model's predictions on the given probes differ from the base model's."""
    for key, probe in probes.items():
        logits, inputs = _teacher_forced(vlm, probe)
        current = M.probe_outputs(logits, inputs.target_positions)
        if M.agreement(refs[key].full_topk, current.full_topk) < 1.0:
            raise RuntimeError(f"{what}: predictions on probe {key} differ from the unedited model's")


# -- scoring one case ----------------------------------------------------------------------


class CaseScorer:
    """Scores edit cases on an editor against the base references."""

    def __init__(self, editor: Editor, refs: Mapping[ReferenceKey, M.ProbeOutputs], config: ProtocolConfig) -> None:
        self.editor = editor
        self.vlm = editor.vlm
        self.refs = refs
        self.config = config

    def _accuracy(self, probe: Probe) -> tuple[float, int]:
        logits, inputs = _teacher_forced(self.vlm, probe)
        predicted = logits[inputs.target_positions.long()].argmax(-1)
        return M.token_accuracy(predicted.cpu(), inputs.target_ids.cpu()), int(inputs.target_ids.numel())

    def _exact(self, probe: Probe, n_tokens: int) -> float:
        text = self.editor.answer(probe.image, probe.prompt,
                                  max_new_tokens=n_tokens + self.config.extra_new_tokens)
        return M.exact_match(text, probe.answer)

    def _in_scope(self, row: dict[str, Any], name: str, probe: Probe | None, exact: bool) -> None:
        if probe is None:
            return
        acc, n = self._accuracy(probe)
        row[name] = acc
        if exact and self.config.exact_match:
            row["exact_match" if name == "rel" else f"{name}_exact_match"] = self._exact(probe, n)

    def _locality(self, key: ReferenceKey, probe: Probe) -> M.LocalityScores:
        logits, inputs = _teacher_forced(self.vlm, probe)
        return M.locality(self.refs[key], M.probe_outputs(logits, inputs.target_positions))

    def score(self, case: EditCase) -> dict[str, Any]:
        request = case.request
        row: dict[str, Any] = {"case_id": case.case_id, "fact_id": case.fact_id, "round": case.round}
        self._in_scope(row, "rel", Probe(request.prompt, request.target, request.image), exact=True)
        self._in_scope(row, "t_gen", case.rephrase, exact=True)
        self._in_scope(row, "m_gen", case.image_rephrase, exact=True)
        if case.portability:
            row["port"] = M.mean_or_none(self._accuracy(p)[0] for p in case.portability)
        if case.text_transfer:
            row["text_transfer"] = M.mean_or_none(self._accuracy(p)[0] for p in case.text_transfer)
        scores: dict[str, list[M.LocalityScores]] = {}
        for key, probe in out_of_scope_keys(case):
            scores.setdefault(key[1], []).append(self._locality(key, probe))
        if "loc" in scores:
            row["t_loc"] = M.mean_or_none(s.answer_top1 for s in scores["loc"])
            row["t_loc_full"] = M.mean_or_none(s.full_top1 for s in scores["loc"])
        if "m_loc" in scores:
            row["m_loc"] = M.mean_or_none(s.answer_top1 for s in scores["m_loc"])
            row["m_loc_full_top1"] = M.mean_or_none(s.full_top1 for s in scores["m_loc"])
            row["m_loc_full_top10"] = M.mean_or_none(s.full_topk for s in scores["m_loc"])
        if "other_fact" in scores:
            row["other_fact_loc"] = M.mean_or_none(s.answer_top1 for s in scores["other_fact"])
        if "near_miss" in scores:
            row["near_miss_leak"] = M.leak_rate(s.changed for s in scores["near_miss"])
        transfer = M.in_scope_transfer(row.get("t_gen"), row.get("m_gen"),
                                       [row["text_transfer"]] if "text_transfer" in row else [])
        leaked = any(s.changed for kind in scores.values() for s in kind)
        row["transfer"] = transfer
        row["leaked"] = leaked
        row["scope_class"] = M.classify_scope(row["rel"], transfer, leaked, self.config.scope_threshold)
        return row


# -- running a stream ----------------------------------------------------------------------


def peak_memory_bytes() -> int:
    """Peak resident memory of this process so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def resident_memory_bytes() -> int:
    """Resident memory of this process now (bytes; the peak where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return peak_memory_bytes()


def _device_of(vlm: Any) -> torch.device:
    return next(vlm.model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_fwd_bwd(vlm: Any, stream: Sequence[EditCase], n: int = 5) -> float | None:
    """Median time of one forward + backward pass of the target NLL on edit inputs, with
    gradients flowing to the MLP and projector linears of the edit sites (what a gradient
    editor pays per step). The model is left exactly as it was."""
    groups = vlm.site_paths(len(vlm.decoder_layers()), include_projector=True)
    paths = [p for group in groups.values() for p in group]
    if not paths:
        return None
    device = _device_of(vlm)
    times = []
    with ModelRestorePoint(vlm.model):
        weights = [vlm.model.get_submodule(p).weight for p in paths]
        for w in weights:
            w.requires_grad_(True)
        for case in list(stream)[: n + 1]:
            req = case.request
            inputs = vlm.encode(req.image, req.prompt, req.target)
            _sync(device)
            start = time.perf_counter()
            with torch.enable_grad():
                target_loss(vlm, inputs).backward()
            _sync(device)
            times.append(time.perf_counter() - start)
            for w in weights:
                w.grad = None
    return M.median_or_none(times[1:] if len(times) > 1 else times)  # the first pass warms up


def anchored_request(case: EditCase, config: ProtocolConfig):
    """The case's edit request, with its locality pair (and, with ``sibling_anchors``, its
    sibling questions) as anchors when the protocol says so."""
    anchors: tuple = ()
    if config.record_anchors:
        anchors += tuple(p for p in (case.loc, case.m_loc) if p is not None)
    if config.sibling_anchors:
        anchors += case.siblings
    if not anchors:
        return case.request
    return replace(case.request, anchors=tuple(case.request.anchors) + anchors)


def run_editor(name: str, editor: Editor, stream: Sequence[EditCase],
               refs: Mapping[ReferenceKey, M.ProbeOutputs], config: ProtocolConfig) -> EditorRun:
    """Apply ``stream`` to ``editor`` one edit at a time, scoring online after every edit and
    by retention at each checkpoint."""
    scorer = CaseScorer(editor, refs, config)
    run = EditorRun(name=name, config=editor.config_dict())
    checkpoints = set(config.checkpoints_for(len(stream)))
    device = _device_of(editor.vlm)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = tqdm(stream, desc=f"{name}", unit="edit", disable=not config.progress)
    for i, case in enumerate(bar):
        _sync(device)
        start = time.perf_counter()
        rejected = None
        try:
            result = editor.edit(anchored_request(case, config))
        except EditRejected as exc:
            result, rejected = None, str(exc)
            log.warning("%s rejected edit %d: %s", name, case.case_id, exc)
        _sync(device)
        wall = time.perf_counter() - start
        # The row records these fields of EditResult's one serialisation (its own wall time).
        done = result.to_dict() if result is not None else None
        row = {
            "edit_index": i,
            "edit_time_s": wall,
            "steps": done["steps"] if done else 0,
            "rehearsed": done["rehearsed"] if done else 0,
            "loss_before": done["loss_before"] if done else None,
            "loss_after": done["loss_after"] if done else None,
            "rejected": rejected,
            "state_bytes": editor.state_bytes(),
            "rss_bytes": resident_memory_bytes(),
            "peak_rss_bytes": peak_memory_bytes(),
        }
        if device.type == "cuda":
            row["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
        if done and done["active_groups"]:
            row["active_groups"] = done["active_groups"]
        if done and done["gates"]:  # ScopeEdit's evidence gate, per shared group
            row["gates"] = done["gates"]
        row.update(scorer.score(case))
        run.edits.append(row)
        if i + 1 in checkpoints:
            todo = latest_per_fact(stream[: i + 1])
            run.retention[i + 1] = [
                scorer.score(c) for c in tqdm(todo, desc=f"{name} retention@{i + 1}", leave=False,
                                              disable=not config.progress)
            ]
    bar.close()
    return run


def run_comparison(vlm: Any, stream: Sequence[EditCase], factories: Mapping[str, EditorFactory],
                   config: ProtocolConfig = ProtocolConfig(),
                   on_done: Callable[[EditorRun], None] | None = None) -> list[EditorRun]:
    """Run every editor on the same model, the same edits, in the same order.

    The base references are computed once, before the first editor is built. Each editor
    starts from the base model (checked), and the model is restored (and checked) after it.
    ``on_done`` is called with each finished run (to write partial results).
    """
    if not stream:
        raise ValueError("empty stream")
    refs = compute_references(vlm, stream, progress=config.progress)
    first = stream[0].request
    check_probes: dict[ReferenceKey, Probe] = {("", "edit", 0): Probe(first.prompt, first.target, first.image)}
    check_probes.update(list({k: p for c in stream[:2] for k, p in out_of_scope_keys(c)}.items())[:2])
    refs = dict(refs)
    logits, inputs = _teacher_forced(vlm, check_probes[("", "edit", 0)])
    refs[("", "edit", 0)] = M.probe_outputs(logits, inputs.target_positions)
    fwd_bwd = measure_fwd_bwd(vlm, stream)
    runs = []
    for name, factory in factories.items():
        restore_point = ModelRestorePoint(vlm.model)
        editor = None
        try:
            editor = factory(vlm)
            check_matches_base(vlm, refs, check_probes, f"editor {name!r} before its first edit")
            run = run_editor(name, editor, stream, refs, config)
            run.fwd_bwd_s = fwd_bwd
        finally:
            if editor is not None:
                editor.remove()  # its hooks too: the restore point puts back modules, not hooks
            restore_point.restore()
        check_matches_base(vlm, refs, check_probes,
                           f"model after editor {name!r} (an editor changed base weights in place: "
                           f"{restore_point.modified_in_place()[:5]})")
        runs.append(run)
        if on_done is not None:
            on_done(run)
    return runs
