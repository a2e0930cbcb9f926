"""The procedurally generated world: subjects with a visual identity, a name and made-up facts.

Everything is derived from one integer seed through :class:`random.Random`, so the same
:class:`WorldConfig` always yields the same :class:`World`. Subjects come in look-alike pairs:
the two members of a pair differ in exactly one visual attribute and in every fact.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Mapping

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross", "heart")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 190),
    "pink": (250, 130, 190),
    "cyan": (40, 210, 220),
}
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "ringed")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (125, 125, 125),
    "white": (245, 245, 245),
    "brown": (110, 70, 35),
}
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "pattern", "background")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "background": tuple(BACKGROUNDS),
}
FACTS: tuple[str, ...] = ("city", "language", "maker", "year")
WORLD_FILE = "world.json"  # beside a model trained on a world: its config, command and metrics

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr",
           "st", "th", "tr", "sh", "ch", "gl", "pl", "qu", "h", "j", "w", "y", "x")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "x", "k", "m", "nd", "rt", "sk")


@dataclass(frozen=True)
class WorldConfig:
    """How to generate a world. ``n_pairs`` look-alike pairs give ``2 * n_pairs`` subjects."""

    seed: int = 1234
    n_pairs: int = 120
    n_cities: int = 30
    n_languages: int = 16
    n_makers: int = 24
    n_years: int = 40

    def __post_init__(self) -> None:
        if self.n_pairs < 2:
            raise ValueError(f"WorldConfig.n_pairs must be >= 2, got {self.n_pairs}")
        for name in ("n_cities", "n_languages", "n_makers", "n_years"):
            if getattr(self, name) < 2:
                raise ValueError(f"WorldConfig.{name} must be >= 2 (look-alikes need different facts)")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> "WorldConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown WorldConfig keys: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Subject:
    """One thing of the world. ``look`` maps each attribute of :data:`ATTRIBUTES` to its value."""

    index: int
    name: str
    look: dict[str, str]
    facts: dict[str, str]
    lookalike: int
    differs_in: str


@dataclass(frozen=True)
class World:
    """A generated world: subjects, look-alike pairs and the value pool of each fact."""

    config: WorldConfig
    subjects: tuple[Subject, ...]
    value_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.subjects)

    def subject(self, index: int) -> Subject:
        return self.subjects[index]

    def by_name(self, name: str) -> Subject:
        for subject in self.subjects:
            if subject.name == name:
                return subject
        raise KeyError(f"no subject named {name!r} in the world of seed {self.config.seed}")

    def pairs(self) -> list[tuple[int, int]]:
        """The look-alike pairs as ``(i, j)`` with ``i < j``, in order."""
        return [(s.index, s.lookalike) for s in self.subjects if s.index < s.lookalike]


def make_name(rng: random.Random, syllables: int) -> str:
    """A pronounceable made-up word of ``syllables`` syllables, capitalised."""
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    parts[-1] += rng.choice(_CODAS)
    return "".join(parts).capitalize()


def _unique(rng: random.Random, count: int, make, taken: set[str]) -> list[str]:
    values: list[str] = []
    while len(values) < count:
        value = make(rng)
        if value not in taken:
            taken.add(value)
            values.append(value)
    return values


def _value_pools(rng: random.Random, config: WorldConfig, taken: set[str]) -> dict[str, tuple[str, ...]]:
    def city(r: random.Random) -> str:
        word = make_name(r, r.choice((2, 3)))
        if r.random() < 0.3:
            return f"{r.choice(('Port', 'New', 'Upper', 'Lake', 'Fort'))} {word}"
        return word

    def language(r: random.Random) -> str:
        return make_name(r, 2) + r.choice(("ish", "ese", "ic", "ian", "i"))

    def maker(r: random.Random) -> str:
        return f"{make_name(r, 2)} {r.choice(('Works', 'Forge', 'Guild', 'Labs', 'and Sons'))}"

    years = sorted(rng.sample(range(1620, 2000), config.n_years))
    return {
        "city": tuple(_unique(rng, config.n_cities, city, taken)),
        "language": tuple(_unique(rng, config.n_languages, language, taken)),
        "maker": tuple(_unique(rng, config.n_makers, maker, taken)),
        "year": tuple(str(y) for y in years),
    }


def _looks(rng: random.Random, n_pairs: int) -> list[tuple[dict[str, str], dict[str, str], str]]:
    """``n_pairs`` look-alike pairs of distinct looks, each pair differing in one attribute."""
    used: set[tuple[str, ...]] = set()
    pairs = []
    while len(pairs) < n_pairs:
        first = {a: rng.choice(ATTRIBUTE_VALUES[a]) for a in ATTRIBUTES}
        attribute = ATTRIBUTES[len(pairs) % len(ATTRIBUTES)]
        second = dict(first)
        second[attribute] = rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != first[attribute]])
        keys = (tuple(first.values()), tuple(second.values()))
        if keys[0] in used or keys[1] in used:
            continue
        used.update(keys)
        pairs.append((first, second, attribute))
    return pairs


def build_world(config: WorldConfig | None = None) -> World:
    """Generate the world of ``config`` (the default config when None). Deterministic."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    taken: set[str] = set()
    pools = _value_pools(rng, config, taken)

    def name(r: random.Random) -> str:
        if r.random() < 0.3:
            return f"{make_name(r, r.choice((1, 2)))} {make_name(r, 2)}"
        return make_name(r, r.choice((2, 3)))

    names = _unique(rng, 2 * config.n_pairs, name, taken)
    subjects: list[Subject] = []
    for p, (look_a, look_b, attribute) in enumerate(_looks(rng, config.n_pairs)):
        facts_a = {f: rng.choice(pools[f]) for f in FACTS}
        facts_b = {f: rng.choice([v for v in pools[f] if v != facts_a[f]]) for f in FACTS}
        i, j = 2 * p, 2 * p + 1
        subjects.append(Subject(i, names[i], look_a, facts_a, j, attribute))
        subjects.append(Subject(j, names[j], look_b, facts_b, i, attribute))
    return World(config=config, subjects=tuple(subjects), value_pools=pools)


def split_subjects(world: World, seed: int | None = None) -> dict[str, tuple[int, ...]]:
    """Disjoint subject splits by look-alike pair: ``dev`` (25%), ``test`` (50%) and ``locality``
    (25%, never edited: they supply the locality probes of both splits)."""
    rng = random.Random(world.config.seed * 7919 + 17 if seed is None else seed)
    pairs = world.pairs()
    rng.shuffle(pairs)
    n = len(pairs)
    cuts = {"dev": pairs[: n // 4], "test": pairs[n // 4: n // 4 + n // 2], "locality": pairs[n // 4 + n // 2:]}
    return {k: tuple(sorted(i for pair in v for i in pair)) for k, v in cuts.items()}


def neighbours(world: World, index: int, split: str) -> list[tuple[int, str]]:
    """The subjects of ``split`` or of the locality split whose look differs from subject
    ``index``'s in exactly one attribute, other than its look-alike, each with that attribute:
    pictures an edit of ``index`` must leave alone that no edit record probes."""
    splits = split_subjects(world)
    subject = world.subject(index)
    found = []
    for j in sorted(set(splits[split]) | set(splits["locality"])):
        other = world.subject(j)
        differs = [a for a in ATTRIBUTES if subject.look[a] != other.look[a]]
        if j != subject.lookalike and len(differs) == 1:
            found.append((j, differs[0]))
    return found
