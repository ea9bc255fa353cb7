"""Physics every model must pass (docs/architecture.md), in float64, for every model (the ``potential64``
fixture runs each test for every model in conftest.MODEL_MAKERS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from conftest import ethanol_like, rattled_cell, triclinic_pair
from scipy.spatial.transform import Rotation

from nnpot import AtomicGraph, NNPCalculator, batch_graphs

STRUCTURES = {"triclinic_pair": triclinic_pair, "rattled_32": rattled_cell}


def attach(atoms, potential, **kwargs):
    atoms = atoms.copy()
    atoms.calc = NNPCalculator(potential, **kwargs)
    return atoms


@pytest.mark.parametrize("name", STRUCTURES)
def test_forces_are_minus_the_energy_gradient(potential64, name):
    atoms = attach(STRUCTURES[name](), potential64)
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    assert np.abs(forces).max() > 1e-2  # a meaningful comparison
    assert np.abs(forces - numerical).max() < 1e-6


@pytest.mark.parametrize("name", STRUCTURES)
def test_stress_is_the_strain_derivative(potential64, name):
    atoms = attach(STRUCTURES[name](), potential64)
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(stress).max() > 1e-4
    assert np.abs(stress - numerical).max() < 1e-6


def test_per_atom_stresses_sum_to_the_stress_and_follow_the_atoms(potential64):
    structures = [rattled_cell(), triclinic_pair()]
    for atoms in structures:
        atoms = attach(atoms, potential64)
        stresses = atoms.get_stresses()
        assert stresses.shape == (len(atoms), 6) and np.abs(stresses).max() > 1e-4
        np.testing.assert_allclose(stresses.sum(axis=0), atoms.get_stress(), rtol=0, atol=1e-12)
    order = np.random.default_rng(0).permutation(len(structures[0]))
    permuted = attach(structures[0][order], potential64)
    np.testing.assert_allclose(permuted.get_stresses(), attach(structures[0], potential64)
                               .get_stresses()[order], rtol=0, atol=1e-12)
    # in a batch, each structure's atoms sum to that structure's stress
    graphs = batch_graphs([AtomicGraph.from_atoms(a, potential64.cutoff) for a in structures])
    out = potential64(graphs, stress=True, stresses=True)
    sums = torch.zeros_like(out["stress"]).index_add(0, graphs.batch, out["stresses"])
    torch.testing.assert_close(sums, out["stress"], rtol=0, atol=1e-12)
    slab = rattled_cell()
    slab.pbc = [True, True, False]
    with pytest.raises(PropertyNotImplementedError):
        attach(slab, potential64).get_stresses()


def test_invariances(potential64):
    atoms = attach(rattled_cell(), potential64)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()

    moved = attach(rattled_cell(), potential64)
    moved.translate([0.37, -1.2, 2.5])
    assert moved.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    assert np.allclose(moved.get_forces(), forces, atol=1e-10)

    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = attach(rattled_cell(), potential64)
    rotated.set_cell(rotated.cell.array @ rotation.T, scale_atoms=True)
    assert rotated.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    assert np.allclose(rotated.get_forces(), forces @ rotation.T, atol=1e-10)
    stress_matrix = rotated.get_stress(voigt=False)
    reference = rotation @ atoms.get_stress(voigt=False) @ rotation.T
    assert np.allclose(stress_matrix, reference, atol=1e-12)

    order = np.random.default_rng(0).permutation(len(atoms))
    permuted = attach(rattled_cell()[order], potential64)
    assert permuted.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    assert np.allclose(permuted.get_forces(), forces[order], atol=1e-10)
    assert np.allclose(permuted.get_potential_energies(), atoms.get_potential_energies()[order])

    wrapped = rattled_cell()
    wrapped.positions += wrapped.cell.array.sum(axis=0) * 0.45  # many atoms leave the cell
    outside = attach(wrapped, potential64)
    inside = wrapped.copy()
    inside.wrap()
    inside = attach(inside, potential64)
    assert outside.get_potential_energy() == pytest.approx(inside.get_potential_energy(), abs=1e-10)
    assert np.allclose(outside.get_forces(), inside.get_forces(), atol=1e-10)
    assert np.allclose(outside.get_stress(), inside.get_stress(), atol=1e-12)


@pytest.mark.parametrize("name", STRUCTURES)
def test_energy_is_extensive(potential64, name):
    unit = attach(STRUCTURES[name](), potential64)
    supercell = attach(STRUCTURES[name]().repeat((2, 2, 2)), potential64)
    assert supercell.get_potential_energy() == pytest.approx(8 * unit.get_potential_energy(),
                                                             rel=1e-10)
    assert np.allclose(supercell.get_stress(), unit.get_stress(), atol=1e-12)


def test_per_atom_energies_sum_to_the_energy(potential64):
    atoms = attach(rattled_cell(), potential64)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(),
                                                                 abs=1e-10)


def test_batched_evaluation_equals_one_by_one(potential64):
    structures = [triclinic_pair(), rattled_cell(), rattled_cell(seed=5)[:20], ethanol_like(),
                  triclinic_pair().repeat((2, 1, 1))]
    graphs = [AtomicGraph.from_atoms(a, potential64.cutoff) for a in structures]
    batched = potential64(batch_graphs(graphs), forces=True)
    offset = 0
    for k, graph in enumerate(graphs):
        single = potential64(graph, forces=True)
        n = graph.num_nodes
        assert float(batched["energy"][k].detach()) == pytest.approx(
            float(single["energy"][0].detach()), abs=1e-10)
        assert torch.allclose(batched["forces"][offset:offset + n], single["forces"], atol=1e-10)
        offset += n
    periodic = [g for g in graphs if bool(g.pbc.all())]
    stress_batched = potential64(batch_graphs(periodic), stress=True)["stress"]
    for k, graph in enumerate(periodic):
        assert torch.allclose(stress_batched[k], potential64(graph, stress=True)["stress"][0],
                              atol=1e-12)


def test_isolated_molecule(potential64):
    atoms = attach(ethanol_like(), potential64)
    assert np.isfinite(atoms.get_potential_energy())
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    assert np.abs(atoms.get_forces() - numerical).max() < 1e-6
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_structures_without_pairs(potential64):
    """One atom, and two atoms farther apart than the cutoff: energies are the per-atom ones,
    forces exactly zero (the models' pair code paths with zero pairs)."""
    from ase import Atoms

    far = 2.0 * potential64.cutoff
    for atoms in (Atoms("Cu", positions=[[0, 0, 0]]),
                  Atoms("CuO", positions=[[0, 0, 0], [0, 0, far]])):
        atoms = attach(atoms, potential64)
        assert np.isfinite(atoms.get_potential_energy())
        assert np.array_equal(atoms.get_forces(), np.zeros((len(atoms), 3)))


def test_mixed_pbc_slab_has_forces_but_no_stress(potential64):
    slab = rattled_cell()
    slab.pbc = [True, True, False]
    atoms = attach(slab, potential64)
    assert np.abs(atoms.get_forces() - calculate_numerical_forces(atoms, eps=1e-5)).max() < 1e-6
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_pymatgen_structure_gives_the_same_graph_energy(potential64):
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = rattled_cell()
    structure = AseAtomsAdaptor.get_structure(atoms)
    from_structure = potential64(AtomicGraph.from_structure(structure, potential64.cutoff))
    from_atoms = potential64(AtomicGraph.from_atoms(atoms, potential64.cutoff))
    assert float(from_structure["energy"][0].detach()) == pytest.approx(
        float(from_atoms["energy"][0].detach()), abs=1e-10)


def test_skin_gives_identical_trajectories(potential64):
    def run(skin):
        atoms = rattled_cell()
        thermalize_momenta(atoms, temperature_K=1500, rng=np.random.default_rng(7))
        atoms.calc = NNPCalculator(potential64, skin=skin)
        dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
        energies = []
        dyn.attach(lambda: energies.append(atoms.get_potential_energy()), interval=1)
        dyn.run(50)
        return atoms.positions.copy(), np.array(energies), atoms.calc

    positions0, energies0, _ = run(0.0)
    positions1, energies1, calc = run(0.5)
    assert np.array_equal(positions0, positions1)
    assert np.array_equal(energies0, energies1)
    assert np.ptp(energies0) > 1e-3  # the atoms really moved


def test_nve_conserves_energy(potential64):
    """Velocity Verlet over 50 fs: the total energy wanders by a tiny amount that falls as dt²
    when the step is halved — the mark of exact forces and a symplectic integrator.

    The random test models pull atoms together with forces of several eV/Å; scaled by 0.05
    their forces are thermal-sized and the cell stays intact for the window."""
    with torch.no_grad():
        potential64.scale.mul_(0.05)

    def wander(timestep_fs: float) -> float:
        atoms = rattled_cell()
        thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(3))
        atoms.calc = NNPCalculator(potential64, skin=0.5)
        dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
        totals = []
        steps = int(round(50 / timestep_fs))
        dyn.attach(lambda: totals.append(atoms.get_total_energy()), interval=steps // 20)
        dyn.run(steps)
        assert atoms.get_temperature() > 100 and atoms.calc.min_distance > 1.0
        return float(np.ptp(totals))

    coarse, fine = wander(0.5), wander(0.25)
    # A ZBL repulsion is not scaled with the network: it pushes the compressed Cu–Cu pairs of
    # the rattled cell apart, the atoms heat to ~800 K and the wander is ~4× larger.
    limit = 5e-5 if potential64.repulsion is not None else 1e-5
    assert coarse / len(rattled_cell()) < limit  # eV/atom over 50 fs
    assert 3.0 < coarse / fine < 5.5, (coarse, fine)


def test_float32_agrees_with_float64(potential64):
    atoms64 = attach(rattled_cell(), potential64)
    atoms32 = attach(rattled_cell(), potential64, dtype="float32")
    assert atoms32.calc.potential.dtype == torch.float32
    assert potential64.dtype == torch.float64  # the calculator copied, not changed, the potential
    assert atoms32.get_potential_energy() == pytest.approx(atoms64.get_potential_energy(), abs=1e-4)
    assert np.allclose(atoms32.get_forces(), atoms64.get_forces(), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(potential64):
    cpu = attach(rattled_cell(), potential64)
    gpu = attach(rattled_cell(), potential64, device="cuda")
    assert gpu.get_potential_energy() == pytest.approx(cpu.get_potential_energy(), abs=1e-9)
    assert np.allclose(gpu.get_forces(), cpu.get_forces(), atol=1e-9)
    assert np.allclose(gpu.get_stress(), cpu.get_stress(), atol=1e-11)


def test_torch_neighbor_backend_gives_the_same_results(potential64):
    default = attach(rattled_cell(), potential64)
    torch_nl = attach(rattled_cell(), potential64, neighbor_backend="torch")
    assert torch_nl.get_potential_energy() == default.get_potential_energy()
    assert np.array_equal(torch_nl.get_forces(), default.get_forces())


def test_pair_convolution_has_exact_first_and_second_derivatives():
    """SchNet's convolution keeps only h and the filter for backward and gathers again there;
    its first and second derivatives (forces, and training on forces) are checked against
    finite differences in float64 and equal the plain expression's."""
    from nnpot.models.blocks import pair_convolution

    generator = torch.Generator().manual_seed(0)
    h = torch.randn(5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = torch.randn(7, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    pair_index = torch.tensor([[0, 0, 1, 2, 3, 4, 1], [1, 2, 2, 3, 4, 0, 1]])  # a self-pair too
    assert torch.autograd.gradcheck(pair_convolution, (h, weights, pair_index))
    assert torch.autograd.gradgradcheck(pair_convolution, (h, weights, pair_index))

    i, j = pair_index
    plain = torch.zeros_like(h).index_add(0, i, h[j] * weights).index_add(0, j, h[i] * weights)
    ours = pair_convolution(h, weights, pair_index)
    assert torch.equal(ours, plain)
    probe = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    first = torch.autograd.grad((ours * probe).sum(), (h, weights), create_graph=True)
    expected = torch.autograd.grad((plain * probe).sum(), (h, weights), create_graph=True)
    for a, b in zip(first, expected):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    second = torch.autograd.grad(first[1].square().sum(), h)[0]
    torch.testing.assert_close(second, torch.autograd.grad(expected[1].square().sum(), h)[0],
                               rtol=1e-13, atol=1e-13)
