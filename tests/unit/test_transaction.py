"""The one transaction mechanism (editors/transaction.py): snapshots of sites and of any other
state, the finiteness check, and rollback on an error leaving the block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from editscope.core.site import STATE_NAMES, EditSite
from editscope.editors.base import EditRejected
from editscope.editors.transaction import NAN_LOSS_AFTER, NON_FINITE, Transaction, check_loss_after


def _site() -> EditSite:
    return EditSite(nn.Linear(6, 5), rank_local=3, rank_shared=2, scaling=1.0, seed=0)


def _state(site: EditSite) -> dict[str, torch.Tensor]:
    return {n: getattr(site, n).detach().clone() for n in STATE_NAMES}


def test_an_error_leaving_the_block_restores_touched_sites_and_saved_state() -> None:
    site, table = _site(), {"x": torch.arange(4.0)}
    before = _state(site)
    with pytest.raises(RuntimeError, match="boom"), Transaction() as tx:
        tx.touch(site)
        tx.save(table, lambda saved: table.update(x=saved["x"]))
        with torch.no_grad():
            site.B_local.add_(1.0)
            tx.touch(site)  # a second touch keeps the first snapshot
            site.P_shared.mul_(3.0)
        table["x"] = torch.zeros(4)
        raise RuntimeError("boom")
    assert all(torch.equal(getattr(site, n), before[n]) for n in STATE_NAMES)
    assert torch.equal(table["x"], torch.arange(4.0))


def test_a_clean_block_keeps_the_writes() -> None:
    site = _site()
    with Transaction() as tx:
        tx.touch(site)
        with torch.no_grad():
            site.B_local.add_(1.0)
        tx.require_finite(torch.tensor(0.5))
    assert bool((site.B_local == 1.0).all())


def test_require_finite_checks_the_given_tensors_and_the_snapshots_current_state() -> None:
    site, state = _site(), {"w": torch.ones(3), "labels": torch.arange(3)}
    tx = Transaction()
    tx.touch(site)
    tx.save(state, lambda saved: state.update(saved), current=lambda: state)
    tx.save({"ignored": torch.ones(1)}, lambda saved: None)  # no current: not checked
    tx.require_finite(torch.tensor(1.0))
    with pytest.raises(EditRejected, match=NON_FINITE):
        tx.require_finite(torch.tensor(float("inf")))
    state["w"] = torch.tensor([1.0, float("nan"), 1.0])
    assert not tx.all_finite()
    tx.rollback()
    assert torch.equal(state["w"], torch.ones(3))
    assert tx.all_finite()  # rolled back: nothing left to check


def test_check_loss_after_rejects_nan_only() -> None:
    check_loss_after(1.0)
    check_loss_after(float("inf"))  # as before: the baselines and ScopeMemory only reject NaN
    with pytest.raises(EditRejected, match=NAN_LOSS_AFTER):
        check_loss_after(float("nan"))
