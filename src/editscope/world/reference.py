"""A reference set drawn from the world's training distribution.

An editor can fold the input statistics of a reference set into its preconditioners before the
first edit (``RecursiveEditor.fold_reference``), the way MEMIT estimates its key covariance
from the pre-training corpus. For a world model the pre-training corpus is the world itself:
this module samples questions the way training did (fact questions on seen renders, attribute
questions, text-only fact questions, training templates only) over all subjects. It never uses
the held-out renders or templates of the edit records, and never an edit target.
"""

from __future__ import annotations

import random

from editscope.types import Probe
from editscope.world.evaluate import SEEN_RENDERS
from editscope.world.render import fixed_render
from editscope.world.templates import ATTRIBUTE_TEMPLATES, attribute_question, fact_question, fact_templates
from editscope.world.world import ATTRIBUTES, FACTS, World

# Shares of the three kinds of training question in a reference set.
VISUAL_SHARE, ATTRIBUTE_SHARE = 0.5, 0.25


def reference_probes(world: World, n: int = 256, seed: int = 0) -> list[Probe]:
    """``n`` training-distribution probes (raw questions with their current answers),
    deterministic given ``seed`` and the world."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the reference set size must be a positive integer, got {n!r}")
    rng = random.Random(f"reference/{world.config.seed}/{seed}")
    images: dict[tuple[int, int], object] = {}

    def seen(index: int):
        key = (index, rng.randrange(SEEN_RENDERS))
        if key not in images:
            images[key] = fixed_render(world.subject(index), "seen", key[1], world.config.seed)
        return images[key]

    probes = []
    for _ in range(n):
        subject = rng.choice(world.subjects)
        kind = rng.random()
        if kind < VISUAL_SHARE:
            fact = rng.choice(FACTS)
            q = fact_question(subject, fact, rng.choice(fact_templates(fact, "train")), image=True)
            probes.append(Probe(q.text, q.answer, seen(subject.index)))
        elif kind < VISUAL_SHARE + ATTRIBUTE_SHARE:
            attribute = rng.choice(ATTRIBUTES)
            q = attribute_question(subject, attribute, rng.choice(ATTRIBUTE_TEMPLATES[attribute]["train"]))
            probes.append(Probe(q.text, q.answer, seen(subject.index)))
        else:
            fact = rng.choice(FACTS)
            q = fact_question(subject, fact, rng.choice(fact_templates(fact, "train")), image=False)
            probes.append(Probe(q.text, q.answer, None))
    return probes
