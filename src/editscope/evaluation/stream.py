"""Streams with recursive re-edits: a stream longer than the data goes over it again and
re-edits each fact to a new value (see :func:`build_stream`)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

from editscope.evaluation.data import EditCase
from editscope.types import Probe


def build_stream(cases: Sequence[EditCase], n_edits: int, seed: int = 0) -> list[EditCase]:
    """The first ``n_edits`` edits of a stream over ``cases``.

    When ``n_edits`` exceeds the data, the stream goes over the data again in a seeded order
    and each later pass re-edits the same facts to new values: the new target is drawn from
    the targets of other records of the same group (the world's relation, or the whole
    file), never the fact's current or original value. Probes that expected the old target
    (rephrases, text transfer) expect the new one; portability answers no longer follow and
    are dropped; out-of-scope probes are kept, and so are the edit's scope examples (the
    request's ``also``/``never``: the same fact has the same scope).
    """
    if n_edits < 1:
        raise ValueError(f"n_edits must be >= 1, got {n_edits}")
    if not cases:
        raise ValueError("no cases to build a stream from")
    stream = [replace(c, case_id=i) for i, c in enumerate(cases[:n_edits])]
    pools: dict[str, list[str]] = {}
    for c in cases:
        pools.setdefault(c.group, [])
        if c.target not in pools[c.group]:
            pools[c.group].append(c.target)
    current = {c.fact_id: c for c in cases}
    rng = random.Random(seed)
    round_ = 0
    while len(stream) < n_edits:
        round_ += 1
        order = list(range(len(cases)))
        rng.shuffle(order)
        for j in order:
            if len(stream) >= n_edits:
                break
            previous = current[cases[j].fact_id]
            new_target = _new_value(previous, cases[j].target, pools[previous.group], rng)
            case = _re_edit(previous, new_target, case_id=len(stream), round_=round_)
            current[case.fact_id] = case
            stream.append(case)
    return stream


def _new_value(previous: EditCase, original: str, pool: list[str], rng: random.Random) -> str:
    banned = {previous.target, original, *(p.answer for p in previous.near_miss)}
    candidates = [v for v in pool if v not in banned]
    if candidates:
        return rng.choice(candidates)
    return f"{previous.target} {previous.round + 2}"  # a pool of one value: still a new answer


def _re_edit(previous: EditCase, target: str, case_id: int, round_: int) -> EditCase:
    def retarget(p: Probe | None) -> Probe | None:
        return None if p is None else replace(p, answer=target)

    return replace(
        previous,
        case_id=case_id,
        request=replace(previous.request, target=target),
        rephrase=retarget(previous.rephrase),
        image_rephrase=retarget(previous.image_rephrase),
        text_transfer=tuple(replace(p, answer=target) for p in previous.text_transfer),
        portability=(),
        round=round_,
        previous_target=previous.target,
    )


def latest_per_fact(stream: Sequence[EditCase]) -> list[EditCase]:
    """The latest case of every fact in ``stream``, in the order of their latest edit."""
    latest: dict[str, EditCase] = {}
    for case in stream:
        latest.pop(case.fact_id, None)
        latest[case.fact_id] = case
    return list(latest.values())
