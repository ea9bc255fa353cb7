"""Energy reference and scale from the training data: E0 per element and the force scale.

``scan_dataset`` reads the cache in blocks of atoms, so these statistics need memory for one
block and per-frame counts, never for the whole data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols


def fit_e0(counts: np.ndarray, energies: np.ndarray, species: Sequence[str]) -> dict[str, float]:
    """Least-squares E0 per element (float64): min ‖counts·E0 − E‖².

    When the composition never varies (e.g. water is always H2O) the split between elements is
    undetermined; the minimum-norm solution is taken, which fits the data equally well.
    """
    solution, *_ = np.linalg.lstsq(counts.astype(np.float64), energies.astype(np.float64),
                                   rcond=None)
    return {s: float(v) for s, v in zip(species, solution)}


def isolated_atom_e0(scan: DatasetScan, energies: np.ndarray,
                     species: Sequence[str]) -> dict[str, float]:
    """E0 from single-atom frames (``energies`` indexed by cache frame); every species needs one."""
    e0 = {}
    for row, k in enumerate(scan.frames):
        if scan.counts[row].sum() == 1:
            e0.setdefault(scan.species[int(np.argmax(scan.counts[row]))], float(energies[k]))
    missing = [s for s in species if s not in e0]
    if missing:
        raise ValueError(f"data.e0 = isolated_atoms, but the training data has no single-atom "
                         f"frame for {missing}")
    return {s: e0[s] for s in species}


@dataclass
class DatasetScan:
    """What the statistics need from a data set, gathered in one streaming pass.

    ``species`` sorted by atomic number; ``counts`` [F, S] atoms of each species per frame (in
    the order of ``frames``, the cache frame numbers); the force sum of squares (eV²/Å²) and
    number of components over frames with forces; ``max_abs_force`` eV/Å.
    """
    species: list[str]
    frames: np.ndarray
    counts: np.ndarray
    force_sum_squares: float
    force_components: int
    max_abs_force: float

    @property
    def force_rms(self) -> float:
        """RMS force component, eV/Å (1.0 when no frame has forces)."""
        if self.force_components == 0:
            return 1.0
        return float(np.sqrt(self.force_sum_squares / self.force_components))


def scan_dataset(dataset, max_atoms: int = 1 << 20) -> DatasetScan:
    """One pass over ``dataset`` (a ``GraphDataset``) in blocks of ``max_atoms`` atoms."""
    has_forces = dataset.arrays("has_forces")
    frames, per_frame, sum_squares, components, max_force = [], [], 0.0, 0, 0.0
    for block, arrays in dataset.atom_blocks(("numbers", "forces"), max_atoms):
        for k, rows in zip(block, arrays):
            frames.append(int(k))
            per_frame.append(np.unique(rows["numbers"], return_counts=True))
            if has_forces[k] and rows["forces"].size:
                sum_squares += float(np.square(rows["forces"]).sum())
                components += rows["forces"].size
                max_force = max(max_force, float(np.abs(rows["forces"]).max()))
    present = sorted({int(z) for numbers, _ in per_frame for z in numbers})
    species = [chemical_symbols[z] for z in present]
    column = {z: c for c, z in enumerate(present)}
    counts = np.zeros((len(frames), len(species)))
    for row, (numbers, n) in enumerate(per_frame):
        counts[row, [column[int(z)] for z in numbers]] = n
    return DatasetScan(species, np.asarray(frames, dtype=np.int64), counts, sum_squares,
                       components, max_force)
