"""The selection maths of active learning: physical-distance checks, per-structure
fingerprints (symmetry-function mean and spread) and farthest-point sampling."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def shortest_distance(atoms: Atoms, reach: float = 3.0) -> float:
    """The shortest distance between two atoms (periodic images included), Å; ``reach`` if
    no two atoms are closer than that."""
    from ase.neighborlist import neighbor_list

    distances = neighbor_list("d", atoms, reach)
    return float(distances.min()) if len(distances) else reach


def structure_fingerprints(frames: list[Atoms], species: list[str], cutoff: float) -> np.ndarray:
    """Per-structure fingerprints [F, 2D]: mean and spread over atoms of the default symmetry
    functions of each atom (``nnpot.models.hdnnp.symmetry_functions``), for farthest-point sampling."""
    import torch

    from ..core.graph import AtomicGraph, pair_vectors
    from ..models.hdnnp.symmetry_functions import SymmetryFunctionDescriptor, default_functions

    descriptor = SymmetryFunctionDescriptor(len(species), default_functions(cutoff)).double()
    rows = []
    for atoms in frames:
        graph = AtomicGraph.from_atoms(atoms, cutoff)
        index = torch.tensor([species.index(s) for s in atoms.get_chemical_symbols()])
        vec = pair_vectors(graph.pos, graph.cell, graph.pair_index, graph.pair_shifts, None)
        with torch.no_grad():
            per_atom = descriptor(index, graph.pair_index, vec).numpy()
        rows.append(np.concatenate([per_atom.mean(axis=0), per_atom.std(axis=0)]))
    return np.asarray(rows)


def farthest_point_sampling(points: np.ndarray, count: int, first: int) -> list[int]:
    """``count`` indices of ``points`` [F, D] (columns standardised), starting at ``first``,
    each next one the point farthest from those already taken."""
    spread = points.std(axis=0)
    scaled = (points - points.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    chosen = [first]
    distance = np.linalg.norm(scaled - scaled[first], axis=1)
    while len(chosen) < min(count, len(points)):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(scaled - scaled[nxt], axis=1))
    return chosen
