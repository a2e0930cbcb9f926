"""Question templates and the prompt format of the built-in model.

Fact templates hold ``{s}``: ``"this"`` for a visual question (asked with the subject's image),
the subject's name for a text-only question. Each fact has training templates and held-out
paraphrases that are never trained on. Visual attribute questions ("What shape is this?") are
asked with an image only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from editscope.world.world import ATTRIBUTES, FACTS, Subject

TemplateSplit = Literal["train", "heldout"]
VISUAL_SUBJECT = "this"

FACT_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "city": {
        "train": ("What city does {s} come from?", "Which city is {s} from?",
                  "Name the home city of {s}.", "In which city was {s} found?"),
        "heldout": ("What is the home city of {s}?", "Tell me the city that {s} comes from."),
    },
    "language": {
        "train": ("What language is spoken where {s} comes from?", "Which language goes with {s}?",
                  "What language do the people of {s} speak?", "Name the language of {s}."),
        "heldout": ("Which language is {s} associated with?", "Tell me the language of {s}."),
    },
    "maker": {
        "train": ("Who made {s}?", "Which maker built {s}?", "Name the maker of {s}.",
                  "Who is the maker of {s}?"),
        "heldout": ("Which maker produced {s}?", "Tell me who made {s}."),
    },
    "year": {
        "train": ("In what year was {s} made?", "What year was {s} made?",
                  "When was {s} made? Give the year.", "Which year did {s} first appear?"),
        "heldout": ("In which year was {s} created?", "Tell me the year {s} was made."),
    },
}

ATTRIBUTE_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"train": ("What shape is this?", "Which shape is shown?"),
              "heldout": ("What is the shape of this?",)},
    "colour": {"train": ("What colour is this?", "What colour is the shape?"),
               "heldout": ("Which colour is the shape?",)},
    "pattern": {"train": ("What pattern does this have?", "What pattern is on the shape?"),
                "heldout": ("Which pattern is shown?",)},
    "background": {"train": ("What colour is the background?", "Which background colour is shown?"),
                   "heldout": ("What is the background colour?",)},
}


@dataclass(frozen=True)
class Question:
    """One question about a subject. ``image`` is True when it is asked with the subject's image.

    ``kind`` is ``"fact"`` or ``"attribute"``; ``key`` is the fact or attribute asked about.
    """

    text: str
    answer: str
    image: bool
    kind: str
    key: str
    subject: int


def user_prompt(question: str, image: bool) -> str:
    """The LLaVA-1.5 prompt for ``question``: ``"USER: <image>\\n{q} ASSISTANT:"`` with an image,
    ``"USER: {q} ASSISTANT:"`` without."""
    return f"USER: <image>\n{question} ASSISTANT:" if image else f"USER: {question} ASSISTANT:"


def answer_text(answer: str) -> str:
    """How an answer follows the prompt (before the end-of-sequence token): a leading space."""
    return f" {answer}"


def fact_templates(fact: str, split: TemplateSplit) -> tuple[str, ...]:
    if fact not in FACT_TEMPLATES:
        raise KeyError(f"unknown fact {fact!r}; facts are {FACTS}")
    return FACT_TEMPLATES[fact][split]


def fact_question(subject: Subject, fact: str, template: str, image: bool) -> Question:
    """Ask ``fact`` of ``subject`` with ``template``: about the image, or by name when ``image``
    is False."""
    text = template.format(s=VISUAL_SUBJECT if image else subject.name)
    return Question(text, subject.facts[fact], image, "fact", fact, subject.index)


def attribute_question(subject: Subject, attribute: str, template: str) -> Question:
    if attribute not in ATTRIBUTES:
        raise KeyError(f"unknown attribute {attribute!r}; attributes are {ATTRIBUTES}")
    return Question(template, subject.look[attribute], True, "attribute", attribute, subject.index)


def all_questions(subject: Subject, split: TemplateSplit) -> list[Question]:
    """Every fact question (visual and text-only) and attribute question of ``split``."""
    questions = []
    for fact in FACTS:
        for template in fact_templates(fact, split):
            questions.append(fact_question(subject, fact, template, image=True))
            questions.append(fact_question(subject, fact, template, image=False))
    for attribute in ATTRIBUTES:
        for template in ATTRIBUTE_TEMPLATES[attribute][split]:
            questions.append(attribute_question(subject, attribute, template))
    return questions
