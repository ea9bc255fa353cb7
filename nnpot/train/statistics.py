"""Energy reference and scale from the training data: E0 per element and the force scale."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols


def element_counts(numbers: np.ndarray, atom_ptr: np.ndarray, frames: Sequence[int],
                   species: Sequence[str]) -> np.ndarray:
    """[F, S] number of atoms of each species in each of the given frames."""
    column = {atomic_numbers[s]: k for k, s in enumerate(species)}
    counts = np.zeros((len(frames), len(species)))
    for row, k in enumerate(frames):
        z, n = np.unique(numbers[atom_ptr[k]:atom_ptr[k + 1]], return_counts=True)
        for zi, ni in zip(z, n):
            counts[row, column[int(zi)]] = ni
    return counts


def fit_e0(counts: np.ndarray, energies: np.ndarray, species: Sequence[str]) -> dict[str, float]:
    """Least-squares E0 per element (float64): min ‖counts·E0 − E‖².

    When the composition never varies (e.g. water is always H2O) the split between elements is
    undetermined; the minimum-norm solution is taken, which fits the data equally well.
    """
    solution, *_ = np.linalg.lstsq(counts.astype(np.float64), energies.astype(np.float64),
                                   rcond=None)
    return {s: float(v) for s, v in zip(species, solution)}


def isolated_atom_e0(numbers: np.ndarray, atom_ptr: np.ndarray, energies: np.ndarray,
                     species: Sequence[str]) -> dict[str, float]:
    """E0 from single-atom frames; every species needs one."""
    e0 = {}
    for k in range(len(atom_ptr) - 1):
        if atom_ptr[k + 1] - atom_ptr[k] == 1:
            e0.setdefault(chemical_symbols[int(numbers[atom_ptr[k]])], float(energies[k]))
    missing = [s for s in species if s not in e0]
    if missing:
        raise ValueError(f"data.e0 = isolated_atoms, but the training data has no single-atom "
                         f"frame for {missing}")
    return {s: e0[s] for s in species}


def force_scale(forces: np.ndarray) -> float:
    """RMS of the force components, eV/Å (the natural scale of the per-atom energy network)."""
    return float(np.sqrt(np.mean(forces**2))) if forces.size else 1.0
