"""AtomicGraph: one structure (or a batch of them) as a torch_geometric ``Data``.

Fields of a single structure with N atoms and P pairs:

* ``numbers``     [N] int64, atomic numbers
* ``pos``         [N, 3] Cartesian positions, Å
* ``cell``        [1, 3, 3] lattice vectors as rows, Å (zeros for a molecule)
* ``pbc``         [1, 3] bool
* ``pair_index``  [2, P] int64, the canonical half neighbour list (``nnpot.core.neighbors``)
* ``pair_shifts`` [P, 3] int64, integer cell shifts: r_ij = pos[j] − pos[i] + shifts @ cell

Why pairs and not directed edges: the list stores each pair once. Radial quantities (distances,
filters, radial symmetry functions) are the same for i→j and j→i, so models compute them once
per pair — half the work; a model that needs directed edges makes both directions from the
pairs. Batching many structures with
:func:`batch_graphs` concatenates pairs and offsets ``pair_index`` like any PyG edge index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from .neighbors import ArrayLike, neighbor_pairs
from .structure_checks import check_pair_distances, check_structure, pair_distance2

if TYPE_CHECKING:
    from ase import Atoms
    from pymatgen.core import Molecule, Structure


class AtomicGraph(Data):
    """A structure as a graph of atoms and the pairs within a cutoff (fields: module docstring)."""

    def __inc__(self, key, value, *args, **kwargs):
        if key == "pair_index":
            return self.num_nodes
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key, value, *args, **kwargs):
        if key == "pair_index":
            return -1
        return super().__cat_dim__(key, value, *args, **kwargs)

    @classmethod
    def from_arrays(
        cls,
        numbers: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray | None,
        pbc: Sequence[bool] | bool,
        cutoff: float,
        backend: str = "auto",
    ) -> AtomicGraph:
        """Build the graph of one structure; positions and cell in Å."""
        numbers = torch.as_tensor(np.asarray(numbers), dtype=torch.long)
        positions = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        cell = torch.zeros(3, 3, dtype=torch.float64) if cell is None else \
            torch.as_tensor(np.asarray(cell, dtype=np.float64))
        pbc = torch.as_tensor(np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy())
        pair_index, pair_shifts = checked_pairs(numbers, positions, cell, pbc, cutoff, backend)
        return cls(
            numbers=numbers,
            pos=positions,
            cell=cell.reshape(1, 3, 3),
            pbc=pbc.reshape(1, 3),
            pair_index=pair_index,
            pair_shifts=pair_shifts,
            num_nodes=len(numbers),
        )

    @classmethod
    def from_atoms(cls, atoms: Atoms, cutoff: float, backend: str = "auto") -> AtomicGraph:
        """Build the graph of an ``ase.Atoms``."""
        return cls.from_arrays(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                               cutoff, backend)

    @classmethod
    def from_structure(cls, structure: Structure | Molecule, cutoff: float,
                       backend: str = "auto") -> AtomicGraph:
        """Build the graph of a pymatgen ``Structure`` or ``Molecule``."""
        from pymatgen.io.ase import AseAtomsAdaptor

        return cls.from_atoms(AseAtomsAdaptor.get_atoms(structure), cutoff, backend)


def checked_pairs(numbers: ArrayLike, positions: ArrayLike, cell: ArrayLike, pbc: ArrayLike,
                  cutoff: float, backend: str = "auto", where: str = ""
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The half pair list of a structure physics allows (``nnpot.core.structure_checks`` before and
    after the search; ``where`` starts every message). numbers [N], positions [N, 3] Å,
    cell [3, 3] Å, pbc [3] → pair_index [2, P], pair_shifts [P, 3]."""
    numbers, positions, cell = (torch.as_tensor(np.asarray(x)) for x in (numbers, positions, cell))
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    check_structure(numbers.numpy(), positions.numpy(), cell.numpy(), pbc, where)
    pair_index, pair_shifts = neighbor_pairs(positions, cell, pbc, cutoff, backend)
    check_pair_distances(numbers, pair_distance2(positions, cell, pair_index, pair_shifts),
                         pair_index, pair_shifts, where)
    return pair_index, pair_shifts


def batch_graphs(graphs: Sequence[AtomicGraph]) -> Batch:
    """Many structures as one disconnected graph; ``batch`` [N] maps atoms to structures."""
    return Batch.from_data_list(list(graphs))


def pair_vectors(
    pos: torch.Tensor,
    cell: torch.Tensor,
    pair_index: torch.Tensor,
    pair_shifts: torch.Tensor,
    batch: torch.Tensor | None,
) -> torch.Tensor:
    """r_ij = R[j] − R[i] + S·cell for every pair, [P, 3] Å, differentiable in pos and cell.

    ``cell`` is [B, 3, 3]; ``batch`` [N] maps atoms to structures (None for one structure).
    """
    i, j = pair_index
    vectors = pos.index_select(0, j) - pos.index_select(0, i)
    shifts = pair_shifts.to(pos.dtype)
    if cell.shape[0] == 1:
        return vectors + shifts @ cell[0]
    pair_cell = cell.index_select(0, batch.index_select(0, i))  # [P, 3, 3]
    return vectors + torch.einsum("pk,pkl->pl", shifts, pair_cell)
