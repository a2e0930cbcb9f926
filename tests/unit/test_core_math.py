"""The editor's math as small functions, each checked against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from editscope.core.gate import evidence_gate
from editscope.core.linalg import (
    fold_second_moment,
    orthonormal_bases,
    sherman_morrison,
    sherman_morrison_downdate,
    site_seed,
)
from editscope.core.site import EditSite
from editscope.core.update import shared_update


@pytest.mark.parametrize("basis", ["orthogonal", "nested"])
def test_bases_have_orthonormal_rows(basis: str) -> None:
    a_local, a_shared = orthonormal_bases(40, 12, 5, seed=3, basis=basis)
    assert a_local.shape == (12, 40) and a_shared.shape == (5, 40)
    assert torch.allclose(a_local @ a_local.T, torch.eye(12), atol=1e-6)
    assert torch.allclose(a_shared @ a_shared.T, torch.eye(5), atol=1e-6)
    cross = (a_local @ a_shared.T).abs().max()
    if basis == "orthogonal":
        assert cross < 1e-6
    else:  # ablation: shared rows are local rows
        assert torch.equal(a_shared, a_local[:5])


def test_bases_are_reproducible_from_the_seed() -> None:
    first = orthonormal_bases(32, 8, 4, seed=11)
    again = orthonormal_bases(32, 8, 4, seed=11)
    other = orthonormal_bases(32, 8, 4, seed=12)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert site_seed(0, "a.b") != site_seed(0, "a.c")


def test_rank_above_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="exceeds the input width"):
        orthonormal_bases(8, 6, 4, seed=0)


@pytest.mark.parametrize("lam", [1.0, 0.5, 3.0])
def test_sherman_morrison_tracks_the_direct_inverse(lam: float) -> None:
    # With P_0 = I and the recursion P <- P - Pc(Pc)^T / (lam + c^T P c), P is
    # inv(I + sum c c^T / lam) = lam * inv(lam I + sum c c^T); for lam = 1 (the reference
    # setting) that is exactly inv(lam I + sum c c^T), as docs/method.md states.
    gen = torch.Generator().manual_seed(0)
    r = 7
    eye = torch.eye(r, dtype=torch.float64)
    p = eye.clone()
    codes = torch.randn(25, r, generator=gen, dtype=torch.float64) * 3
    for c in codes:
        p = sherman_morrison(p, c, lam)
    direct = lam * torch.linalg.inv(lam * eye + codes.T @ codes)
    assert torch.allclose(p, direct, atol=1e-10, rtol=1e-8)
    if lam == 1.0:
        assert torch.allclose(p, torch.linalg.inv(eye + codes.T @ codes), atol=1e-10)


@pytest.mark.parametrize("lam", [1.0, 300.0])
def test_downdate_takes_a_folded_code_back_out(lam: float) -> None:
    gen = torch.Generator().manual_seed(1)
    r = 6
    eye = torch.eye(r, dtype=torch.float64)
    codes = torch.randn(12, r, generator=gen, dtype=torch.float64) * 4
    p = eye.clone()
    for c in codes:
        p = sherman_morrison(p, c, lam)
    for c in codes[3:7]:  # release four of them, in another order than they came
        p = sherman_morrison_downdate(p, c, lam)
    kept = torch.cat([codes[:3], codes[7:]])
    direct = lam * torch.linalg.inv(lam * eye + kept.T @ kept)
    assert torch.allclose(p, direct, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("lam", [1.0, 40.0])
def test_folding_a_second_moment_equals_folding_its_codes_one_by_one(lam: float) -> None:
    gen = torch.Generator().manual_seed(2)
    r = 5
    history = torch.randn(4, r, generator=gen, dtype=torch.float64) * 3
    reference = torch.randn(30, r, generator=gen, dtype=torch.float64) * 2
    p = torch.eye(r, dtype=torch.float64)
    for c in history:
        p = sherman_morrison(p, c, lam)
    one_by_one = p.clone()
    for c in reference:
        one_by_one = sherman_morrison(one_by_one, c, lam)
    at_once = fold_second_moment(p, reference.T @ reference, lam)
    assert torch.allclose(at_once, one_by_one, atol=1e-10, rtol=1e-8)
    both = torch.cat([history, reference])
    direct = lam * torch.linalg.inv(lam * torch.eye(r, dtype=torch.float64) + both.T @ both)
    assert torch.allclose(at_once, direct, atol=1e-10, rtol=1e-8)
    assert torch.equal(at_once, at_once.T)


def test_downdate_of_a_code_never_folded_leaves_p_unchanged() -> None:
    p = torch.eye(3)
    assert torch.equal(sherman_morrison_downdate(p, torch.tensor([2.0, 0.0, 0.0]), 1.0), p)


def test_gate_matches_its_definition() -> None:
    u_t = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    u_v = torch.tensor([0.8, 1.5, 0.1], dtype=torch.float64)
    gate = evidence_gate(u_t, u_v, tau=0.2, beta=10.0, eps=1e-6)
    nt, nv = u_t.norm().item(), u_v.norm().item()
    cos = (u_t @ u_v).item() / (nt * nv + 1e-6)
    support = min(nt, nv) / (max(nt, nv) + 1e-6)
    gamma = support / (1 + math.exp(-10 * (cos - 0.2)))
    w_v, w_t = nv / (nt + nv + 1e-6), nt / (nt + nv + 1e-6)
    q = gamma * w_t * u_t + gamma * w_v * u_v
    assert gate.cos.item() == pytest.approx(cos, rel=1e-12)
    assert gate.support.item() == pytest.approx(support, rel=1e-12)
    assert gate.g.item() == pytest.approx(gamma * w_v, rel=1e-12)
    assert torch.allclose(gate.q, q / q.norm(), atol=1e-12)


def test_gate_opens_on_agreement_and_stays_shut_on_disagreement() -> None:
    u = torch.tensor([1.0, 0.0, 0.0])
    agree = evidence_gate(u, 0.9 * u, tau=0.2, beta=10.0)
    oppose = evidence_gate(u, -u, tau=0.2, beta=10.0)
    assert agree.g > 0.4 and oppose.g < 1e-4
    forced = evidence_gate(u, -u, tau=0.2, beta=10.0, force_open=True)
    assert forced.gamma.item() == 1.0


def make_site(rank_local: int = 6, rank_shared: int = 3, d_in: int = 16, d_out: int = 10) -> EditSite:
    torch.manual_seed(0)
    return EditSite(nn.Linear(d_in, d_out), rank_local, rank_shared, scaling=2.0, seed=5)


def test_fresh_site_equals_its_base_layer_exactly() -> None:
    site = make_site()
    x = torch.randn(2, 5, 16)
    assert torch.equal(site(x), site.base_layer(x))
    half = make_site().to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    assert torch.equal(half(xb), half.base_layer(xb))


def test_closed_gate_leaves_shared_state_untouched() -> None:
    site = make_site()
    with torch.no_grad():
        site.B_shared.normal_()
    before = site.B_shared.clone(), site.P_shared.clone()
    k = torch.randn(16)
    gate = shared_update(
        site, torch.randn(10, 3), k, torch.zeros(16), eta=1.0, lam=1.0, tau=0.2, beta=10.0
    )
    assert gate.g.item() == 0.0
    assert torch.equal(site.B_shared, before[0]) and torch.equal(site.P_shared, before[1])


def test_open_gate_writes_shared_state() -> None:
    site = make_site()
    k = torch.randn(16)
    shared_update(site, torch.randn(10, 3), k, 1.1 * k, eta=1.0, lam=1.0, tau=0.2, beta=10.0)
    assert site.B_shared.abs().sum() > 0
    assert not torch.equal(site.P_shared, torch.eye(3))


def test_merged_weight_reproduces_the_site() -> None:
    site = make_site()
    with torch.no_grad():
        site.B_local.normal_()
        site.B_shared.normal_()
    merged = nn.Linear(16, 10)
    with torch.no_grad():
        merged.weight.copy_(site.merged_weight())
        merged.bias.copy_(site.base_layer.bias)
    x = torch.randn(3, 16)
    assert torch.allclose(merged(x), site(x), atol=1e-5)


def test_code_norm_site_refuses_to_merge() -> None:
    site = EditSite(nn.Linear(16, 10), 6, 3, scaling=2.0, seed=0, code_norm=True)
    with pytest.raises(ValueError, match="cannot be merged"):
        site.merged_weight()


def test_site_only_wraps_linear_layers() -> None:
    with pytest.raises(TypeError, match="nn.Linear"):
        EditSite(nn.Conv1d(3, 3, 1), 2, 1, scaling=1.0, seed=0)  # type: ignore[arg-type]
