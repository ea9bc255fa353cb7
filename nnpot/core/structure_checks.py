"""Is this a structure physics allows? One place that every way into nnpot calls.

The calculator, the graph builder and the training-data cache check each structure here before
and after the neighbour search, so bad input is refused with the atoms (and the file and frame,
given by the caller in ``where``) named, instead of being computed silently: two atoms on the
same spot give zero force and "converge" in 0 steps, and a nearly singular cell puts an atom's
own periodic image a thousandth of an ångström away and gives −10⁸ eV.

The neighbour search itself (``nnpot.core.neighbors``) stays a pure geometric search: it accepts
any points, which its property tests rely on.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import chemical_symbols

# Closer than any chemical bond (H₂: 0.74 Å) and than any DFT training set's closest contact:
# atoms this close are a duplicated atom, a unit mix-up (bohr/nm) or a collapsed cell.
MIN_PAIR_DISTANCE = 0.3  # Å
# A periodic cell thinner than this along one of its periodic directions is (nearly) singular;
# a neighbour search in it would also need ~cutoff/height periodic images per direction.
MIN_CELL_HEIGHT = MIN_PAIR_DISTANCE  # Å


class StructureError(ValueError):
    """A structure no physics allows (the message names the atoms or the cell at fault)."""


class OverlappingAtomsError(StructureError):
    """Two atoms (or an atom and a periodic image) closer than ``MIN_PAIR_DISTANCE``."""


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def check_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray | None,
                    pbc: np.ndarray, where: str = "") -> None:
    """Atoms present, known elements, finite positions and cell, no (nearly) singular cell.

    numbers [N] int, positions [N, 3] Å, cell [3, 3] Å (rows are lattice vectors) or None,
    pbc [3] bool. ``where`` (e.g. "data.extxyz, frame 7") starts every message.
    """
    p = _prefix(where)
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    if len(numbers) == 0:
        raise StructureError(f"{p}the structure has no atoms")
    if positions.shape != (len(numbers), 3):
        raise StructureError(f"{p}positions have shape {positions.shape}, expected "
                             f"({len(numbers)}, 3)")
    bad = (numbers < 1) | (numbers >= len(chemical_symbols))
    if bad.any():
        raise StructureError(f"{p}invalid atomic numbers {sorted(set(numbers[bad].tolist()))} "
                             f"(atoms {np.flatnonzero(bad)[:5].tolist()})")
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        raise StructureError(f"{p}positions contain NaN or inf (atoms "
                             f"{np.flatnonzero(~finite)[:5].tolist()})")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if cell is None or not pbc.any():
        return
    cell = np.asarray(cell, dtype=np.float64)
    if not np.isfinite(cell).all():
        raise StructureError(f"{p}the cell contains NaN or inf")
    for axis, height in zip(np.flatnonzero(pbc), periodic_heights(cell, pbc)):
        if height < MIN_CELL_HEIGHT:
            raise StructureError(
                f"{p}singular cell (or nearly): along lattice vector a{axis + 1} its periodic "
                f"repeat is {height:.3g} Å thick (< {MIN_CELL_HEIGHT} Å); cell = "
                f"{np.round(cell, 6).tolist()}, pbc = {pbc.tolist()}")


def periodic_heights(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Thickness of the cell along each periodic lattice vector, Å: the distance between the
    lattice planes spanned by the other periodic vectors (its length when it is the only one)."""
    periodic = np.asarray(cell, dtype=np.float64)[np.asarray(pbc, dtype=bool)]
    gram = periodic @ periodic.T
    total = np.linalg.det(gram)
    heights = []
    for k in range(len(periodic)):
        others = np.delete(np.delete(gram, k, 0), k, 1)
        rest = np.linalg.det(others) if others.size else 1.0
        # det(G)/det(G without k) is the squared height; tiny negatives are round-off.
        heights.append(np.sqrt(max(total, 0.0) / rest) if rest > 0 else 0.0)
    return np.asarray(heights)


def check_pair_distances(numbers: np.ndarray | torch.Tensor, distance2: torch.Tensor,
                         pair_index: torch.Tensor, pair_shifts: torch.Tensor,
                         where: str = "") -> float:
    """Shortest pair distance (Å, inf without pairs); ``OverlappingAtomsError`` naming the two
    atoms when it is below ``MIN_PAIR_DISTANCE``.

    distance2 [P] squared pair distances (Å²) of pair_index [2, P] with shifts [P, 3].
    """
    if distance2.numel() == 0:
        return float("inf")
    closest = int(torch.argmin(distance2))
    shortest = float(distance2[closest].sqrt())
    if shortest < MIN_PAIR_DISTANCE:
        i, j = (int(v) for v in pair_index[:, closest])
        shift = [int(v) for v in pair_shifts[closest]]
        z = np.asarray(numbers.cpu() if isinstance(numbers, torch.Tensor) else numbers)
        image = "" if not any(shift) else f" (through the periodic image {shift})"
        what = "an atom and its own periodic image" if i == j else f"atoms {i} and {j}"
        raise OverlappingAtomsError(
            f"{_prefix(where)}{what} ({chemical_symbols[z[i]]}, {chemical_symbols[z[j]]}) are "
            f"{shortest:.4f} Å apart{image}; atoms closer than {MIN_PAIR_DISTANCE} Å are not a "
            f"physical structure (a duplicated atom, wrong units or a collapsed cell?)")
    return shortest


def pair_distance2(positions: torch.Tensor, cell: torch.Tensor, pair_index: torch.Tensor,
                   pair_shifts: torch.Tensor) -> torch.Tensor:
    """Squared pair distances [P], Å², in float64: |R[j] − R[i] + S·cell|²."""
    positions = positions.to(torch.float64)
    vectors = (positions[pair_index[1]] - positions[pair_index[0]]
               + pair_shifts.to(torch.float64) @ cell.to(torch.float64).reshape(3, 3))
    return vectors.pow(2).sum(dim=1)
