"""Committees assembled by a training run: members of other runs' model files and the snapshot
of the run's starting model, checked against the run's species."""

from __future__ import annotations

import copy

import torch

from ..core.committee import Committee, members_of
from ..core.model_file import load
from ..core.potential import Potential
from .config import ConfigError


class CommitteeJoining:
    """The Trainer's committee members from other runs (``model.committee_with``) and from the
    model it started from (``model.snapshot_committee``), joined with its own in best.pt."""

    def _members_to_join(self) -> list[Potential]:
        """The members that join this run's in best.pt: those of the ``model.committee_with``
        files (a committee file gives all its members), then, with ``model.snapshot_committee``,
        the model this run started from. Each must agree with this run's model."""
        m = self.config.model
        members, self.joined_provenance = [], []
        for path in m.committee_with:
            try:
                model = load(path, device=self.device)
            except (ValueError, OSError) as error:
                raise ConfigError(f"model.committee_with: {error}") from None
            self.joined_provenance.append({"file": path, "provenance": dict(model.provenance)})
            for member in members_of(model):
                if member.species != self.species:
                    raise ConfigError(
                        f"model.committee_with: {path} has species {member.species}, this run "
                        f"{self.species}; committee members must agree")
                # A shorter cutoff is fine (the member sees the pairs inside its own); a longer
                # one would be evaluated on this run's graphs, which lack its outer pairs.
                if member.cutoff > m.cutoff:
                    raise ConfigError(
                        f"model.committee_with: {path} has cutoff {member.cutoff:g} Å, longer "
                        f"than this run's {m.cutoff:g} Å; train the member with the longest "
                        f"cutoff last and join the others to it")
                members.append(member)
        if m.snapshot_committee:
            members.append(load(m.init_from, device=self.device))
        return [member.to(dtype=getattr(torch, m.dtype)) for member in members]

    def _save_joined_committee(self) -> None:
        """best.pt ← the committee of the joined members (read by ``build``) and this run's
        kept weights (a snapshot ensemble of two training stages, and/or members trained in
        separate runs).
        Built from the in-memory weights, so a finish run twice writes the same."""
        kept = copy.deepcopy(self.potential)  # not the training model itself: it stays as is
        kept.load_state_dict(self.best_state)
        joined = self.joined_members
        own = members_of(kept)
        Committee(joined + own).save(self.best_path, provenance=self._provenance())
        self._log(f"saved a committee of {len(joined)} joined member(s) and this run's kept "
                  f"epoch ({self.best_epoch}) in {self.best_path}")
