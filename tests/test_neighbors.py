"""Neighbor lists: every backend gives exactly ASE's set of (i, j, S)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import given, settings
from hypothesis import strategies as st

from nnpot.core.neighbors import mirror_pairs, neighbor_list, neighbor_pairs

CPU_BACKENDS = ["vesin", "matscipy", "torch"]


def as_set(i, j, shifts):
    i, j, shifts = (np.asarray(x) for x in (i, j, shifts))
    return set(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist())))


def heights(cell):
    cell = np.asarray(cell)
    cross = np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]])
    return abs(np.linalg.det(cell)) / np.linalg.norm(cross, axis=1)


@st.composite
def systems(draw):
    n_atoms = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.0, 6.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
    pbc = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    # Some atoms outside the cell: shifts must refer to the positions as given.
    positions = rng.uniform(-0.3, 1.3, (n_atoms, 3)) @ cell
    cutoff = draw(st.floats(0.5, 3.0)) * heights(cell).min()
    return positions, cell, np.array(pbc), cutoff


@settings(max_examples=60, deadline=None)
@given(systems())
def test_every_backend_matches_ase(system):
    positions, cell, pbc, cutoff = system
    atoms = Atoms(f"H{len(positions)}", positions=positions, cell=cell, pbc=pbc)
    reference = as_set(*ase_neighbor_list("ijS", atoms, cutoff))
    for backend in CPU_BACKENDS:
        edge_index, shifts = neighbor_list(positions, cell, pbc, cutoff, backend=backend)
        assert edge_index.dtype == torch.long and shifts.dtype == torch.long
        assert as_set(edge_index[0], edge_index[1], shifts) == reference, backend


def test_pair_vectors_follow_the_convention():
    atoms = Atoms("H3", positions=[[0.1, 0.2, 0.3], [1.5, 0.1, 2.9], [2.8, 2.9, 0.2]],
                  cell=[[3.0, 0, 0], [0.5, 3.0, 0], [0, 0.4, 3.1]], pbc=True)
    edge_index, shifts = neighbor_list(atoms.positions, atoms.cell.array, True, 4.0)
    i, j = edge_index.numpy()
    vectors = atoms.positions[j] - atoms.positions[i] + shifts.numpy() @ atoms.cell.array
    _, _, reference = ase_neighbor_list("ijD", atoms, 4.0)
    assert np.allclose(np.sort(np.linalg.norm(vectors, axis=1)),
                       np.sort(np.linalg.norm(reference, axis=1)))
    assert (np.linalg.norm(vectors, axis=1) < 4.0).all()


def test_backends_give_the_same_order():
    atoms = Atoms("Cu4", scaled_positions=np.random.default_rng(1).random((4, 3)),
                  cell=[[3.1, 0, 0], [1.0, 2.9, 0], [0.3, 0.2, 3.3]], pbc=True)
    results = [neighbor_pairs(atoms.positions, atoms.cell.array, True, 5.0, backend=b)
               for b in CPU_BACKENDS]
    for pair_index, pair_shifts in results[1:]:
        assert torch.equal(pair_index, results[0][0]) and torch.equal(pair_shifts, results[0][1])


def test_half_list_mirrors_into_full_list():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.2, 0.3, 0.1]], cell=np.eye(3) * 2.5, pbc=True)
    pair_index, pair_shifts = neighbor_pairs(atoms.positions, atoms.cell.array, True, 3.0)
    edge_index, shifts = mirror_pairs(pair_index, pair_shifts)
    assert edge_index.shape[1] == 2 * pair_index.shape[1]
    forward = as_set(edge_index[0], edge_index[1], shifts)
    backward = as_set(edge_index[1], edge_index[0], -shifts)
    assert forward == backward  # both directions present
    # an atom meets its own images, never itself at zero shift
    assert not any(i == j and s == (0, 0, 0) for i, j, s in forward)
    assert any(i == j for i, j, _ in forward)


def test_molecule_without_cell():
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 5.0, 0]])
    for backend in CPU_BACKENDS:
        edge_index, shifts = neighbor_list(positions, None, False, 1.5, backend=backend)
        assert as_set(edge_index[0], edge_index[1], shifts) == {(0, 1, (0, 0, 0)), (1, 0, (0, 0, 0))}


def test_torch_backend_keeps_the_device_of_the_input():
    positions = torch.rand(5, 3, dtype=torch.float32) * 3
    edge_index, shifts = neighbor_list(positions, torch.eye(3) * 3, True, 2.0, backend="torch")
    assert edge_index.device == positions.device and shifts.device == positions.device


@pytest.mark.parametrize("bad, message", [
    (dict(positions=[[0, 0, float("nan")]]), "NaN"),
    (dict(cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]]), "singular"),
    (dict(cell=np.zeros((3, 3))), "singular"),
    (dict(cutoff=0.0), "cutoff"),
    (dict(cutoff=-1.0), "cutoff"),
    (dict(backend="magic"), "backend"),
])
def test_bad_input_is_a_clear_error(bad, message):
    args = dict(positions=[[0, 0, 0], [1, 0, 0]], cell=np.eye(3) * 3, pbc=True, cutoff=2.0,
                backend="auto")
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        neighbor_list(**args)


def test_torch_cluster_refuses_periodic_cells():
    with pytest.raises(ValueError, match="non-periodic"):
        neighbor_list([[0, 0, 0], [1, 0, 0]], np.eye(3) * 3, True, 2.0, backend="torch_cluster")


@pytest.mark.skipif(importlib.util.find_spec("torch_cluster") is None,
                    reason="torch-cluster (optional extra) not installed")
def test_torch_cluster_matches_ase_for_molecules():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 6, (40, 3))
    atoms = Atoms("H40", positions=positions)
    reference = as_set(*ase_neighbor_list("ijS", atoms, 2.5))
    edge_index, shifts = neighbor_list(positions, None, False, 2.5, backend="torch_cluster")
    assert as_set(edge_index[0], edge_index[1], shifts) == reference
