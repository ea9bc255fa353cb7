"""Committee: several potentials evaluated together; their mean is the prediction and their spread
says where the potential is extrapolating.

For members m = 1…M with energies E_m, forces F_m,i and stresses σ_m (M ≥ 2):

    energy = ⟨E_m⟩,  forces = ⟨F_m⟩,  stress = ⟨σ_m⟩             (⟨·⟩: mean over members)
    energy_std = sqrt⟨(E_m − ⟨E⟩)²⟩                                   eV, per structure
    forces_std_i = sqrt⟨|F_m,i − ⟨F_i⟩|²⟩                             eV/Å, per atom
    stress_std = sqrt⟨(σ_m − ⟨σ⟩)²⟩                                   eV/Å³, per Voigt component

(population spreads, divided by M, as DeePMD's model deviation; its ``max_devi_f`` is the
largest ``forces_std_i`` of a structure). The members share one neighbour list, one set of pair
vectors and one strain, and members of a model kind with a weight-free first part share that
(``AtomisticModel.shared_key``: HDNNPs with the same symmetry functions compute them once);
each member's forward pass is followed at once by its backward pass, so outside training
memory holds one member's graph (and the shared part) at a time.

Members may differ in cutoff (a MACE at 5 Å beside HDNNPs at 6 Å): the committee's cutoff is
the largest, its neighbour list is built at that, and a member with a shorter cutoff sees only
the pairs inside its own (``PairGeometry.within``), so each gives exactly what it gives alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch_geometric.data import Data

from ..version import __version__
from .files import FORMAT, atomic_torch_save
from .geometry import Geometry, PairGeometry
from .potential import Potential

COMMITTEE_FORMAT_VERSION = 2


class Committee(nn.Module):
    """Potentials with the same species (in the same order), dtype and device; their cutoffs
    may differ (the committee's is the largest).

    ``Committee([pot1, pot2, ...])``; ``save(path)`` writes one model file that ``nnpot.load``
    reads back as a Committee; ``NNPCalculator`` takes either.
    """

    def __init__(self, members: Sequence[Potential]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        for k, member in enumerate(members):
            if not isinstance(member, Potential):
                raise TypeError(f"committee member {k} is a {type(member).__name__}, not an "
                                f"nnpot Potential")
        first = members[0]
        for k, member in enumerate(members[1:], start=1):
            for what, mine, theirs in (("species", member.species, first.species),
                                       ("dtype", member.dtype, first.dtype),
                                       ("device", member.device, first.device)):
                if mine != theirs:
                    raise ValueError(f"committee member {k} has {what} {mine}, member 0 has "
                                     f"{theirs}: members must agree")
        self.members = nn.ModuleList(members)
        self.provenance: dict[str, Any] = {}
        # Members of one model kind share its weight-free first part (HDNNP: the symmetry
        # functions), computed once per call on the same pairs (so the cutoff is part of the
        # key); a key held by one member only is not shared.
        keys = [None if (key := member.model.shared_key()) is None else (key, member.cutoff)
                for member in members]
        self._shared_keys = [key if key is not None and keys.count(key) > 1 else None
                             for key in keys]

    # The calculator and drivers see a committee through the same properties as a Potential.
    @property
    def species(self) -> list[str]:
        return self.members[0].species

    @property
    def cutoff(self) -> float:
        """The largest member cutoff (Å): the neighbour list the committee needs."""
        return max(member.cutoff for member in self.members)

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.members[0].species_index(numbers)

    def __len__(self) -> int:
        return len(self.members)

    # ---------------------------------------------------------------------------------------
    def forward(self, graph: Data, forces: bool = True, stress: bool = False,
                create_graph: bool = False, members: bool = False, stresses: bool = False
                ) -> dict[str, torch.Tensor]:
        """The members' mean (``energy`` [B], ``energies`` [N], ``forces`` [N, 3], ``stress``
        [B, 6], ``stresses`` [N, 6] as ``Potential.forward``) and spread (``energy_std`` [B]
        eV, ``forces_std`` [N] eV/Å, ``stress_std`` [B, 6] eV/Å³: see the module docstring).
        ``members=True`` adds each member's results stacked on a first axis of size M
        (``member_energy`` [M, B], ``member_forces`` [M, N, 3], ``member_stress`` [M, B, 6])."""
        geometry = Geometry(graph, self.dtype, self.species_index(graph.numbers), forces, stress,
                            stresses)
        last = len(self.members) - 1
        each, shared = [], {}
        views = member_pairs(self.members, PairGeometry(geometry.species, geometry.pair_index,
                                                        geometry.pair_vec))
        for k, member in enumerate(self.members):
            key, pairs = self._shared_keys[k], views[k]
            if key is not None and key not in shared:
                shared[key] = member.model.shared_part(pairs.species, pairs.pair_index,
                                                       pairs.pair_vec)
            energies = member.atom_energies(pairs, shared.get(key))
            results = geometry.results(energies, create_graph,
                                       retain_graph=True if k < last else None)
            if geometry.wrt and not create_graph:  # done with this member's graph: let it go
                results = {key: value.detach() for key, value in results.items()}
            each.append(results)
        stacked = {key: torch.stack([r[key] for r in each]) for key in each[0]}
        moments = {key: _moments(values) for key, values in stacked.items()}
        out = {key: mean for key, (mean, _) in moments.items()}
        out["energy_std"] = moments["energy"][1].sqrt()
        if "forces" in stacked:
            out["forces_std"] = moments["forces"][1].sum(dim=1).sqrt()
        if "stress" in stacked:
            out["stress_std"] = moments["stress"][1].sqrt()
        if members:
            out.update({f"member_{key}": values for key, values in stacked.items()})
        return out

    @staticmethod
    def member_results(out: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """``forward(..., members=True)`` output → one results dict per member (``energy``,
        ``forces``, ``stress`` as a single potential gives them), e.g. for a training loss."""
        keys = [key[len("member_"):] for key in out if key.startswith("member_")]
        if not keys:
            raise ValueError("no member results: call the committee with members=True")
        count = out[f"member_{keys[0]}"].shape[0]
        return [{key: out[f"member_{key}"][m] for key in keys} for m in range(count)]

    # ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, provenance: Mapping[str, Any] | None = None) -> Path:
        """Write the committee to one model file, atomically; ``nnpot.load`` reads it back."""
        if provenance:
            self.provenance.update(provenance)
        members = [member.payload() for member in self.members]
        # A member's newer entries (pair_repulsion) make the whole file that newer format.
        version = max([COMMITTEE_FORMAT_VERSION] + [m["format_version"] for m in members])
        payload = {"format": FORMAT, "format_version": version,
                   "nnpot_version": __version__, "kind": "committee",
                   "members": members,
                   "provenance": dict(self.provenance)}
        return atomic_torch_save(payload, path)


def member_pairs(members: Sequence[Potential], pairs: PairGeometry) -> list[PairGeometry]:
    """Each member's pairs: all of ``pairs`` (built at the largest cutoff) for a member with
    that cutoff, those inside its own for one with a shorter cutoff (one selection per
    distinct cutoff)."""
    largest = max(member.cutoff for member in members)
    views = {largest: pairs}
    for member in members:
        if member.cutoff not in views:
            views[member.cutoff] = pairs.within(member.cutoff)
    return [views[member.cutoff] for member in members]


def members_of(potential: Potential | Committee) -> list[Potential]:
    """The potentials a model file holds: a committee's members, or the one potential."""
    return list(potential.members) if isinstance(potential, Committee) else [potential]


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over the first (member) axis, from the differences to the
    first member: stable, and exactly (x, 0) when every member gives x."""
    difference = values - values[0]
    mean_difference = difference.mean(dim=0)
    variance = (difference * difference).mean(dim=0) - mean_difference * mean_difference
    return values[0] + mean_difference, variance.clamp(min=0.0)
