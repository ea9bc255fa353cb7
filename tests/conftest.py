"""Shared fixtures: small random potentials and test structures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from nnpot import Potential
from nnpot.models import SchNet

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """A file of ../shared/data; the test is skipped, saying why, in a clone without it."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{name} is not in {SHARED_DATA} (a clone without ../shared; CI has it)")
    return path


def make_potential(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0,
                   **hparams) -> Potential:
    """A small randomly initialised SchNet potential (deterministic for a seed)."""
    torch.manual_seed(seed)
    hparams = {"n_features": 16, "n_interactions": 2, "n_rbf": 12, **hparams}
    model = SchNet(species=list(species), cutoff=cutoff, **hparams)
    # Larger output weights than the default init, so forces are O(0.1–1) eV/Å and the
    # derivative tests compare meaningful numbers.
    with torch.no_grad():
        model.readout[-1].weight.mul_(20.0)
    e0 = {s: -1.0 - k for k, s in enumerate(species)}
    return Potential(model, e0=e0, scale=1.3, shift=0.1).to(dtype)


@pytest.fixture
def potential64() -> Potential:
    return make_potential()


def triclinic_pair() -> Atoms:
    """2 atoms in a strained triclinic cell whose shortest height (≈2.2 Å) is below the cutoff."""
    cell = [[2.6, 0.0, 0.0], [0.9, 2.5, 0.0], [0.4, 0.7, 2.3]]
    return Atoms("CuO", scaled_positions=[[0.1, 0.2, 0.05], [0.55, 0.4, 0.6]], cell=cell, pbc=True)


def rattled_cell(seed: int = 3) -> Atoms:
    """32 atoms: fcc Cu 2×2×2 (conventional) with 4 O, rattled and sheared."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.symbols[[1, 7, 12, 30]] = "O"
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 1] -= 0.3
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def ethanol_like() -> Atoms:
    """An isolated molecule: no cell, no periodicity."""
    rng = np.random.default_rng(0)
    return Atoms("Cu3O3", positions=rng.uniform(0, 3.0, (6, 3)))
