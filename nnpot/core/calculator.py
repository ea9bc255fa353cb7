"""NNPCalculator: an ASE calculator over an nnpot Potential, with Verlet-list reuse."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .allocator import keep_buffers_in_heap, release_large_buffers_if_heap_is_large
from .committee import Committee
from .devices import resolve_device
from .graph import AtomicGraph
from .model_file import load
from .neighbors import neighbor_pairs
from .potential import Potential, resolve_dtype
from .structure_checks import check_pair_distances, check_structure, pair_distance2


class NNPCalculator(Calculator):
    """ASE calculator for energies, per-atom energies, forces and stress.

    Args:
        potential: a ``Potential``, a ``Committee`` or the path of a model file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        dtype: ``"float32"`` or ``"float64"``; default: the dtype the potential was saved in.
            A potential object is copied, not changed, when device or dtype differ.
        skin: Verlet skin, Å. With ``skin > 0`` the neighbour list is built with cutoff + skin
            and reused until an atom moves more than skin/2 or the cell, the periodicity or the
            atoms change; each call keeps the pairs inside the cutoff, so the results equal a
            fresh list (``skin=0``) exactly.
        neighbor_backend: see ``nnpot.core.neighbors`` (``"auto"`` picks vesin on CPU, torch on GPU).

    Stress is available for cells periodic in all three directions; asking for it otherwise
    raises ASE's ``PropertyNotImplementedError``. Once stress has been asked for, it is computed
    on every later call (NPT asks for forces and stress of the same step separately).
    ``atoms.get_stresses()`` gives per-atom stresses [N, 6] eV/Å³ that sum to the stress (the
    pair split of ``nnpot.core.geometry``, the one LAMMPS's ``compute stress/atom`` gets from
    ``pair_style nnpot``); they are computed only on calls that ask for them.

    With a committee the results are the members' mean, and ``energy_std`` (eV), ``forces_std``
    ([N] eV/Å, per atom) and ``stress_std`` ([6] eV/Å³) their spread (``nnpot.core.committee``):
    ``calc.get_property("forces_std", atoms)`` or ``calc.results`` after a calculation.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses"]
    committee_properties = ["energy_std", "forces_std", "stress_std"]

    def __init__(self, potential: Potential | Committee | str | os.PathLike, device: str = "cpu",
                 dtype: str | torch.dtype | None = None, skin: float = 0.0,
                 neighbor_backend: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if skin < 0:
            raise ValueError(f"skin must be ≥ 0 Å, got {skin}")
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_buffers_in_heap()
        if isinstance(potential, (str, os.PathLike)):
            potential = load(potential, device=self.device)
        elif not isinstance(potential, (Potential, Committee)):
            raise TypeError(f"potential must be an nnpot Potential, a Committee or a model file "
                            f"path, got {type(potential).__name__}")
        dtype = resolve_dtype(dtype) or potential.dtype
        if potential.dtype != dtype or potential.device != self.device:
            potential = copy.deepcopy(potential).to(device=self.device, dtype=dtype)
        self.potential = potential.eval()
        self.is_committee = isinstance(potential, Committee)
        if self.is_committee:
            self.implemented_properties = self.implemented_properties + self.committee_properties
        for parameter in self.potential.parameters():
            parameter.requires_grad_(False)  # only ∂E/∂R and ∂E/∂ε are needed here
        self.skin = float(skin)
        self.neighbor_backend = neighbor_backend
        self._stress_wanted = False
        self._verlet = None  # (pair_index, pair_shifts, reference positions, cell, pbc, numbers)
        self.min_distance = float("inf")

    # ---------------------------------------------------------------------------------------
    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        per_atom = "stresses" in properties
        if "stress" in properties or "stress_std" in properties or per_atom:
            if not periodic:
                raise PropertyNotImplementedError(
                    f"stress needs a cell periodic in all three directions (pbc={atoms.pbc.tolist()})")
            self._stress_wanted = True
        positions = np.asarray(atoms.positions, dtype=np.float64)
        check_structure(atoms.numbers, positions, atoms.cell.array, atoms.pbc)
        # Unknown elements fail here, with the element named, before any neighbour search.
        numbers = torch.as_tensor(atoms.numbers, dtype=torch.long)
        self.potential.species_index(numbers)

        pair_index, pair_shifts = self._pairs(atoms, positions)
        graph = AtomicGraph(
            numbers=numbers.to(self.device),
            pos=torch.as_tensor(positions, device=self.device),
            cell=torch.as_tensor(atoms.cell.array, dtype=torch.float64, device=self.device).reshape(1, 3, 3),
            pbc=torch.as_tensor(atoms.pbc, device=self.device).reshape(1, 3),
            pair_index=pair_index,
            pair_shifts=pair_shifts,
            num_nodes=len(atoms),
        )
        out = self.potential(graph, forces=True, stress=self._stress_wanted and periodic,
                             stresses=per_atom)
        energy = float(out["energy"][0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().cpu().double().numpy(),
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if "stress" in out:
            self.results["stress"] = out["stress"][0].detach().cpu().double().numpy()
        if per_atom:
            self.results["stresses"] = out["stresses"].detach().cpu().double().numpy()
        if self.is_committee:
            self.results["energy_std"] = float(out["energy_std"][0])
            self.results["forces_std"] = out["forces_std"].detach().cpu().double().numpy()
            if "stress_std" in out:
                self.results["stress_std"] = out["stress_std"][0].detach().cpu().double().numpy()
        del out, graph
        if self.device.type == "cpu":
            # A heap kept for speed stops growing with fragmentation once it is large
            release_large_buffers_if_heap_is_large()

    # ---------------------------------------------------------------------------------------
    def _pairs(self, atoms, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs within the cutoff, from a fresh list or from the Verlet list when still valid.

        Also sets ``self.min_distance`` (Å), the shortest pair distance, which the MD driver
        watches to stop a simulation that blows up.
        """
        cutoff = self.potential.cutoff
        reach = cutoff + self.skin
        if self.skin == 0.0 or self._verlet_is_stale(atoms, positions):
            pair_index, pair_shifts = neighbor_pairs(
                torch.as_tensor(positions, device=self.device), atoms.cell.array, atoms.pbc,
                reach, self.neighbor_backend)
            if self.skin > 0.0:
                self._verlet = (pair_index, pair_shifts, positions.copy(), atoms.cell.array.copy(),
                                atoms.pbc.copy(), atoms.numbers.copy())
        else:
            pair_index, pair_shifts = self._verlet[:2]
        distance2 = pair_distance2(torch.as_tensor(positions, device=self.device),
                                   torch.as_tensor(atoms.cell.array, device=self.device),
                                   pair_index, pair_shifts)
        self.min_distance = check_pair_distances(atoms.numbers, distance2, pair_index, pair_shifts)
        if self.skin == 0.0:
            return pair_index, pair_shifts
        # Keep the pairs inside the cutoff, in list order: the same pairs, in the same order,
        # as a fresh list would give, so results are identical to skin = 0.
        inside = distance2 < cutoff * cutoff
        return pair_index[:, inside], pair_shifts[inside]

    def _verlet_is_stale(self, atoms, positions: np.ndarray) -> bool:
        if self._verlet is None:
            return True
        _, _, ref_positions, ref_cell, ref_pbc, ref_numbers = self._verlet
        if (len(ref_numbers) != len(atoms) or not np.array_equal(ref_numbers, atoms.numbers)
                or not np.array_equal(ref_pbc, atoms.pbc)
                or not np.array_equal(ref_cell, atoms.cell.array)):
            return True
        displacement = np.sqrt(((positions - ref_positions) ** 2).sum(axis=1)).max(initial=0.0)
        return displacement > 0.5 * self.skin
