"""The protocol on a fake model (no model files): references once, online and retention rows,
re-edits scored against the latest value, scope classes, and the model put back between
editors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from editscope.editors.base import Editor
from editscope.evaluation.data import EditCase
from editscope.evaluation.stream import build_stream
from editscope.evaluation.protocol import ProtocolConfig, anchored_request, run_comparison
from editscope.types import EditRequest, EditResult, ModelInputs, Probe

V = 300
IMAGE_TOKEN = 299
EOS = 0


def _subject(image: str | None) -> int:
    return 0 if image is None else 1 + int(image.split("/")[0][1:])  # "s3/a" -> 4


class Memory(nn.Module):
    """What a fake editor wrote: key -> target token ids."""

    def __init__(self, facts: dict[tuple, tuple[int, ...]] | None = None) -> None:
        super().__init__()
        self.facts = dict(facts or {})


class FakeLM(nn.Module):
    """Predicts ``id + 1`` everywhere, except where the memory holds the prompt's key."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.memory = Memory()
        self.forward_calls = 0

    def forward(self, input_ids: torch.Tensor, n_prompt: torch.Tensor, keys: list[tuple]) -> torch.Tensor:
        self.forward_calls += 1
        ids = input_ids[0]
        logits = torch.zeros(len(ids), V) + self.dummy
        logits[torch.arange(len(ids)), (ids + 1) % V] = 5.0
        for key in keys:
            if key in self.memory.facts:
                start = int(n_prompt) - 1
                target = self.memory.facts[key]
                for j, token in enumerate((*target, EOS)):
                    if start + j < len(ids):
                        logits[start + j, token] = 10.0
                break
        return logits[None]


class FakeVLM:
    def __init__(self) -> None:
        self.model = FakeLM()
        self.device = torch.device("cpu")

    @staticmethod
    def keys(image: str | None, prompt: str) -> list[tuple]:
        return [("exact", image, prompt), ("subject", _subject(image)), ("all",)]

    def encode(self, image: Any, prompt: str, target: str | None = None) -> ModelInputs:
        prompt_ids = ([IMAGE_TOKEN, _subject(image)] if image is not None else []) + [1 + b % 250 for b in prompt.encode()]
        target_ids = [1 + b % 250 for b in (" " + target.strip()).encode()] if target is not None else []
        ids = torch.tensor([prompt_ids + target_ids])
        n = len(prompt_ids)
        inputs = ModelInputs(
            tensors={"input_ids": ids, "n_prompt": torch.tensor(n)},
            target_ids=torch.tensor(target_ids, dtype=torch.long),
            target_positions=torch.arange(n - 1, n - 1 + len(target_ids)),
            image_positions=torch.tensor([0]) if image is not None else torch.zeros(0, dtype=torch.long),
        )
        object.__setattr__(inputs, "_keys", self.keys(image, prompt))
        return inputs

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        return self.model(inputs.input_ids, inputs.tensors["n_prompt"], inputs._keys)

    def logits(self, image: Any, prompt: str, target: str) -> torch.Tensor:
        return self.forward(self.encode(image, prompt, target))[0]

    def answer(self, image: Any, prompt: str, max_new_tokens: int = 16) -> str:
        inputs = self.encode(image, prompt, None)
        ids = inputs.input_ids
        out = []
        for _ in range(max_new_tokens):
            step = ModelInputs({"input_ids": ids, "n_prompt": inputs.tensors["n_prompt"]}, inputs.target_ids,
                               inputs.target_positions, inputs.image_positions)
            object.__setattr__(step, "_keys", inputs._keys)
            token = int(self.forward(step)[0, -1].argmax())
            if token == EOS:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        return bytes(t - 1 for t in out).decode(errors="replace").strip()

    def decoder_layers(self) -> nn.ModuleList:
        return nn.ModuleList()

    def site_paths(self, n_last_layers: int, include_projector: bool = True) -> dict[str, list[str]]:
        return {}


class MemoryEditor(Editor):
    """Writes each edit under one kind of key: ``exact`` (this image and prompt), ``subject``
    (any question on any image of the subject) or ``all`` (every input)."""

    def __init__(self, vlm: FakeVLM, kind: str) -> None:
        super().__init__(vlm)
        self.kind = kind
        vlm.model.memory = Memory()  # swapped in: the restore point takes it out again

    def edit(self, request: EditRequest) -> EditResult:
        keys = FakeVLM.keys(request.image, request.prompt)
        key = {"exact": keys[0], "subject": keys[1], "all": keys[2]}[self.kind]
        self.vlm.model.memory.facts[key] = tuple(self.vlm.encode(None, "x", request.target).target_ids.tolist())
        self.edits_applied += 1
        return EditResult(self.edits_applied, 1.0, 0.0, (), steps=1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


def _cases(n: int) -> list[EditCase]:
    cases = []
    for i in range(n):
        image = f"s{i}/a"
        target = f"answer{i}"
        cases.append(EditCase(
            case_id=i, fact_id=f"f{i}", record_index=i, request=EditRequest(f"question {i}?", target, image),
            rephrase=Probe(f"rephrased {i}?", target, image), image_rephrase=Probe(f"question {i}?", target, f"s{i}/b"),
            loc=Probe("unrelated text?", "text"), m_loc=Probe("unrelated image?", "thing", "s90/a"),
            text_transfer=(Probe(f"about subject {i}?", target, None),),
            near_miss=(Probe(f"question {i}?", "other", f"s{50 + i}/a"),),
            other_fact=(Probe(f"other fact {i}?", "same", image),), group="g",
        ))
    return cases


@pytest.fixture()
def result() -> tuple[FakeVLM, list]:
    vlm = FakeVLM()
    stream = build_stream(_cases(4), 5, seed=0)  # the fifth edit re-edits a fact
    factories = {kind: (lambda v, k=kind: MemoryEditor(v, k)) for kind in ("exact", "subject", "all")}
    runs = run_comparison(vlm, stream, factories, ProtocolConfig(checkpoints=(1, 3), progress=False))
    return vlm, stream, runs


def test_rows_and_checkpoints(result) -> None:
    vlm, stream, runs = result
    assert [r.name for r in runs] == ["exact", "subject", "all"]
    for run in runs:
        assert len(run.edits) == 5 and sorted(run.retention) == [1, 3, 5]
        assert [len(run.retention[n]) for n in (1, 3, 5)] == [1, 3, 4]  # facts, not edits
        # retention after 5 edits scores the re-edited facts against their latest value
        assert stream[4].round == 1 and stream[4].target != stream[stream[4].record_index].target
        latest = {c.fact_id: c.case_id for c in stream}
        assert sorted(r["case_id"] for r in run.retention[5]) == sorted(latest.values())
    assert isinstance(vlm.model.memory, Memory) and vlm.model.memory.facts == {}  # restored


def test_exact_editor_is_reliable_local_and_under_scoped(result) -> None:
    _, _, runs = result
    exact = runs[0]
    for row in exact.retention[5]:
        assert row["rel"] == 1.0 and row["exact_match"] == 1.0
        assert row["t_gen"] == 0.0 and row["m_gen"] == 0.0 and row["text_transfer"] == 0.0
        assert row["t_loc"] == 1.0 and row["m_loc"] == 1.0 and row["near_miss_leak"] == 0.0
        assert row["other_fact_loc"] == 1.0 and row["scope_class"] == "under"


def test_subject_editor_transfers_and_leaks_to_the_other_fact(result) -> None:
    _, _, runs = result
    for row in runs[1].retention[5]:
        assert row["rel"] == 1.0 and row["t_gen"] == 1.0 and row["m_gen"] == 1.0
        assert row["text_transfer"] == 0.0  # no image: no subject key
        assert row["transfer"] == pytest.approx(2 / 3)
        assert row["t_loc"] == 1.0 and row["near_miss_leak"] == 0.0
        assert row["other_fact_loc"] < 1.0 and row["leaked"] and row["scope_class"] == "over"


def test_global_editor_forgets_all_but_the_last_and_leaks_everywhere(result) -> None:
    _, stream, runs = result
    rows = {r["case_id"]: r for r in runs[2].retention[5]}
    last = stream[-1].case_id
    assert rows[last]["rel"] == 1.0
    others = [r for cid, r in rows.items() if stream[cid].target != stream[last].target]
    assert others and all(r["rel"] < 1.0 for r in others)
    assert rows[last]["t_loc"] < 1.0 and rows[last]["near_miss_leak"] == 1.0
    assert rows[last]["scope_class"] == "over"
    online = runs[2].edits
    assert all(r["rel"] == 1.0 for r in online)  # each edit works right after it is made


def test_anchored_request_adds_the_locality_pair_and_siblings_when_asked() -> None:
    loc, m_loc = Probe("who wrote it ?", "a dog"), Probe("how many ?", "three", "m.png")
    siblings = (Probe("who made this ?", "acme", "e.png"), Probe("when ?", "1901", "e.png"))
    own = Probe("an anchor the request brought", "yes")
    case = EditCase(case_id=0, fact_id="f", record_index=0, loc=loc, m_loc=m_loc, siblings=siblings,
                    request=EditRequest("what city ?", "rome", "e.png", anchors=(own,)))
    anchors = {(rec, sib): anchored_request(case, ProtocolConfig(record_anchors=rec, sibling_anchors=sib)).anchors
               for rec in (False, True) for sib in (False, True)}
    assert anchors[False, False] == (own,)
    assert anchors[True, False] == (own, loc, m_loc)
    assert anchors[False, True] == (own, *siblings)
    assert anchors[True, True] == (own, loc, m_loc, *siblings)
