"""Shared fixtures: small random potentials and test structures."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from nnpot import AtomicGraph, Potential
from nnpot.core.graph import pair_vectors
from nnpot.models import CGCNN, HDNNP, MACE, MPNN, DimeNetPP, NequIP, SchNet

# Under pytest-xdist (`make test` runs two workers) each worker computes on its share of the
# cores, so that the workers do not oversubscribe them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1)
                              // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

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


# A small set that exercises every kind of function: radial, narrow and wide angular, with
# shifts and their own (shorter) cutoffs.
HDNNP_FUNCTIONS = (
    [{"type": "G2", "eta": eta, "rs": rs, "cutoff": 4.0} for eta, rs in
     ((0.5, 0.0), (2.0, 1.5), (2.0, 2.5), (4.0, 3.2))]
    + [{"type": "G3", "eta": 0.1, "zeta": z, "lambda": lam, "cutoff": 3.5}
       for z in (1, 4) for lam in (1, -1)]
    + [{"type": "G9", "eta": eta, "zeta": z, "lambda": lam, "cutoff": 3.0, "rs": 0.3}
       for eta in (0.05, 0.3) for z in (2, 16) for lam in (1, -1)])


def make_hdnnp(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0) -> Potential:
    """A small randomly initialised HDNNP whose descriptor statistics come from real cells, so
    the centring and scaling are exercised too."""
    torch.manual_seed(seed)
    model = HDNNP(species=list(species), cutoff=cutoff, symmetry_functions=HDNNP_FUNCTIONS,
                  hidden=(12, 10), activation="tanh")
    model.fit_statistics(statistics_inputs(model, cutoff))
    with torch.no_grad():  # forces of O(0.1–1) eV/Å, so derivative tests compare real numbers
        model.networks.weights[-1].mul_(5.0)
    e0 = {s: -1.0 - k for k, s in enumerate(species)}
    return Potential(model, e0=e0, scale=1.3, shift=0.1).to(dtype)


def statistics_inputs(model, cutoff: float) -> list:
    """Model inputs of a few real cells, for a model's statistics hook."""
    inputs = []
    for cell in [rattled_cell(seed=k) for k in range(3)] + [triclinic_pair()]:
        if "O" not in model.species:
            cell.symbols[:] = model.species[0]
        graph = AtomicGraph.from_atoms(cell, cutoff)
        species_index = torch.tensor([model.species.index(s) for s in cell.get_chemical_symbols()])
        vec = pair_vectors(graph.pos, graph.cell, graph.pair_index, graph.pair_shifts, None)
        inputs.append((species_index, graph.pair_index, vec))
    return inputs


def make_nequip(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0,
                **hparams) -> Potential:
    """A small randomly initialised NequIP (l_max 2) with its neighbour count from real cells."""
    torch.manual_seed(seed)
    hparams = {"l_max": 2, "n_features": 4, "n_layers": 2, "n_bessel": 6,
               "radial_mlp": (8,), **hparams}
    model = NequIP(species=list(species), cutoff=cutoff, **hparams)
    model.fit_statistics(statistics_inputs(model, cutoff))
    e0 = {s: -1.0 - k for k, s in enumerate(species)}
    return Potential(model, e0=e0, scale=1.3, shift=0.1).to(dtype)


def make_mace(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0,
              **hparams) -> Potential:
    """A small randomly initialised MACE (l_max 2, max_L 1, correlation 3, two layers) with its
    neighbour count from real cells."""
    torch.manual_seed(seed)
    hparams = {"n_features": 4, "l_max": 2, "n_bessel": 6, "radial_mlp": (8,), **hparams}
    model = MACE(species=list(species), cutoff=cutoff, **hparams)
    model.fit_statistics(statistics_inputs(model, cutoff))
    with torch.no_grad():  # forces of O(0.1–1) eV/Å, so derivative tests compare real numbers
        for readout in model.readouts:
            for parameter in readout.parameters():
                parameter.mul_(4.0)
    e0 = {s: -1.0 - k for k, s in enumerate(species)}
    return Potential(model, e0=e0, scale=1.3, shift=0.1).to(dtype)


def make_hdnnp_zbl(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0) -> Potential:
    """``make_hdnnp`` with the ZBL repulsion under it: in ``rattled_cell`` and
    ``triclinic_pair`` many pairs lie inside their covalent-radius sums (Cu–Cu 2.64 Å, Cu–O
    1.98 Å), so the derivative and invariance tests exercise it."""
    plain = make_hdnnp(dtype, species, cutoff, seed)
    return Potential(plain.model, e0=plain.e0_dict(), scale=float(plain.scale),
                     shift=float(plain.shift), pair_repulsion="zbl").to(dtype)


def _graph_network(model_class, dtype, species, cutoff, seed, hparams) -> Potential:
    """A small randomly initialised CGCNN or MPNN, its readout scaled so that forces are
    O(0.1–1) eV/Å and the derivative tests compare meaningful numbers."""
    torch.manual_seed(seed)
    model = model_class(species=list(species), cutoff=cutoff, **hparams)
    with torch.no_grad():
        model.readout[-1].weight.mul_(20.0)
    e0 = {s: -1.0 - k for k, s in enumerate(species)}
    return Potential(model, e0=e0, scale=1.3, shift=0.1).to(dtype)


def make_cgcnn(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0, **hparams):
    return _graph_network(CGCNN, dtype, species, cutoff, seed,
                          {"n_features": 8, "n_layers": 2, "n_gaussians": 10, **hparams})


def make_mpnn(dtype=torch.float64, species=("Cu", "O"), cutoff=4.0, seed=0, **hparams):
    return _graph_network(MPNN, dtype, species, cutoff, seed,
                          {"n_features": 6, "n_steps": 2, "n_gaussians": 8, "edge_hidden": 8,
                           **hparams})


def make_dimenet(dtype=torch.float64, species=("Cu", "O"), cutoff=3.2, seed=0, **hparams):
    """A small DimeNet++; its output layers (zeros at initialisation, as in the paper) drawn at
    random so that the derivative tests compare meaningful numbers."""
    torch.manual_seed(seed)
    hparams = {"n_features": 8, "n_blocks": 2, "n_spherical": 3, "n_radial": 3,
               "int_emb_size": 4, "basis_emb_size": 4, "out_emb_size": 8, **hparams}
    model = DimeNetPP(species=list(species), cutoff=cutoff, **hparams)
    with torch.no_grad():
        for block in model.output_blocks:
            block.lin.weight.normal_(0.0, 0.2)
    e0 = {s: -1.0 - k for k, s in enumerate(species)}
    return Potential(model, e0=e0, scale=1.3, shift=0.1).to(dtype)


MODEL_MAKERS = {"SchNet": make_potential, "HDNNP": make_hdnnp, "NequIP": make_nequip,
                "MACE": make_mace, "HDNNP+ZBL": make_hdnnp_zbl, "CGCNN": make_cgcnn,
                "MPNN": make_mpnn, "DimeNetPP": make_dimenet,
                # one layer is both the first (element-dependent A) and the last (scalars only)
                "MACE-1layer": partial(make_mace, n_layers=1)}


@pytest.fixture(params=sorted(MODEL_MAKERS))
def potential64(request) -> Potential:
    """Each physics test runs for every model: SchNet, HDNNP, NequIP, MACE (two layers and
    one), HDNNP with ZBL, CGCNN, MPNN and DimeNet++."""
    return MODEL_MAKERS[request.param]()


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
