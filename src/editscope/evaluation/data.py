"""Edit benchmarks read from disk and normalised into a stream of ``EditCase``.

Formats (see docs/evaluation.md): MMEdit E-VQA and E-IC, VLKEB (MMEdit keys plus ``port_new``
portability questions) and the built-in world's records (MMEdit keys plus text-only transfer,
near-miss and other-fact probes). Every problem in a file is reported with the record index,
the field and the file path. Image paths are resolved under an image root and checked once,
at load time.

A stream longer than the data re-edits facts that were already edited, each time to a new
value (recursive edits): the in-scope probes of a re-edit ask for the new value, and the
harness scores retention of a fact against its latest value only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from editscope.evaluation.examples import check_scope_examples, read_scope_examples
from editscope.types import EditRequest, Probe, ScopeExample

VQA_TEMPLATE = "Question: {} Short answer:"
RAW_TEMPLATE = "{}"


class DataError(ValueError):
    """A benchmark file or record is malformed; the message names record, field and path."""


@dataclass(frozen=True)
class EditCase:
    """One edit of a stream with every probe used to score it.

    ``request`` is the edit itself (reliability is scored on it). ``rephrase`` (T-Gen) and
    ``image_rephrase`` (M-Gen) and ``text_transfer`` (text-only questions about the edited
    subject) are in scope and expect the edit target. ``loc`` (T-Loc), ``m_loc`` (M-Loc),
    ``near_miss`` (look-alike subjects) and ``other_fact`` (another fact of the same subject)
    are out of scope: they are scored against the unedited model's own outputs.
    ``portability`` questions expect answers that follow from the edit. ``siblings`` are
    unscored questions the edit must leave alone (other facts of the subject on the edit
    image), for a protocol that passes them to the editor as anchors. The request's scope
    examples (``also``/``never``, see :mod:`editscope.evaluation.examples`) are never scored;
    they are only filled when the data is loaded with ``scope_examples`` > 0.
    """

    case_id: int
    fact_id: str
    record_index: int
    request: EditRequest
    rephrase: Probe | None = None
    image_rephrase: Probe | None = None
    loc: Probe | None = None
    m_loc: Probe | None = None
    portability: tuple[Probe, ...] = ()
    text_transfer: tuple[Probe, ...] = ()
    near_miss: tuple[Probe, ...] = ()
    other_fact: tuple[Probe, ...] = ()
    siblings: tuple[Probe, ...] = ()
    round: int = 0
    previous_target: str | None = None
    group: str = ""

    @property
    def target(self) -> str:
        return self.request.target

    @property
    def also(self) -> tuple[ScopeExample, ...]:
        """The edit's positive scope examples (empty without ``--scope-examples``)."""
        return self.request.also

    @property
    def never(self) -> tuple[ScopeExample, ...]:
        """The edit's negative scope examples (empty without ``--scope-examples``)."""
        return self.request.never

    def out_of_scope_probes(self) -> dict[str, tuple[Probe, ...]]:
        """Out-of-scope probes by kind (kinds without probes are left out)."""
        kinds = {
            "loc": (self.loc,) if self.loc is not None else (),
            "m_loc": (self.m_loc,) if self.m_loc is not None else (),
            "near_miss": self.near_miss,
            "other_fact": self.other_fact,
        }
        return {k: v for k, v in kinds.items() if v}


# -- reading and validating records --------------------------------------------------------


class _RecordReader:
    """Typed access to one record's fields with errors that name record, field and file."""

    def __init__(self, record: Any, index: int, path: Path, image_root: Path | None,
                 check_images: bool) -> None:
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {index} is a {type(record).__name__}, expected an object")
        self.record = record
        self.index = index
        self.path = path
        self.image_root = image_root
        self.check_images = check_images

    def error(self, key: str, message: str) -> DataError:
        return DataError(f"{self.path}: record {self.index}, field {key!r}: {message}")

    def has(self, key: str) -> bool:
        value = self.record.get(key)
        return value is not None and value != "" and value != []

    def text(self, key: str, required: bool = True) -> str | None:
        if key not in self.record or self.record[key] is None:
            if required:
                raise self.error(key, "missing")
            return None
        value = self.record[key]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = value[0]  # some datasets store several acceptable answers
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}")
        if not value.strip():
            if required:
                raise self.error(key, "empty")
            return None
        return value.strip()

    def text_list(self, key: str) -> list[str]:
        """A list of non-empty strings (a single string counts as a list of one)."""
        value = self.record.get(key)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of strings, got {type(value).__name__}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(key, f"item {i} is not a non-empty string")
        return [v.strip() for v in value]

    def image(self, key: str, required: bool = True) -> Path | None:
        name = self.text(key, required=required)
        if name is None:
            return None
        return self.resolve_image(key, name)

    def resolve_image(self, key: str, name: str) -> Path:
        """The image ``name`` (of field ``key``) under the image root, checked to exist (and,
        with ``check_images``, to be readable)."""
        path = Path(name)
        if not path.is_absolute():
            if self.image_root is None:
                raise self.error(key, f"relative image path {name!r} but no image root was given")
            path = self.image_root / path
        if not path.is_file():
            raise self.error(key, f"image not found: {path}")
        if self.check_images:
            try:
                with Image.open(path) as img:
                    img.verify()
            except Exception as exc:  # PIL raises many types for unreadable files
                raise self.error(key, f"unreadable image {path}: {exc}") from exc
        return path


def read_json_records(path: str | Path) -> list[Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"benchmark file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no records")
    return data


def _mmedit_case(r: _RecordReader, source: str, prompt_template: str, question_template: str) -> EditCase:
    """The MMEdit keys shared by every format. ``prompt_template`` wraps ``src`` and
    ``rephrase`` (raw for captions); ``question_template`` wraps ``m_loc_q``."""
    image = r.image("image")
    target = r.text("alt")
    try:
        request = EditRequest(prompt=prompt_template.format(r.text("src")), target=target, image=image)
    except (TypeError, ValueError) as exc:
        raise r.error("src", str(exc)) from exc
    rephrase = None
    if r.has("rephrase"):
        rephrase = Probe(prompt_template.format(r.text("rephrase")), target, image)
    image_rephrase = None
    if r.has("image_rephrase"):
        image_rephrase = Probe(request.prompt, target, r.image("image_rephrase"))
    loc = None
    if r.has("loc") or r.has("loc_ans"):
        loc = Probe(r.text("loc"), r.text("loc_ans"), None)
    m_loc = None
    if r.has("m_loc") or r.has("m_loc_q") or r.has("m_loc_a"):
        m_loc = Probe(question_template.format(r.text("m_loc_q")), r.text("m_loc_a"), r.image("m_loc"))
    return EditCase(
        case_id=r.index, fact_id=f"{source}:{r.index}", record_index=r.index, request=request,
        rephrase=rephrase, image_rephrase=image_rephrase, loc=loc, m_loc=m_loc,
    )


def _portability(r: _RecordReader, image: Path | None, template: str) -> tuple[Probe, ...]:
    raw = r.record.get("port_new")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise r.error("port_new", f"expected a list, got {type(raw).__name__}")
    probes = []
    for j, item in enumerate(raw):
        key = f"port_new[{j}]"
        qa = item.get("Q&A") if isinstance(item, dict) else None
        if not isinstance(qa, dict):
            raise r.error(key, "expected an object with a 'Q&A' object")
        question, answer = qa.get("Question"), qa.get("Answer")
        if isinstance(answer, list) and answer:
            answer = answer[0]
        for name, value in (("Question", question), ("Answer", answer)):
            if not isinstance(value, str) or not value.strip():
                raise r.error(f"{key}.Q&A.{name}", "missing or empty")
        probes.append(Probe(template.format(question.strip()), answer.strip(), image))
    return tuple(probes)


# The world's extra keys (see editscope.world.edits): text-only transfer, near-miss and
# other-fact probes, the fact (pool of values for re-edits) and a stable record id.
WORLD_TEXT_TRANSFER_Q = "text_only_q"
WORLD_NEAR_MISS = ("near_miss_image", "near_miss_q", "near_miss_a")
WORLD_OTHER_FACT = ("other_fact_q", "other_fact_a")
WORLD_SIBLINGS = ("sibling_q", "sibling_a")
WORLD_GROUP = "fact"
WORLD_ID = "record_id"


def _world_extras(r: _RecordReader, case: EditCase, template: str, source: str) -> EditCase:
    text_transfer: tuple[Probe, ...] = ()
    if r.has(WORLD_TEXT_TRANSFER_Q):
        text_transfer = (Probe(template.format(r.text(WORLD_TEXT_TRANSFER_Q)), case.target, None),)
    near_miss: tuple[Probe, ...] = ()
    if r.has(WORLD_NEAR_MISS[0]):
        image_key, question_key, answer_key = WORLD_NEAR_MISS
        question = template.format(r.text(question_key)) if r.has(question_key) else case.request.prompt
        near_miss = (Probe(question, r.text(answer_key), r.image(image_key)),)
    other_fact: tuple[Probe, ...] = ()
    if r.has(WORLD_OTHER_FACT[0]):
        question_key, answer_key = WORLD_OTHER_FACT
        other_fact = (Probe(template.format(r.text(question_key)), r.text(answer_key), case.request.image),)
    siblings: tuple[Probe, ...] = ()
    if r.has(WORLD_SIBLINGS[0]):
        questions, answers = (r.text_list(key) for key in WORLD_SIBLINGS)
        if len(questions) != len(answers):
            raise r.error(WORLD_SIBLINGS[1], f"has {len(answers)} answers for {len(questions)} questions")
        siblings = tuple(Probe(template.format(q), a, case.request.image) for q, a in zip(questions, answers))
    group = r.text(WORLD_GROUP, required=False) or ""
    fact_id = f"{source}:{r.text(WORLD_ID)}" if r.has(WORLD_ID) else case.fact_id
    return replace(case, text_transfer=text_transfer, near_miss=near_miss, other_fact=other_fact,
                   siblings=siblings, group=group, fact_id=fact_id)


def load_records(
    fmt: str,
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    check_images: bool = True,
    prompt_template: str | None = None,
    scope_examples: int = 0,
) -> list[EditCase]:
    """Read one benchmark file as a list of cases (one per record, in file order).

    ``fmt`` is ``"mmedit-vqa"``, ``"mmedit-ic"``, ``"vlkeb"`` or ``"world"``. The image root
    defaults to the file's directory. ``prompt_template`` overrides the question wrapping
    (default ``Question: {} Short answer:`` for E-VQA and VLKEB, raw ``src`` for E-IC, and
    raw questions for the world, whose model is trained on bare questions).
    ``scope_examples`` > 0 gives each edit request the first that many ``scope_also`` and
    ``scope_never`` examples of its record (every record must have them); 0 ignores them.
    """
    check_scope_examples(scope_examples)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    templates: dict[str, tuple[str, str]] = {
        "mmedit-vqa": (VQA_TEMPLATE, VQA_TEMPLATE),
        "mmedit-ic": (RAW_TEMPLATE, VQA_TEMPLATE),
        "vlkeb": (VQA_TEMPLATE, VQA_TEMPLATE),
        "world": (RAW_TEMPLATE, RAW_TEMPLATE),
    }
    if fmt not in templates:
        raise DataError(f"unknown benchmark format {fmt!r}; expected one of {sorted(templates)}")
    prompt_t, question_t = templates[fmt]
    if prompt_template is not None:
        prompt_t = question_t = prompt_template
    if "{}" not in prompt_t:
        raise DataError(f"prompt template {prompt_t!r} has no '{{}}' placeholder")
    source = path.stem
    cases = []
    for index, record in enumerate(read_json_records(path)):
        r = _RecordReader(record, index, path, root, check_images)
        case = _mmedit_case(r, source, prompt_t, question_t)
        if fmt == "vlkeb":
            case = replace(case, portability=_portability(r, case.request.image, question_t))
        elif fmt == "world":
            case = _world_extras(r, case, question_t, source)
        if scope_examples:
            examples = read_scope_examples(r, scope_examples, case.request.prompt, prompt_t)
            case = replace(case, request=replace(case.request, **examples))
        cases.append(case)
    return cases


# -- data specifications of the command line -----------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value. ``split`` is set for the built-in world's generated splits
    (``world:dev``, ``world:test``); otherwise ``location`` is a records file."""

    fmt: str
    location: str
    split: str | None = None


WORLD_SPLITS = ("dev", "test")


def parse_data_spec(spec: str) -> DataSpec:
    """``world:dev|test`` (generated), ``world:FILE`` (world records on disk),
    ``mmedit:FILE`` (E-IC when the file name says caption, else E-VQA), ``mmedit-vqa:FILE``,
    ``mmedit-ic:FILE`` or ``vlkeb:FILE``."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise DataError(f"--data {spec!r}: expected KIND:VALUE, e.g. world:test or mmedit:FILE")
    kind = kind.lower()
    if kind == "world":
        if rest in WORLD_SPLITS:
            return DataSpec("world", rest, split=rest)
        if not rest.endswith(".json"):
            raise DataError(f"--data {spec!r}: the world has splits {WORLD_SPLITS} (or give a .json records file)")
        return DataSpec("world", rest)
    if kind == "mmedit":
        name = Path(rest).name.lower()
        fmt = "mmedit-ic" if ("caption" in name or "e-ic" in name) else "mmedit-vqa"
        return DataSpec(fmt, rest)
    if kind in ("mmedit-vqa", "mmedit-ic", "vlkeb"):
        return DataSpec(kind, rest)
    raise DataError(f"--data {spec!r}: unknown kind {kind!r}; expected world, mmedit, "
                    "mmedit-vqa, mmedit-ic or vlkeb")
