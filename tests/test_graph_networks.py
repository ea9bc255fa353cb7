"""DimeNet++, CGCNN and MPNN beyond the physics every model passes (tests/test_physics.py):
DimeNet++'s angular basis against PyG's, its partner sums against explicit triplets, collinear
triplets, periodic images as triplet partners, and the hyper-parameter errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import ethanol_like, make_dimenet, rattled_cell, triclinic_pair

from nnpot import AtomicGraph
from nnpot.models import CGCNN, MPNN, DimeNetPP, HyperParameterError


def test_cosine_spherical_basis_equals_pyg_on_the_angle():
    """PyG's functions, evaluated by recurrence: equal to PyG's sympy expressions up to PyG's
    normalisers, which scipy evaluates in float32 (relative 1e-7)."""
    from torch_geometric.nn.models.dimenet import SphericalBasisLayer
    from torch_geometric.nn.models.dimenet_utils import bessel_basis  # noqa: F401 (sympy)
    ours = DimeNetPP(["Cu"], cutoff=4.0, n_spherical=5, n_radial=3).sbf
    theirs = SphericalBasisLayer(5, 3, 4.0)
    angle = torch.linspace(0.01, 3.13, 25, dtype=torch.float64)
    dist = torch.linspace(0.8, 3.9, 25, dtype=torch.float64)
    index = torch.arange(25)
    expected = theirs(dist, angle, index)
    assert torch.allclose(ours(dist, torch.cos(angle), index), expected, rtol=1e-6,
                          atol=1e-9 * float(expected.abs().max()))


@pytest.mark.parametrize("structure", ["bulk", "triclinic pair", "molecule"])
def test_partner_sums_equal_the_sum_over_explicit_triplets(structure, monkeypatch):
    """The interaction's triplet sum by the addition theorem (``PartnerSums``, the eager path)
    equals PyG's block on explicit triplets (the path of a traced export) in float64: energy,
    forces and stress, at the paper's 7 degrees."""
    from nnpot.models import dimenet

    atoms = {"bulk": rattled_cell(), "triclinic pair": triclinic_pair(),
             "molecule": ethanol_like()}[structure]
    species = sorted(set(atoms.get_chemical_symbols()))
    potential = make_dimenet(species=species, n_spherical=7, n_radial=4)
    graph = AtomicGraph.from_atoms(atoms, potential.cutoff)
    periodic = bool(atoms.pbc.all())
    monkeypatch.setattr(dimenet.PartnerSums, "MIN_PARTNERS_PER_EDGE", 0)   # however few
    by_partners = potential(graph, forces=True, stress=periodic)
    used = []
    monkeypatch.setattr(dimenet, "interaction_by_partner_sums",
                        lambda *args: used.append(1) or pytest.fail("partner sums used"))
    monkeypatch.setattr(dimenet.PartnerSums, "make", lambda *args: None)
    by_triplets = potential(graph, forces=True, stress=periodic)
    assert not used
    for key in ("energy", "forces", "stress") if periodic else ("energy", "forces"):
        scale = float(by_triplets[key].abs().max())
        torch.testing.assert_close(by_partners[key], by_triplets[key], rtol=0,
                                   atol=1e-13 * max(scale, 1.0))


def test_partner_sums_are_used_where_edges_have_many_partners(monkeypatch):
    """Eager evaluation sums by partner sums in a dense crystal (fcc Cu at 5 Å: 41 partners per
    edge) and over explicit triplets in a small molecule (ethanol: at most 8)."""
    from ase.build import bulk, molecule

    from nnpot.models import dimenet

    used = []
    original = dimenet.interaction_by_partner_sums
    monkeypatch.setattr(dimenet, "interaction_by_partner_sums",
                        lambda *args: used.append(1) or original(*args))
    crystal = make_dimenet(species=("Cu",), cutoff=5.0)
    crystal(AtomicGraph.from_atoms(bulk("Cu", "fcc", a=3.61, cubic=True), 5.0), forces=True)
    assert len(used) == len(crystal.model.interaction_blocks)
    organic = make_dimenet(species=("C", "H", "O"), cutoff=5.0)
    organic(AtomicGraph.from_atoms(molecule("CH3CH2OH"), 5.0), forces=True)
    assert len(used) == len(crystal.model.interaction_blocks)


def _forces_and_fd(potential, atoms, delta=1e-5):
    graph = AtomicGraph.from_atoms(atoms, potential.cutoff)
    forces = potential(graph, forces=True)["forces"].detach().numpy()
    numeric = np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, c] += sign * delta
                energies.append(float(potential(AtomicGraph.from_atoms(moved, potential.cutoff))
                                      ["energy"][0]))
            numeric[a, c] = -(energies[0] - energies[1]) / (2 * delta)
    return forces, numeric


def test_collinear_triplets_give_finite_exact_forces():
    """Three atoms on a line (angles 0 and π at every centre) and a linear periodic chain."""
    potential = make_dimenet(species=("Cu",))
    molecule = Atoms("Cu3", positions=[[0, 0, 0], [1.4, 0, 0], [2.8, 0, 0]])
    chain = Atoms("Cu2", positions=[[0, 0, 0], [1.3, 0, 0]], cell=[2.6, 8, 8],
                  pbc=[True, False, False])
    for atoms in (molecule, chain):
        forces, numeric = _forces_and_fd(potential, atoms)
        assert np.isfinite(forces).all()
        np.testing.assert_allclose(forces, numeric, atol=1e-7)


def test_periodic_images_of_the_target_are_triplet_partners():
    """One atom in a cell smaller than the cutoff: every neighbour is an image of the atom
    itself, so a triplet's k is an image of its i; they must count (energy changes with the
    angle between the images), while the edge back along j → i does not."""
    potential = make_dimenet(species=("Cu",))
    square = Atoms("Cu", positions=[[0, 0, 0]], cell=[2.5, 2.5, 20], pbc=[True, True, False])
    sheared = square.copy()
    sheared.set_cell([[2.5, 0, 0], [0.8, 2.4, 0], [0, 0, 20]], scale_atoms=False)
    energies = [float(potential(AtomicGraph.from_atoms(a, potential.cutoff))["energy"][0])
                for a in (square, sheared)]
    assert energies[0] != pytest.approx(energies[1], abs=1e-6)


@pytest.mark.parametrize("model,params,message", [
    (DimeNetPP, {"n_blocks": 0}, "n_blocks must be ≥ 1"),
    (DimeNetPP, {"n_spherical": 1}, "n_spherical must be ≥ 2"),
    (CGCNN, {"n_gaussians": 1}, "n_gaussians must be ≥ 2"),
    (CGCNN, {"n_layers": "3"}, "n_layers must be an integer"),
    (MPNN, {"n_steps": 0}, "n_steps must be ≥ 1"),
])
def test_bad_hyperparameters_name_the_parameter(model, params, message):
    with pytest.raises(HyperParameterError, match=message):
        model(["Si"], **params)
