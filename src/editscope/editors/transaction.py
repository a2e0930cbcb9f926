"""All-or-nothing changes to edit sites: back up a site's state the first time an edit writes
it, restore every backup if the edit fails."""

from __future__ import annotations

import torch

from editscope.core.site import STATE_NAMES, EditSite


class Transaction:
    def __init__(self) -> None:
        self._backups: dict[int, tuple[EditSite, dict[str, torch.Tensor]]] = {}

    def touch(self, site: EditSite) -> None:
        """Record ``site``'s state before its first write in this transaction."""
        if id(site) not in self._backups:
            self._backups[id(site)] = (site, {n: getattr(site, n).detach().clone() for n in STATE_NAMES})

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
