"""One transaction mechanism for every editor: an edit's changes are all kept, or none are.

A :class:`Transaction` snapshots the state an edit may touch before the edit first writes it
(:meth:`~Transaction.touch` for an edit site's ``B`` and ``P``, :meth:`~Transaction.save` for
any other named tensors, with the function that puts them back), checks that the snapshotted
state is still finite after the edit (:meth:`~Transaction.require_finite`), and puts every
snapshot back when the edit fails or is rejected (:meth:`~Transaction.rollback`, which leaving a
``with Transaction() as tx:`` block by an exception calls).

- ScopeEdit and M-ORE touch each site before its first write (``editors/scopeedit/core.py``);
- ScopeMemory saves the slot rows and threshold columns a new slot changes;
- the baselines run their whole edit in :func:`transactional_edit`, which saves their
  ``state_dict``.

A transaction can also measure what an edit wrote into the ``B`` matrices from a chosen moment
on (the ``replace`` re-edit rule keeps it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

import torch

from editscope.core.site import STATE_NAMES, EditSite
from editscope.editors.base import EditRejected, target_loss
from editscope.types import EditRequest, EditResult, ModelInputs

if TYPE_CHECKING:
    from editscope.editors.base import Editor

NON_FINITE = "the edit produced non-finite values; the editor state is unchanged"
NAN_LOSS_AFTER = "non-finite loss after the edit; the editor state is unchanged"

Tensors = Mapping[str, torch.Tensor]


class _Snapshot(NamedTuple):
    saved: dict[str, torch.Tensor]  # clones taken before the first write
    restore: Callable[[dict[str, torch.Tensor]], None]
    current: Callable[[], Tensors] | None  # the state as it is now (checked by all_finite)


class Transaction:
    def __init__(self) -> None:
        self._snapshots: dict[object, _Snapshot] = {}
        self._marks: dict[int, tuple[EditSite, torch.Tensor, torch.Tensor]] | None = None

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        if exc_type is not None:
            self.rollback()
        return False

    def save(self, tensors: Tensors, restore: Callable[[dict[str, torch.Tensor]], None],
             current: Callable[[], Tensors] | None = None, key: object = None) -> None:
        """Snapshot ``tensors`` (cloned now); :meth:`rollback` hands the clones to ``restore``.
        ``current``, where given, returns the state as it is later, which :meth:`all_finite`
        checks. A ``key`` saved before is not saved again (the first snapshot is the one kept)."""
        key = object() if key is None else key
        if key not in self._snapshots:
            self._snapshots[key] = _Snapshot({k: v.detach().clone() for k, v in tensors.items()}, restore, current)

    def touch(self, site: EditSite) -> None:
        """Record ``site``'s state before its first write in this transaction (and, after
        :meth:`mark_writes`, its ``B`` matrices before its first write from then on)."""
        def restore(saved: dict[str, torch.Tensor]) -> None:
            for name, tensor in saved.items():
                getattr(site, name).copy_(tensor)

        self.save({n: getattr(site, n) for n in STATE_NAMES}, restore,
                  current=lambda: {n: getattr(site, n) for n in STATE_NAMES}, key=id(site))
        if self._marks is not None and id(site) not in self._marks:
            self._marks[id(site)] = (site, site.B_local.detach().clone(), site.B_shared.detach().clone())

    def mark_writes(self) -> None:
        """Start measuring writes: :meth:`writes` reports what changed in ``B`` from here on."""
        self._marks = {}

    def writes(self) -> list[tuple[EditSite, torch.Tensor, torch.Tensor]]:
        """``(site, change of B_local, change of B_shared)`` for every site touched since
        :meth:`mark_writes`, in the order they were first touched."""
        if self._marks is None:
            raise RuntimeError("mark_writes() was not called")
        return [(site, site.B_local.detach() - bl, site.B_shared.detach() - bg)
                for site, bl, bg in self._marks.values()]

    def all_finite(self) -> bool:
        """Whether every snapshotted state (with a ``current``) is finite now."""
        checks = [
            torch.isfinite(tensor).all().to("cpu")
            for snapshot in self._snapshots.values() if snapshot.current is not None
            for tensor in snapshot.current().values()
            if tensor.numel()
        ]
        return bool(torch.stack(checks).all()) if checks else True

    def require_finite(self, *tensors: torch.Tensor) -> None:
        """Raise ``EditRejected`` unless ``tensors`` and the snapshotted state are all finite."""
        if not all(bool(torch.isfinite(t).all()) for t in tensors) or not self.all_finite():
            raise EditRejected(NON_FINITE)

    def rollback(self) -> None:
        """Put every snapshot back (the last saved first) and forget them."""
        with torch.no_grad():
            for snapshot in reversed(list(self._snapshots.values())):
                snapshot.restore(snapshot.saved)
        self._snapshots.clear()


def check_loss_after(loss: float) -> None:
    """Raise ``EditRejected`` on a NaN target loss after an edit (an infinite one passes, as it
    always has for the baselines and ScopeMemory)."""
    if loss != loss:
        raise EditRejected(NAN_LOSS_AFTER)


def transactional_edit(editor: "Editor", request: EditRequest, run: Callable[[ModelInputs], tuple[float, int]],
                       groups: tuple[str, ...] = ()) -> EditResult:
    """A baseline's whole edit as one transaction over its ``state_dict``: refuse scope
    examples, encode the request, ``run(inputs)`` (returns the loss before and the steps taken),
    then the target loss after. Non-finite state or a NaN loss after is ``EditRejected``; on
    any failure the state is put back and the error raised. A kept edit counts in
    ``editor.edits_applied``."""
    editor.refuse_examples(request)
    inputs = editor.vlm.encode(request.image, request.prompt, request.target)
    start = time.perf_counter()
    with Transaction() as tx:
        tx.save(editor.state_dict(), editor.load_state_dict, current=editor.state_dict)
        loss_before, steps = run(inputs)
        with torch.no_grad():
            after = float(target_loss(editor.vlm, inputs))
        tx.require_finite()
        check_loss_after(after)
    editor.edits_applied += 1
    return EditResult(edit_id=editor.edits_applied, loss_before=loss_before, loss_after=after, active_groups=groups,
                      wall_time_s=time.perf_counter() - start, steps=steps)
