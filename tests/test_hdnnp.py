"""HDNNP: symmetry functions against a plain NumPy implementation of the formulas, statistics,
NaN-free angular gradients, the defaults, and a training run. (The physics tests — finite
differences, invariances, extensivity, batching, skin, save/load — run for HDNNP through the
``potential64`` fixture of conftest.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from conftest import HDNNP_FUNCTIONS, make_hdnnp, rattled_cell, triclinic_pair

import nnpot
from nnpot import AtomicGraph, NNPCalculator, Potential
from nnpot.core.graph import pair_vectors
from nnpot.models import HDNNP, HyperParameterError
from nnpot.models.hdnnp.symmetry_functions import default_functions, parse_function, triplets
from nnpot.models.hdnnp.symmetry_kernels import radial_terms
from nnpot.train import ConfigError, config_from_dict, fit


# -------------------------------------------------------------------------------------------
# The reference: the formulas of Behler (2011) / n2p2 with explicit loops
# -------------------------------------------------------------------------------------------
def f_cut(r: float, rc: float, kind: str) -> float:
    if r >= rc:
        return 0.0
    x = r / rc
    return 0.5 * (math.cos(math.pi * x) + 1) if kind == "cos" else 1 - 10 * x**3 + 15 * x**4 - 6 * x**5


def reference_descriptor(atoms: Atoms, species: list[str], functions: list[dict],
                         kind: str = "cos") -> np.ndarray:
    specs = [parse_function(f, 100.0, "") for f in functions]
    radial = [f for f in specs if f.type == "G2"]
    angular = [f for f in specs if f.type == "G3"] + [f for f in specs if f.type == "G9"]
    n_s = len(species)
    pairs = [(a, b) for a in range(n_s) for b in range(a, n_s)]
    element = [species.index(s) for s in atoms.get_chemical_symbols()]
    reach = max(f.cutoff for f in specs)
    first, second, vectors = neighbor_list("ijD", atoms, reach)
    out = np.zeros((len(atoms), n_s * len(radial) + len(pairs) * len(angular)))
    for i in range(len(atoms)):
        mine = [(second[e], vectors[e]) for e in np.flatnonzero(first == i)]
        for j, v in mine:
            r = np.linalg.norm(v)
            for f_index, f in enumerate(radial):
                out[i, element[j] * len(radial) + f_index] += (
                    math.exp(-f.eta * (r - f.rs) ** 2) * f_cut(r, f.cutoff, kind))
        for p in range(len(mine)):
            for q in range(p + 1, len(mine)):
                (j, vj), (k, vk) = mine[p], mine[q]
                rij, rik, rjk = np.linalg.norm(vj), np.linalg.norm(vk), np.linalg.norm(vk - vj)
                cos = float(vj @ vk) / (rij * rik)
                channel = pairs.index(tuple(sorted((element[j], element[k]))))
                for f_index, f in enumerate(angular):
                    value = (2 ** (1 - f.zeta) * (1 + f.lambda_ * cos) ** f.zeta
                             * math.exp(-f.eta * ((rij - f.rs) ** 2 + (rik - f.rs) ** 2))
                             * f_cut(rij, f.cutoff, kind) * f_cut(rik, f.cutoff, kind))
                    if f.type == "G3":
                        value *= math.exp(-f.eta * (rjk - f.rs) ** 2) * f_cut(rjk, f.cutoff, kind)
                    out[i, n_s * len(radial) + channel * len(angular) + f_index] += value
    return out


def descriptor_of(atoms: Atoms, model: HDNNP) -> np.ndarray:
    graph = AtomicGraph.from_atoms(atoms, model.cutoff)
    species = torch.tensor([model.species.index(s) for s in atoms.get_chemical_symbols()])
    vec = pair_vectors(graph.pos, graph.cell, graph.pair_index, graph.pair_shifts, None)
    return model.descriptor(species, graph.pair_index, vec).numpy()


def molecule() -> Atoms:
    return Atoms("COH3", positions=[[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [-0.5, 0.9, 0.1],
                                    [-0.4, -0.5, 0.8], [1.8, 0.3, -0.8]])


def small_periodic_cell() -> Atoms:
    """fcc Cu primitive cell (lattice vectors 2.55 Å): the cutoff is over three cell lengths."""
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.rattle(0.0)
    return atoms


CASES = {
    "molecule": (molecule, ["H", "C", "O"]),
    "small periodic cell": (small_periodic_cell, ["Cu"]),
    "two-element triclinic cell": (rattled_cell, ["Cu", "O"]),
}


@pytest.mark.parametrize("kind", ["cos", "p2"])
@pytest.mark.parametrize("case", list(CASES))
def test_symmetry_functions_match_the_formulas(case, kind):
    build, species = CASES[case]
    atoms = build()
    model = HDNNP(species, cutoff=4.0, symmetry_functions=HDNNP_FUNCTIONS, cutoff_function=kind)
    model.double()
    ours, reference = descriptor_of(atoms, model), reference_descriptor(atoms, species,
                                                                        HDNNP_FUNCTIONS, kind)
    assert np.abs(reference).max() > 0.1 and (reference != 0).mean() > 0.3  # real numbers
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-10)


def test_triplets_are_every_pair_of_edges_of_a_centre():
    center = torch.tensor([2, 0, 2, 1, 2, 0, 2])
    a, b = triplets(center, 4)
    found = sorted(tuple(sorted((int(x), int(y)))) for x, y in zip(a, b))
    expected = sorted((p, q) for p in range(7) for q in range(p + 1, 7) if center[p] == center[q])
    assert found == expected


@pytest.mark.parametrize("kind", ["cos", "p2"])
def test_radial_terms_have_exact_first_and_second_derivatives(kind):
    """The radial kernel's hand-written d/dr, and its derivative when training on forces
    differentiates it again, against finite differences (float64)."""
    length = torch.tensor([0.7, 1.3, 2.2, 2.9, 3.4, 3.9, 4.6], dtype=torch.float64,
                          requires_grad=True)
    eta = torch.tensor([0.5, 4.0, 0.05], dtype=torch.float64)
    rs = torch.tensor([0.0, 1.5, 2.5], dtype=torch.float64)
    for cutoff in (torch.tensor([4.0], dtype=torch.float64),
                   torch.tensor([4.0, 3.0, 4.2], dtype=torch.float64)):
        def terms(r, cutoff=cutoff):
            return radial_terms(r, eta, rs, cutoff, kind)
        assert torch.autograd.gradcheck(terms, (length,))
        assert torch.autograd.gradgradcheck(terms, (length,))


def test_descriptor_second_derivatives_are_exact():
    """Training on forces differentiates the forces again: the whole descriptor (radial, G3
    and G9) passes gradgradcheck in a three-element molecule."""
    atoms = molecule()
    model = HDNNP(["H", "C", "O"], cutoff=4.0, symmetry_functions=HDNNP_FUNCTIONS).double()
    graph = AtomicGraph.from_atoms(atoms, model.cutoff)
    species = torch.tensor([model.species.index(s) for s in atoms.get_chemical_symbols()])
    vec = pair_vectors(graph.pos, graph.cell, graph.pair_index, graph.pair_shifts, None)
    weights = torch.rand(len(atoms), model.descriptor.n_features, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))

    def weighted(pair_vec):
        return (model.descriptor(species, graph.pair_index, pair_vec) * weights).sum()
    vec = vec.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(weighted, (vec,))
    assert torch.autograd.gradgradcheck(weighted, (vec,))


# -------------------------------------------------------------------------------------------
def test_collinear_and_coincident_angles_give_finite_forces_and_training_gradients():
    """cos θ = ±1 makes 1 + λ cos θ = 0: forces and their parameter gradients stay finite."""
    pot = make_hdnnp(species=("Cu",))
    line = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0, 0], [4.8, 0, 0]])    # θ = 180° at atom 1
    fold = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0, 0], [2.4 + 1e-9, 0, 0.9]])
    for atoms in (line, fold, bulk("Cu", "fcc", a=3.6, cubic=True)):
        graph = nnpot.core.graph.batch_graphs([AtomicGraph.from_atoms(atoms, pot.cutoff)])
        out = pot(graph, forces=True, create_graph=True)
        assert torch.isfinite(out["forces"]).all()
        (out["forces"] ** 2).sum().backward()
        for name, parameter in pot.named_parameters():
            assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


def test_statistics_centre_and_scale_each_element():
    model = make_hdnnp().model
    inputs = []
    for atoms in [rattled_cell(seed=seed) for seed in range(3)] + [triclinic_pair()]:
        features = descriptor_of(atoms, model)
        symbols = np.array(atoms.get_chemical_symbols())
        inputs.append((features, symbols))
    for k, element in enumerate(model.species):
        rows = np.concatenate([f[s == element] for f, s in inputs])
        mean, scale = model.feature_mean[k].numpy(), model.feature_scale[k].numpy()
        # float32 buffers (filled before the potential was cast to float64)
        np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-6, atol=1e-7)
        varying = rows.std(axis=0) > 1e-6 * (np.abs(rows.mean(axis=0)) + 1)
        np.testing.assert_allclose(scale[varying], 1 / rows.std(axis=0)[varying], rtol=1e-6)
        assert (scale[~varying] == 1).all()  # constant functions are not blown up


def test_the_default_set_follows_the_cutoff():
    functions = default_functions(5.0)
    radial = [f for f in functions if f.type == "G2"]
    angular = [f for f in functions if f.type == "G9"]
    assert len(radial) == 12 and len(angular) == 32
    spacing = radial[1].rs - radial[0].rs
    assert all(f.eta == pytest.approx(1 / (2 * spacing**2)) for f in radial)  # shifted grid
    assert {f.zeta for f in angular} == {1, 2, 4, 16} and {f.lambda_ for f in angular} == {1, -1}
    assert max(f.cutoff for f in angular) == 4.0
    model = HDNNP(["Si"], cutoff=5.0)
    assert model.descriptor.n_features == 44
    assert len(model.hparams["symmetry_functions"]) == 44  # the file stores the resolved set
    # A mapping gives the default set with other arguments (16 radial, 6 angular radii × 4 ζ × 2 λ)
    larger = HDNNP(["Si"], cutoff=5.0, symmetry_functions={"n_radial": 16, "angular_cutoff": 5.0,
                                                           "n_angular_eta": 6})
    assert larger.descriptor.n_features == 16 + 48
    assert max(f["cutoff"] for f in larger.hparams["symmetry_functions"]) == 5.0


@pytest.mark.parametrize("params, message", [
    ({"hidden": [25, 0]}, r"hidden\[1\] must be ≥ 1"),
    ({"activation": "relu"}, r"activation must be one of"),
    ({"cutoff_function": "gauss"}, r"cutoff_function must be one of"),
    ({"symmetry_functions": [{"type": "G4", "eta": 1}]}, r"entry 0: type must be one of"),
    ({"symmetry_functions": [{"type": "G9", "eta": 0.1, "zeta": 1.5}]}, r"zeta must be an integer"),
    ({"symmetry_functions": [{"type": "G3", "eta": 0.1, "lambda": 0.5}]}, r"lambda must be \+1 or -1"),
    ({"symmetry_functions": [{"type": "G2", "eta": 0.1, "cutoff": 9.0}]}, r"cutoff must be in \(0, 5"),
    ({"symmetry_functions": [{"type": "G2", "eta": -1}]}, r"eta must be ≥ 0"),
    ({"symmetry_functions": [{"type": "G2", "eta": 1, "zeta": 2}]}, r"unknown key\(s\) \['zeta'\]"),
    ({"symmetry_functions": {"n_radial": 1}}, r"n_radial must be an integer ≥ 2"),
    ({"symmetry_functions": {"angular_cutoff": 6.0}}, r"angular_cutoff must be a length in \(0, 5"),
    ({"symmetry_functions": {"zetas": [1, 0]}}, r"zetas must be a list of integers ≥ 1"),
    ({"symmetry_functions": {"n_radiall": 8}}, r"unknown key\(s\) \['n_radiall'\] for the default"),
])
def test_bad_hyper_parameters_name_themselves(tmp_path, params, message):
    with pytest.raises(HyperParameterError, match=message):
        HDNNP(["Si"], cutoff=5.0, **params)


def test_multi_element_networks_are_separate():
    pot = make_hdnnp()
    atoms = rattled_cell()
    atoms.calc = NNPCalculator(pot)
    before = atoms.get_potential_energies()
    with torch.no_grad():
        pot.model.networks.weights[-1][1].mul_(2.0)  # the O network only
    atoms.calc = NNPCalculator(pot)
    after = atoms.get_potential_energies()
    oxygen = np.array(atoms.get_chemical_symbols()) == "O"
    assert np.allclose(before[~oxygen], after[~oxygen]) and not np.allclose(before[oxygen], after[oxygen])


# -------------------------------------------------------------------------------------------
def test_nnpot_train_fits_an_hdnnp_and_stores_its_statistics(tmp_path):
    import ase.io
    from test_train import emt_frames

    path = tmp_path / "emt.extxyz"
    ase.io.write(path, emt_frames(12), format="extxyz")
    config = {"output": str(tmp_path / "run"), "seed": 1,
              "model": {"type": "HDNNP", "cutoff": 4.0,
                        "params": {"hidden": [8, 8], "symmetry_functions": HDNNP_FUNCTIONS}},
              "data": {"train": str(path), "validation_fraction": 0.25,
                       "cache_dir": str(tmp_path / "cache")},
              "training": {"max_epochs": 3, "batch_size": 4, "progress": False, "threads": 1}}
    best = nnpot.load(fit(config_from_dict(config)))
    assert isinstance(best.model, HDNNP)
    assert not torch.all(best.model.feature_mean == 0)  # the hook ran and its buffers were saved
    config["model"]["params"]["hidden"] = [0]
    with pytest.raises(ConfigError, match=r"model\.params\.hidden\[0\]"):
        config_from_dict(config)


def test_untrained_hdnnp_still_works_with_identity_scaling():
    model = HDNNP(["Cu"], cutoff=4.0, symmetry_functions=HDNNP_FUNCTIONS)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = NNPCalculator(Potential(model))
    assert np.isfinite(atoms.get_forces()).all()
