"""MACE: the symmetric contraction against an explicit sum of Clebsch–Gordan-coupled products,
equivariance of every layer's features (Wigner D, rotations and mirrors), the neighbour count,
the two ways of summing messages, errors and a training run. (The physics tests — finite
differences, small cells, extensivity, batching, skin, float32, save/load — run for MACE
through the ``potential64`` fixture of conftest.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_mace, rattled_cell
from scipy.spatial.transform import Rotation
from test_nequip import (
    assert_layers_transform_with_wigner_d,
    assert_neighbour_count_fitted_and_saved,
    inputs,
    require_kernel,
)

from nnpot import AtomicGraph
from nnpot.models import MACE, MODELS, HyperParameterError
from nnpot.models.mace.symmetric_contraction import SymmetricContraction, coupling_basis

ROTATION = Rotation.from_euler("zyx", [0.7, -1.3, 2.1]).as_matrix()
BASIS = [(0, 1), (1, -1), (2, 1)]  # 0e + 1o + 2e: one channel of A for l_max = 2


def cg(l1, l2, l3):
    from e3nn import o3
    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64)


def explicit_product(a: torch.Tensor, path: tuple, order: int) -> torch.Tensor:
    """Σ over m's of chained Wigner 3j symbols times A_{k1,m1} … A_{kν,mν} for one path
    (k1, k2, l12, k3, l123, …), written out term by term for orders 1–3. a [N, c, d] →
    [N, c, 2L+1]."""
    offsets = np.cumsum([0] + [2 * l + 1 for l, _ in BASIS])
    block = lambda k: a[..., offsets[k]:offsets[k + 1]]  # noqa: E731
    l_of = lambda k: BASIS[k][0]  # noqa: E731
    if order == 1:
        return block(path[0])
    k1, k2, l12 = path[:3]
    pair = torch.einsum("abm,nca,ncb->ncm", cg(l_of(k1), l_of(k2), l12), block(k1), block(k2))
    if order == 2:
        return pair
    k3, l_out = path[3:5]
    return torch.einsum("abm,nca,ncb->ncm", cg(l12, l_of(k3), l_out), pair, block(k3))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("target", [(0, 1), (1, -1), (2, 1)])
def test_symmetric_contraction_is_the_coupled_sum_of_products(order, target):
    """With the weight of one path η set to 1 (and the others 0), the contraction gives
    exactly the explicit Clebsch–Gordan-coupled product of that path (float64, 1e-10), for
    every kept path of every order; and the kept paths are independent polynomials of A."""
    paths, _ = coupling_basis(BASIS, order, target)
    assert paths, "every order couples to these irreps"
    contraction = SymmetricContraction(BASIS, [target], order, channels=3, n_species=1).double()
    a = torch.randn(5, 3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    species = torch.zeros(5, dtype=torch.int64)
    outputs = []
    for eta, path in enumerate(paths):
        with torch.no_grad():
            for weight in contraction.weights:
                weight.zero_()
            contraction.weights[order - 1][0, eta] = 1.0
        got = contraction(a, species)
        assert torch.allclose(got, explicit_product(a, path, order), atol=1e-10, rtol=0), path
        outputs.append(got.reshape(-1))
    rank = torch.linalg.matrix_rank(torch.stack(outputs))
    assert rank == len(paths)


def test_contraction_basis_sizes_match_invariant_theory():
    """Invariants of A = 0e + 1o + 2e + 3o: one linear (the scalar), 4 quadratic (|A_l|²) and
    8 cubic ones ((000), (011), (022), (033), (112), (123), (222), (233))."""
    basis = [(0, 1), (1, -1), (2, 1), (3, -1)]
    assert [len(coupling_basis(basis, order, (0, 1))[0]) for order in (1, 2, 3)] == [1, 4, 8]


def test_contraction_of_several_irreps_is_each_irreps_own():
    """Several output irreps of both parities at once: each irrep's rows are what a contraction
    to that irrep alone gives with its share of the weights (float64, 1e-12)."""
    targets = [(0, 1), (1, -1), (2, 1)]
    together = SymmetricContraction(BASIS, targets, 3, channels=2, n_species=1).double()
    a = torch.randn(6, 2, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    species = torch.zeros(6, dtype=torch.int64)
    got = together(a, species)
    row = 0
    for t, (L, p) in enumerate(targets):
        alone = SymmetricContraction(BASIS, [(L, p)], 3, channels=2, n_species=1).double()
        with torch.no_grad():
            for order in range(3):
                start = sum(len(q) for q in together.paths[order + 1][:t])
                count = len(together.paths[order + 1][t])
                alone.weights[order].copy_(together.weights[order][:, start:start + count])
        expected = alone(a, species)
        assert torch.allclose(got[..., row:row + 2 * L + 1], expected, atol=1e-12, rtol=0)
        row += 2 * L + 1
    assert row == got.shape[-1]


def test_contraction_weights_are_per_element():
    contraction = SymmetricContraction(BASIS, [(0, 1), (1, -1)], 3, channels=2,
                                       n_species=2).double()
    a = torch.randn(4, 2, 9, dtype=torch.float64)
    both = contraction(a, torch.tensor([0, 1, 0, 1]))
    first = contraction(a, torch.zeros(4, dtype=torch.int64))
    second = contraction(a, torch.ones(4, dtype=torch.int64))
    assert torch.equal(both[0::2], first[0::2]) and torch.equal(both[1::2], second[1::2])
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("matrix", [ROTATION, -ROTATION], ids=["rotation", "mirror"])
def test_hidden_features_transform_with_wigner_d(matrix):
    """Every layer's features of the rotated (or mirrored) cell are D(R) times the original's;
    the energy is invariant and the forces rotate with the cell, to 1e-10 in float64."""
    assert_layers_transform_with_wigner_d(make_mace(n_layers=3), matrix)


def test_defaults_are_the_contract():
    model = MACE(["Si"])
    assert MODELS["MACE"] is MACE
    assert {k: model.hparams[k] for k in ("cutoff", "n_features", "max_L", "correlation",
                                          "n_layers", "l_max", "n_bessel", "poly_p",
                                          "radial_mlp")} == {
        "cutoff": 5.0, "n_features": 64, "max_L": 1, "correlation": 3, "n_layers": 2,
        "l_max": 3, "n_bessel": 8, "poly_p": 5, "radial_mlp": [64, 64, 64]}
    assert str(model.layers[0].irreps_out) == "64x0e+64x1o"
    assert str(model.layers[-1].irreps_out) == "64x0e"  # the last layer keeps scalars
    assert model.receptive_field == 10.0


def test_the_neighbour_count_comes_from_data_and_is_saved(tmp_path):
    model = MACE(["Cu", "O"], cutoff=4.0, n_features=2, l_max=1, n_layers=1)
    assert_neighbour_count_fitted_and_saved(model, tmp_path / "mace.pt")


@pytest.mark.parametrize("params, message", [
    ({"l_max": 0}, "l_max must be ≥ 1"),
    ({"max_L": 3, "l_max": 2}, "max_L must be ≤ l_max"),
    ({"correlation": 0}, "correlation must be ≥ 1"),
    ({"radial_mlp": "64"}, "radial_mlp must be a list"),
    ({"n_layers": 1.5}, "n_layers must be an integer"),
    ({"poly_p": 1}, "poly_p must be ≥ 2"),
])
def test_bad_hyper_parameters_name_themselves(params, message):
    with pytest.raises(HyperParameterError, match=message):
        MACE(["Cu"], cutoff=4.0, **params)


def test_each_pair_may_point_either_way():
    """Flipping every pair of the half list (j, i, −r) gives the same features."""
    model = make_mace().model
    species, pair_index, vec = inputs(rattled_cell(), model)
    flipped = model.node_features(species, pair_index.flip(0), -vec)
    for x, y in zip(model.node_features(species, pair_index, vec), flipped):
        assert torch.allclose(x, y, atol=1e-12)


def test_fused_kernel_gives_the_torch_numbers(monkeypatch):
    """Energy, forces, stress and a force loss's parameter gradient are the same with the
    fused CPU message kernel and with the torch formulas, in float64."""
    require_kernel()
    potential = make_mace()
    graph = AtomicGraph.from_atoms(rattled_cell(), potential.cutoff)
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("NNPOT_PAIR_KERNEL", flag)
        out = potential(graph, forces=True, stress=True, create_graph=True)
        gradient = torch.autograd.grad(out["forces"].pow(2).sum(), list(potential.parameters()),
                                       allow_unused=True)
        results[flag] = [out["energy"], out["forces"], out["stress"],
                         *[g for g in gradient if g is not None]]
    for fused, reference in zip(results["1"], results["0"]):
        assert torch.allclose(fused, reference, atol=1e-11, rtol=1e-11)
