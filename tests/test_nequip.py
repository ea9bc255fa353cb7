"""NequIP: equivariance of the hidden features (Wigner D), invariance of the energy under
rotations and — with parity — mirrors, the neighbour-count statistic, errors, and training.
(The physics tests — finite differences, small cells, extensivity, batching, skin, save/load —
run for NequIP through the ``potential64`` fixture of conftest.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_nequip, rattled_cell, statistics_inputs
from scipy.spatial.transform import Rotation

from nnpot import AtomicGraph, Potential
from nnpot.core.graph import pair_vectors
from nnpot.core.model_file import load
from nnpot.models import HyperParameterError, NequIP

ROTATION = Rotation.from_euler("zyx", [0.7, -1.3, 2.1]).as_matrix()


def inputs(atoms, model):
    graph = AtomicGraph.from_atoms(atoms, model.cutoff)
    species = torch.tensor([model.species.index(s) for s in atoms.get_chemical_symbols()])
    vec = pair_vectors(graph.pos, graph.cell, graph.pair_index, graph.pair_shifts, None)
    return species, graph.pair_index, vec


def wigner(irreps, matrix) -> torch.Tensor:
    """D(R) of ``irreps`` in float64 (e3nn builds it in the default dtype: float32 would leave
    1e-6 errors)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(torch.tensor(matrix, dtype=torch.float64))
    finally:
        torch.set_default_dtype(default)


def transformed(matrix):
    atoms = rattled_cell()
    atoms.set_cell(atoms.cell.array @ matrix.T, scale_atoms=True)
    return atoms


@pytest.mark.parametrize("parity, matrix", [(True, ROTATION), (True, -ROTATION),
                                            (False, ROTATION)])
def test_hidden_features_transform_with_wigner_d(parity, matrix):
    """Every layer's features of the rotated (or mirrored) cell are D(R) times the original's;
    the energy is invariant and the forces rotate with the cell, to 1e-10 in float64."""
    assert_layers_transform_with_wigner_d(make_nequip(parity=parity, n_layers=3), matrix)


def assert_layers_transform_with_wigner_d(pot, matrix) -> None:
    """Every layer's features (``model.node_features``) of ``rattled_cell`` transformed by
    ``matrix`` are D(matrix) times the original's, some of them with l > 0; the energy is
    invariant and the forces turn with the cell (1e-10, float64)."""
    model = pot.model
    before = model.node_features(*inputs(rattled_cell(), model))
    after = model.node_features(*inputs(transformed(matrix), model))
    irreps = [model.layers[0].irreps_in] + [layer.irreps_out for layer in model.layers]
    for k, (x, y, ir) in enumerate(zip(before, after, irreps)):
        assert torch.allclose(y, x @ wigner(ir, matrix).T, atol=1e-10), f"layer {k} ({ir})"
    assert any(ir.lmax > 0 for ir in irreps)  # l > 0 features were really tested
    graph_a = AtomicGraph.from_atoms(rattled_cell(), model.cutoff)
    graph_b = AtomicGraph.from_atoms(transformed(matrix), model.cutoff)
    a, b = pot(graph_a, forces=True), pot(graph_b, forces=True)
    assert float(b["energy"].detach()) == pytest.approx(float(a["energy"].detach()), abs=1e-10)
    np.testing.assert_allclose(b["forces"].numpy(), a["forces"].numpy() @ matrix.T, atol=1e-10)


def test_without_parity_a_mirror_changes_the_energy():
    """parity=False is SO(3): pseudoscalars reach the energy, so a mirror image differs."""
    pot = make_nequip(parity=False, n_layers=3)
    assert "0o" in str(pot.model.layers[-1].irreps_out)
    energy = float(pot(AtomicGraph.from_atoms(rattled_cell(), 4.0))["energy"])
    mirrored = float(pot(AtomicGraph.from_atoms(transformed(-np.eye(3)), 4.0))["energy"])
    assert abs(mirrored - energy) > 1e-6


def assert_neighbour_count_fitted_and_saved(model, path):
    """The model's mean neighbour count (the message normalisation) is fitted from the data's
    pairs inside its cutoff and survives save/load."""
    data = statistics_inputs(model, model.cutoff)
    model.fit_statistics(data)
    atoms = sum(s.numel() for s, _, _ in data)
    edges = sum(2 * int((v.norm(dim=1) < model.cutoff).sum()) for _, _, v in data)
    assert float(model.avg_num_neighbors) == pytest.approx(edges / atoms)
    Potential(model).save(path)
    assert float(load(path).model.avg_num_neighbors) == pytest.approx(edges / atoms)


def test_the_neighbour_count_comes_from_data_and_is_saved(tmp_path):
    model = NequIP(["Cu", "O"], cutoff=4.0, l_max=1, n_features=4, n_layers=1)
    assert_neighbour_count_fitted_and_saved(model, tmp_path / "nequip.pt")


@pytest.mark.parametrize("params, message", [
    ({"l_max": 0}, "l_max must be ≥ 1"),
    ({"parity": "yes"}, "parity must be true or false"),
    ({"radial_mlp": "64"}, "radial_mlp must be a list"),
    ({"n_features": 0}, "n_features must be ≥ 1"),
    ({"poly_p": 1}, "poly_p must be ≥ 2"),
])
def test_bad_hyper_parameters_name_themselves(params, message):
    with pytest.raises(HyperParameterError, match=message):
        NequIP(["Cu"], cutoff=4.0, **params)


def test_each_pair_may_point_either_way():
    """The half list's reverse edges use Y_l(−r̂) = (−1)^l Y_l(r̂): flipping every pair of the
    list (j, i, −r) gives the same features, which a wrong sign for odd l would not."""
    model = make_nequip(n_layers=2).model
    species, pair_index, vec = inputs(rattled_cell(), model)
    flipped = model.node_features(species, pair_index.flip(0), -vec)
    for x, y in zip(model.node_features(species, pair_index, vec), flipped):
        assert torch.allclose(x, y, atol=1e-12)


@pytest.fixture(params=["kernel", "torch"])
def message_path(request, monkeypatch):
    """Run a test through both ways of summing the messages: the fused CPU kernel
    (pair_kernel.cpp) and the torch formulas (NNPOT_PAIR_KERNEL=0)."""
    monkeypatch.setenv("NNPOT_PAIR_KERNEL", "1" if request.param == "kernel" else "0")
    if request.param == "kernel":
        require_kernel()
    return request.param


def require_kernel():
    from nnpot.models.nequip import pair_kernel
    if pair_kernel._load() is None:
        pytest.skip(f"the fused kernel could not be built here: {pair_kernel._failed}")


@pytest.mark.parametrize("parity", [True, False])
def test_pair_tensor_product_equals_e3nn(parity, message_path):
    """The convolution as batched matrix products (pair_tensor_product.py) gives what e3nn's
    tensor product of every directed edge, summed over neighbours, gives (both built in
    float64), for l_max 2 with and without parity, and for the first layer (scalars in)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = NequIP(["Cu", "O"], cutoff=4.0, l_max=2, n_features=3, n_layers=2,
                       parity=parity)
    finally:
        torch.set_default_dtype(default)
    generator = torch.Generator().manual_seed(1)
    n_atoms, n_pairs = 7, 30
    pair_index = torch.randint(0, n_atoms, (2, n_pairs), generator=generator)
    vec = torch.randn(n_pairs, 3, generator=generator, dtype=torch.float64)
    sh = model.harmonics(vec)
    mirrored = torch.cat([sh, sh * torch.cat([torch.full((2 * l + 1,), (-1.0) ** l)
                                               for l in range(3)])])
    edges = torch.cat([pair_index, pair_index.flip(0)], dim=1)
    for layer in model.layers:
        tp, conv = layer.convolution, layer.pair_convolution
        x = torch.randn(n_atoms, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
        weights = torch.randn(n_pairs, tp.weight_numel, generator=generator,
                              dtype=torch.float64)
        messages = tp(x[edges[1]], mirrored, torch.cat([weights, weights]))
        expected = torch.zeros(n_atoms, tp.irreps_out.dim,
                               dtype=torch.float64).index_add(0, edges[0], messages)
        fused = message_path == "kernel"  # the kernel takes the weights per path
        ordered = weights if fused else weights[:, conv.weight_columns]
        got = conv(x, conv.pair_couplings(sh), ordered, pair_index, fused)
        assert torch.allclose(got, expected, atol=1e-12, rtol=0), str(tp)
        radial = torch.rand(n_pairs, model.bessel.frequencies.numel(), generator=generator,
                            dtype=torch.float64)
        envelope = torch.rand(n_pairs, generator=generator, dtype=torch.float64)
        expected = layer.radial(radial) * envelope[:, None]
        assert torch.allclose(layer.path_weights(radial, envelope),
                              expected[:, conv.weight_columns], atol=1e-12, rtol=0)
        assert torch.allclose(layer.path_weights(radial, envelope, per_column=False),
                              expected, atol=1e-12, rtol=0)


def test_pair_convolution_has_exact_first_and_second_derivatives(message_path):
    """Forces in a training loss differentiate the convolution twice: its gradients and their
    gradients with respect to the features, the path weights and the harmonics' coupling
    matrices agree with finite differences;
    and every column of an output irrep takes its own path's weights."""
    from nnpot.models.nequip.pair_tensor_product import PairTensorProduct

    model = NequIP(["Si", "O"], cutoff=3.0, l_max=2, n_features=2, n_layers=2, n_bessel=3,
                   radial_mlp=(4,)).double()
    layer = model.layers[1]
    conv = layer.pair_convolution
    assert isinstance(conv, PairTensorProduct)
    u = conv.channels
    columns = {}  # output irrep → the radial MLP's columns of its path, once per component
    for k, instruction in enumerate(layer.convolution.instructions):
        dim = layer.convolution.irreps_out[instruction.i_out].ir.dim
        columns[instruction.i_out] = torch.arange(k * u, (k + 1) * u).repeat(dim)
    assert torch.equal(conv.weight_columns, torch.cat([columns[k] for k in sorted(columns)]))
    generator = torch.Generator().manual_seed(0)
    n_atoms, n_pairs = 4, 5
    pair_index = torch.randint(0, n_atoms, (2, n_pairs), generator=generator)
    couplings = conv.pair_couplings(model.harmonics(
        torch.randn(n_pairs, 3, generator=generator, dtype=torch.float64)))
    x = torch.randn(n_atoms, layer.convolution.irreps_in1.dim, generator=generator,
                    dtype=torch.float64, requires_grad=True)
    fused = message_path == "kernel"
    w = torch.randn(n_pairs, layer.convolution.weight_numel if fused else
                    conv.weight_columns.numel(), generator=generator, dtype=torch.float64,
                    requires_grad=True)
    couplings = couplings.detach().requires_grad_(True)  # they carry the positions' gradient
    function = lambda a, b, c: conv(a, c, b, pair_index, fused)  # noqa: E731
    # fast mode: finite differences along one random unit direction per input (v·J·u), not
    # entry by entry (thousands of coupling entries: 6 s instead of 156 for both paths). The
    # directional derivative is small (u spread over every entry), so the tolerances are tight: a
    # couplings gradient off by a factor 1 + 1e-4 fails (checked by scaling the kernel's
    # backward on purpose; the defaults let 1 + 1e-2 pass in fast mode)
    tight = {"fast_mode": True, "atol": 1e-9, "rtol": 1e-6}
    assert torch.autograd.gradcheck(function, (x, w, couplings), **tight)
    assert torch.autograd.gradgradcheck(function, (x, w, couplings), **tight)


@pytest.mark.parametrize("l_max, parity", [(1, True), (2, True), (2, False)])
def test_fused_kernel_gives_the_torch_numbers(l_max, parity, monkeypatch):
    """Energy, forces, stress and the parameter gradient of a force loss (a second
    derivative) are the same with the fused CPU kernel and with the torch formulas, in
    float64, on a cell whose atoms are their own neighbours (pairs i–i across the boundary)."""
    from nnpot.models.nequip import pair_kernel

    require_kernel()
    potential = make_nequip(l_max=l_max, parity=parity, n_layers=3)
    graph = AtomicGraph.from_atoms(rattled_cell(), potential.cutoff)
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("NNPOT_PAIR_KERNEL", flag)
        assert pair_kernel.kernel_applies(torch.zeros(1)) == (flag == "1")
        out = potential(graph, forces=True, stress=True, create_graph=True)
        loss = out["forces"].pow(2).sum()
        gradient = torch.autograd.grad(loss, list(potential.parameters()), allow_unused=True)
        results[flag] = [out["energy"], out["forces"], out["stress"],
                         *[g for g in gradient if g is not None]]
    for fused, reference in zip(results["1"], results["0"]):
        assert torch.allclose(fused, reference, atol=1e-11, rtol=1e-11)


def test_fused_kernel_stays_out_of_traces_and_off_the_cpu():
    """Inside a make_fx trace (the LAMMPS export), and for tensors that are not plain CPU
    float tensors (fake, CUDA, float16), the torch formulas are used: a trace would not see
    the kernel's call."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from nnpot.models.nequip.pair_kernel import kernel_applies

    with FakeTensorMode():
        assert not kernel_applies(torch.zeros(3))
    seen = []
    make_fx(lambda x: seen.append(kernel_applies(x)) or x * 2)(torch.zeros(3))  # real tensors
    assert seen == [False]
    assert not kernel_applies(torch.zeros(3, dtype=torch.float16))
    assert not kernel_applies(torch.zeros(3, device="meta"))


def test_a_kernel_that_cannot_be_built_warns_once_and_the_torch_path_takes_over(
        tmp_path, monkeypatch):
    from nnpot.models.nequip import pair_kernel

    broken = tmp_path / "pair_kernel.cpp"
    broken.write_text("#error this machine cannot build it\n")
    monkeypatch.setattr(pair_kernel, "_SOURCE", broken)
    monkeypatch.setattr(pair_kernel, "_module", None)
    monkeypatch.setattr(pair_kernel, "_failed", None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("NNPOT_PAIR_KERNEL", "1")
    potential = make_nequip(l_max=1)
    graph = AtomicGraph.from_atoms(rattled_cell(), potential.cutoff)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        energy = potential(graph)["energy"]
    assert pair_kernel._failed is not None
    assert not pair_kernel.kernel_applies(torch.zeros(1))  # no second attempt, no warning
    monkeypatch.setenv("NNPOT_PAIR_KERNEL", "0")
    assert float(energy.detach()) == pytest.approx(float(potential(graph)["energy"]), abs=1e-12)
