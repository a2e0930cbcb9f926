"""``grace``: a GRACE-style codebook adapter at one decoder layer's MLP output linear.

The codebook holds entries (key, value, radius, label). A key is the wrapped linear's input at
a position of an edit input; its value replaces the linear's output wherever an input falls
within the entry's radius of the key (positions outside every radius are untouched, so the
adapter is invisible far from the edits). With ``positions="last_prompt"`` an edit has one
key, at its last prompt token (the paper's setting); with ``positions="answer"`` (default) it
has one key at every position that predicts an answer token, so that answers of several
tokens are written too (teacher-forced and greedy decoding see the same prefixes, hence the
same keys). Entries are added, widened or split as edits arrive, key by key, against the
entries of earlier edits:

- no entry within ``radius + eps_init`` of the new key: add an entry of radius ``eps_init``;
- the nearest entry overlaps and has the same label: widen its radius to reach the new key;
- it overlaps with another label: shrink it to half the distance and add the new entry with
  that radius too (the same key with a new label re-trains the entry in place).

The values of the entries that serve the edit are trained together with a few Adam steps on
the target loss, starting from the layer's own output at each key (an edit starts as no
change).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
from torch import nn

from editscope.editors.base import Editor
from editscope.editors.baselines.common import check_positive, optimise, wrap_layer_output
from editscope.editors.transaction import transactional_edit
from editscope.types import EditRequest, EditResult

CODEBOOK_NAMES = ("keys", "values", "radii", "labels")
SAME_KEY = 1e-6
KEY_POSITIONS = ("answer", "last_prompt")


@dataclass(frozen=True)
class GraceConfig:
    """``layer``: decoder layer whose MLP output linear carries the codebook (negative: from
    the end). ``eps_init``: radius of a new entry, in the units of that linear's input."""

    layer: int = -2
    eps_init: float = 1.0
    lr: float = 1.0
    steps: int = 20
    stop_loss: float = 1e-2
    positions: str = "answer"

    def __post_init__(self) -> None:
        if self.positions not in KEY_POSITIONS:
            raise ValueError(f"GraceConfig.positions must be one of {KEY_POSITIONS}, got {self.positions!r}")
        check_positive(self, "eps_init", "lr")
        check_positive(self, "stop_loss", allow_zero=True)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"GraceConfig.steps must be a positive integer, got {self.steps!r}")


def label_id(target: str) -> int:
    """A stable 63-bit id of a normalised target string."""
    digest = hashlib.sha256(" ".join(target.lower().split()).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def nearest_key(x: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance (M,) from each row of ``x`` (M, d) to its nearest row of ``keys``
    (N, d), and that row's index (M,). Float64 matrix products: fast for large codebooks and
    exact enough that a key is at distance ~0 from itself."""
    dist = torch.cdist(x.double(), keys.double(), compute_mode="use_mm_for_euclid_dist")
    distance, index = dist.min(dim=-1)
    return distance.float(), index


class GraceCodebook(nn.Module):
    """``base_layer`` plus a codebook: ``keys`` (N, d_in), ``values`` (N, d_out), ``radii`` (N,),
    ``labels`` (N,) int64; all float32 except the labels."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base_layer
        d_out, d_in = base_layer.weight.shape
        device = base_layer.weight.device
        self.register_buffer("keys", torch.zeros(0, d_in, device=device))
        self.register_buffer("values", torch.zeros(0, d_out, device=device))
        self.register_buffer("radii", torch.zeros(0, device=device))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long, device=device))
        self._training: tuple[torch.Tensor, torch.Tensor] | None = None

    @contextmanager
    def training_rows(self, rows: torch.Tensor, values: torch.Tensor) -> Iterator[None]:
        """Serve ``values`` (k, d_out) in place of entries ``rows`` (k,) inside the block."""
        self._training = (rows, values)
        try:
            yield
        finally:
            self._training = None

    def nearest(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance (M,) to the nearest key and its index (M,) for inputs ``x`` (M, d_in)."""
        return nearest_key(x, self.keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.keys.shape[0] == 0:
            return out
        values = self.values
        if self._training is not None:
            rows, trained = self._training
            values = values.index_copy(0, rows, trained.to(values.dtype))
        flat = x.reshape(-1, x.shape[-1])
        dist, index = self.nearest(flat)
        hit = (dist <= self.radii[index]).reshape(*out.shape[:-1], 1)
        replaced = values[index].reshape(out.shape).to(out.dtype)
        return torch.where(hit, replaced, out)


class _InputCapture:
    """Records a module's input and output at some positions during one forward pass."""

    def __init__(self, module: nn.Module, positions: torch.Tensor) -> None:
        self.module, self.positions = module, positions
        self.input: torch.Tensor | None = None
        self.output: torch.Tensor | None = None

    def __enter__(self) -> "_InputCapture":
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            positions = self.positions.to(output.device)
            self.input = args[0][0].index_select(0, positions).detach().float()
            self.output = output[0].index_select(0, positions).detach().float()

        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


class Grace(Editor):
    name = "grace"

    def __init__(self, vlm: Any, config: GraceConfig | None = None) -> None:
        super().__init__(vlm)
        self.config = config if config is not None else GraceConfig()
        self.group, self.path, self.codebook = wrap_layer_output(vlm, self.config.layer, GraceCodebook)

    def _keys_and_outputs(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The base linear's inputs (k, d_in) and outputs (k, d_out) at the key positions."""
        positions = inputs.target_positions
        if self.config.positions == "last_prompt":
            positions = positions[:1]
        with _InputCapture(self.codebook.base_layer, positions) as cap, torch.no_grad():
            self.vlm.forward(inputs)
        assert cap.input is not None and cap.output is not None
        return cap.input, cap.output

    def _place(self, key: torch.Tensor, label: int, base_out: torch.Tensor, n_old: int) -> tuple[int, torch.Tensor]:
        """Update the codebook for one key, against the first ``n_old`` entries (those of
        earlier edits); returns the row that serves the key and the value its training starts
        from."""
        cb, eps = self.codebook, self.config.eps_init
        if n_old:
            dist, index = nearest_key(key[None], cb.keys[:n_old])
            d, i = float(dist[0]), int(index[0])
            if d <= float(cb.radii[i]) + eps:
                if int(cb.labels[i]) == label:
                    cb.radii[i] = max(float(cb.radii[i]), d)
                    return i, cb.values[i].clone()
                if d <= SAME_KEY:
                    cb.labels[i] = label
                    return i, base_out
                cb.radii[i] = d / 2
                eps = d / 2
        self._append(key, base_out, eps, label)
        return cb.keys.shape[0] - 1, base_out

    def _append(self, key: torch.Tensor, value: torch.Tensor, radius: float, label: int) -> None:
        cb = self.codebook
        cb.keys = torch.cat([cb.keys, key[None].to(cb.keys)])
        cb.values = torch.cat([cb.values, value[None].to(cb.values)])
        cb.radii = torch.cat([cb.radii, torch.tensor([radius], device=cb.radii.device)])
        cb.labels = torch.cat([cb.labels, torch.tensor([label], device=cb.labels.device)])

    def edit(self, request: EditRequest) -> EditResult:
        cfg = self.config

        def run(inputs: Any) -> tuple[float, int]:
            keys, outputs = self._keys_and_outputs(inputs)
            label, n_old, served = label_id(request.target), self.size, {}
            with torch.no_grad():
                for key, out in zip(keys, outputs):
                    row, start = self._place(key, label, out, n_old)
                    served.setdefault(row, start)
            rows = torch.tensor(list(served), dtype=torch.long, device=self.codebook.values.device)
            values = nn.Parameter(torch.stack(list(served.values())).detach().clone(), requires_grad=False)
            with self.codebook.training_rows(rows, values):
                loss_before, steps = optimise(self.vlm, inputs, [values], cfg.lr, cfg.steps, cfg.stop_loss)
            with torch.no_grad():
                self.codebook.values.index_copy_(0, rows, values.detach())
            return loss_before, steps

        return transactional_edit(self, request, run, groups=(self.group,))

    @property
    def size(self) -> int:
        """Number of codebook entries."""
        return int(self.codebook.keys.shape[0])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{self.path}.{n}": getattr(self.codebook, n).detach().clone() for n in CODEBOOK_NAMES}

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (getattr(self.codebook, n) for n in CODEBOOK_NAMES))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {f"{self.path}.{n}": n for n in CODEBOOK_NAMES}
        if set(state) != set(expected):
            raise ValueError(f"grace state must hold {sorted(expected)}, got {sorted(state)[:5]}")
        cb = self.codebook
        n = state[f"{self.path}.keys"].shape[0]
        shapes = {"keys": (n, cb.keys.shape[1]), "values": (n, cb.values.shape[1]), "radii": (n,), "labels": (n,)}
        for key, name in expected.items():
            if tuple(state[key].shape) != shapes[name]:
                raise ValueError(f"grace state {key}: shape {tuple(state[key].shape)} != {shapes[name]}")
        for key, name in expected.items():
            current = getattr(cb, name)
            setattr(cb, name, state[key].detach().clone().to(device=current.device, dtype=current.dtype))

    def config_dict(self) -> dict[str, Any]:
        return {"editor": self.name, "config": asdict(self.config), "site": self.path}

    def remove(self) -> nn.Module:
        self.vlm.model.set_submodule(self.path, self.codebook.base_layer)
        return self.vlm.model
