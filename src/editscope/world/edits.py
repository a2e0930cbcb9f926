"""Edit benchmarks on the world, in the MMEdit (E-VQA) record format plus scope probes.

Each record changes one fact of one subject to a new value. Besides the MMEdit keys
(``src``, ``pred``, ``alt``, ``rephrase``, ``image``, ``image_rephrase``, ``loc``, ``loc_ans``,
``m_loc``, ``m_loc_q``, ``m_loc_a``) a record carries:

- ``text_only_q`` / ``text_only_a``: the edited fact asked by name without an image; the answer
  is the new target (cross-modal transfer);
- ``near_miss_image`` / ``near_miss_q`` / ``near_miss_a``: the edit question on the look-alike
  subject's image, with that subject's unchanged answer (near-miss leakage);
- ``other_fact_q`` / ``other_fact_a``: another fact of the edited subject, asked on the edit
  image, which must not change;
- ``sibling_q`` / ``sibling_a``: the subject's remaining facts (neither the edited one nor the
  other-fact probe's), asked on the edit image with each fact's first training template, and
  their unchanged answers: questions an edit must leave alone that are not scored, for editors
  that anchor on them (``editscope bench --sibling-anchors``);
- ``record_id``, ``subject``, ``subject_index``, ``fact``, ``lookalike``, ``loc_subject``,
  ``m_loc_subject``: bookkeeping (subject names);
- only when scope examples are asked for (``editscope bench --scope-examples N``, N > 0):
  ``scope_also`` (N more held-out renders of the edited subject) and ``scope_never`` (N more
  held-out renders of its look-alike), lists of image paths asked with the edit's question.
  They are drawn from render indices no record probe and no world evaluation uses
  (:func:`example_render`), so no scored probe is ever an example; with N = 0 the records are
  exactly as without the option.

Questions are raw text; the built-in model is prompted with
:func:`editscope.world.templates.user_prompt`. Within one split every subject is edited at most
once and the two members of a look-alike pair are edited on different facts, so the near-miss
and other-fact answers stay valid over a whole stream of edits. The ``dev`` and ``test`` splits
use disjoint subjects; locality probes come from a third group of subjects that is never edited.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from editscope.world.render import fixed_render
from editscope.world.templates import fact_question, fact_templates
from editscope.world.world import FACTS, Subject, World, make_name, split_subjects

logger = logging.getLogger(__name__)
EDIT_SPLITS: tuple[str, ...] = ("dev", "test")
IMAGE_DIR = "images"
# Held-out render indices used by the records (never seen in training).
EDIT_RENDER, REPHRASE_RENDER, LOCALITY_RENDER = 0, 1, 2
# Scope examples use held-out renders from this index up: beyond the records' renders above and
# beyond the held-out renders the world's own evaluation scores (evaluate.HELDOUT_RENDERS = 4).
EXAMPLE_RENDER_START = 4
SCOPE_ALSO, SCOPE_NEVER = "scope_also", "scope_never"
INVENTED_SHARE = 0.3


def example_render(kind: str, k: int) -> int:
    """The held-out render index of the ``k``-th scope example of ``kind`` (``"also"``: a render
    of the edited subject; ``"never"``: a render of its look-alike). The two kinds interleave,
    so that a subject's ``also`` renders (its own record) and its ``never`` renders (the record
    of its look-alike, edited on another fact) are different images."""
    if kind not in ("also", "never") or k < 0:
        raise ValueError(f"no scope example {kind!r} #{k}")
    return EXAMPLE_RENDER_START + 2 * k + (kind == "never")


def new_target(world: World, subject: Subject, fact: str, rng: random.Random) -> str:
    """A plausible new value for ``fact`` of ``subject``: another subject's value from the same
    pool, or (with probability :data:`INVENTED_SHARE`) a made-up value the world never had.
    Never the current value nor the look-alike's value."""
    forbidden = {subject.facts[fact], world.subject(subject.lookalike).facts[fact]}
    if rng.random() >= INVENTED_SHARE:
        return rng.choice([v for v in world.value_pools[fact] if v not in forbidden])
    known = {v for pool in world.value_pools.values() for v in pool} | {s.name for s in world.subjects}
    while True:
        if fact == "year":
            value = str(rng.randrange(1500, 2100))
        elif fact == "maker":
            value = f"{make_name(rng, 2)} {rng.choice(('Works', 'Forge', 'Guild', 'Labs'))}"
        elif fact == "language":
            value = make_name(rng, 2) + rng.choice(("ish", "ese", "ic"))
        else:
            value = make_name(rng, rng.choice((2, 3)))
        if value not in known and value not in forbidden:
            return value


def _visual(subject: Subject, fact: str, template: str) -> str:
    return fact_question(subject, fact, template, image=True).text


def make_records(world: World, split: str, n: int | None = None, scope_examples: int = 0) -> list[dict[str, Any]]:
    """The records of ``split`` (``"dev"`` or ``"test"``), deterministic given the world seed.

    ``n`` caps the number of records (default: one per subject of the split). Image fields hold
    paths relative to the output directory (see :func:`record_images`). ``scope_examples`` > 0
    adds that many ``scope_also`` and ``scope_never`` images to each record; it draws nothing
    from the records' random stream, so every other field is the same for every value.
    """
    if isinstance(scope_examples, bool) or not isinstance(scope_examples, int) or scope_examples < 0:
        raise ValueError(f"scope_examples must be an integer >= 0, got {scope_examples!r}")
    if split not in EDIT_SPLITS:
        raise ValueError(f"split must be one of {EDIT_SPLITS}, got {split!r}")
    groups = split_subjects(world)
    members = groups[split]
    if n is not None and not 1 <= n <= len(members):
        raise ValueError(f"--n must be between 1 and {len(members)} (one edit per {split} subject), got {n}")
    rng = random.Random(f"edits/{world.config.seed}/{split}")
    facts: dict[int, str] = {}
    for i in members:
        j = world.subject(i).lookalike
        if i < j:
            facts[i] = rng.choice(FACTS)
            facts[j] = rng.choice([f for f in FACTS if f != facts[i]])
    order = list(members)
    rng.shuffle(order)
    locality = list(groups["locality"])
    records = []
    for number, index in enumerate(order[: n or len(order)]):
        records.append(_record(world, split, number, world.subject(index), facts[index], locality, rng))
    if scope_examples:
        for record in records:
            for key, kind in ((SCOPE_ALSO, "also"), (SCOPE_NEVER, "never")):
                record[key] = [f"{IMAGE_DIR}/{record['record_id']}-{kind}{k}.png" for k in range(scope_examples)]
    return records


def _record(world: World, split: str, number: int, subject: Subject, fact: str, locality: list[int],
            rng: random.Random) -> dict[str, Any]:
    record_id = f"{split}-{number:04d}"
    lookalike = world.subject(subject.lookalike)
    alt = new_target(world, subject, fact, rng)
    src = _visual(subject, fact, rng.choice(fact_templates(fact, "train")))
    loc_subject, m_loc_subject = (world.subject(i) for i in rng.sample(locality, 2))
    loc_fact, m_loc_fact = rng.choice(FACTS), rng.choice(FACTS)
    other_fact = rng.choice([f for f in FACTS if f != fact])
    siblings = [f for f in FACTS if f not in (fact, other_fact)]  # no draw: the records stay as they were
    return {
        "record_id": record_id,
        "subject": subject.name,
        "subject_index": subject.index,
        "fact": fact,
        "lookalike": lookalike.name,
        "src": src,
        "pred": subject.facts[fact],
        "alt": alt,
        "rephrase": _visual(subject, fact, rng.choice(fact_templates(fact, "heldout"))),
        "image": f"{IMAGE_DIR}/{record_id}-edit.png",
        "image_rephrase": f"{IMAGE_DIR}/{record_id}-rephrase.png",
        "loc": fact_question(loc_subject, loc_fact, rng.choice(fact_templates(loc_fact, "train")), False).text,
        "loc_ans": loc_subject.facts[loc_fact],
        "m_loc": f"{IMAGE_DIR}/{record_id}-mloc.png",
        "m_loc_q": _visual(m_loc_subject, m_loc_fact, rng.choice(fact_templates(m_loc_fact, "train"))),
        "m_loc_a": m_loc_subject.facts[m_loc_fact],
        "text_only_q": fact_question(subject, fact, rng.choice(fact_templates(fact, "train")), False).text,
        "text_only_a": alt,
        "near_miss_image": f"{IMAGE_DIR}/{record_id}-nearmiss.png",
        "near_miss_q": src,
        "near_miss_a": lookalike.facts[fact],
        "other_fact_q": _visual(subject, other_fact, rng.choice(fact_templates(other_fact, "train"))),
        "other_fact_a": subject.facts[other_fact],
        "sibling_q": [_visual(subject, f, fact_templates(f, "train")[0]) for f in siblings],
        "sibling_a": [subject.facts[f] for f in siblings],
        "loc_subject": loc_subject.name,
        "m_loc_subject": m_loc_subject.name,
    }


def record_images(world: World, record: dict[str, Any]) -> dict[str, Any]:
    """The images of ``record`` keyed by their relative path."""
    subject = world.subject(record["subject_index"])
    seed = world.config.seed
    lookalike = world.subject(subject.lookalike)
    images = {
        record["image"]: fixed_render(subject, "heldout", EDIT_RENDER, seed),
        record["image_rephrase"]: fixed_render(subject, "heldout", REPHRASE_RENDER, seed),
        record["near_miss_image"]: fixed_render(lookalike, "heldout", EDIT_RENDER, seed),
        record["m_loc"]: fixed_render(world.by_name(record["m_loc_subject"]), "heldout", LOCALITY_RENDER, seed),
    }
    for key, kind, drawn in ((SCOPE_ALSO, "also", subject), (SCOPE_NEVER, "never", lookalike)):
        for k, path in enumerate(record.get(key, ())):
            images[path] = fixed_render(drawn, "heldout", example_render(kind, k), seed)
    return images


def write_edits(world: World, split: str, out: Path, n: int | None = None, scope_examples: int = 0) -> Path:
    """Write ``out/{split}.json`` and its images under ``out/images``; return the JSON path.
    ``scope_examples``: see :func:`make_records`."""
    records = make_records(world, split, n, scope_examples)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for record in records:
        for path, image in record_images(world, record).items():
            image.save(out / path)
    path = out / f"{split}.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    logger.info("wrote %d %s records to %s", len(records), split, path)
    return path
