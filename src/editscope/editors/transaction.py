"""All-or-nothing changes to edit sites: back up a site's state the first time an edit writes
it, restore every backup if the edit fails. A transaction can also measure what an edit wrote
into the ``B`` matrices from a chosen moment on (the ``replace`` re-edit rule keeps it)."""

from __future__ import annotations

import torch

from editscope.core.site import STATE_NAMES, EditSite


class Transaction:
    def __init__(self) -> None:
        self._backups: dict[int, tuple[EditSite, dict[str, torch.Tensor]]] = {}
        self._marks: dict[int, tuple[EditSite, torch.Tensor, torch.Tensor]] | None = None

    def touch(self, site: EditSite) -> None:
        """Record ``site``'s state before its first write in this transaction (and, after
        :meth:`mark_writes`, its ``B`` matrices before its first write from then on)."""
        if id(site) not in self._backups:
            self._backups[id(site)] = (site, {n: getattr(site, n).detach().clone() for n in STATE_NAMES})
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
        checks = [
            torch.isfinite(getattr(site, n)).all().to("cpu")
            for site, _ in self._backups.values()
            for n in STATE_NAMES
            if getattr(site, n).numel()
        ]
        return bool(torch.stack(checks).all()) if checks else True

    def rollback(self) -> None:
        with torch.no_grad():
            for site, saved in self._backups.values():
                for name, tensor in saved.items():
                    getattr(site, name).copy_(tensor)
        self._backups.clear()
