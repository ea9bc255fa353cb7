"""MACE: higher-order equivariant message passing (Batatia et al., NeurIPS 2022; Kovács et al.,
J. Chem. Phys. 159, 044118 (2023)).

    element embedding h⁰ (scalars, a linear map of the element one-hot)
    → per layer t:
        atomic basis   A_i = Σ_j R(r_ij) · [W h_j ⊗ Y(r̂_ij)] / ⟨n_neighbours⟩
                       Y: spherical harmonics up to l_max; R: radial MLP of a Bessel basis
                       times a polynomial envelope, one weight per path and channel; then a
                       linear map to the irreps of the harmonics (l = 0 … l_max), and on the
                       first layer an element-dependent one
        product basis  B_i = Σ_ν Σ_η w_{z_i,η} U_η · A_i^{⊗ν}, ν ≤ correlation: the symmetric
                       contraction (symmetric_contraction.py) to irreps up to max_L (scalars
                       only on the last layer), weights per element
        update         h^t_i = Linear(B_i) + self-connection (h^{t−1}_i ⊗ element, from t = 2)
        readout        E^t_i: linear on h^t (an MLP 16 wide on the last layer)
    → E_i = Σ_t E^t_i

Messages are many-body from the first layer on: A is two-body, B up to (correlation + 1)-body,
so two layers reach what deeper two-body networks need four or more for. The convolution is
NequIP's over the half pair list (pair_tensor_product.py, with its fused CPU kernel); the
average neighbour count comes from the trainer's model-statistics hook, as for NequIP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..base import HyperParameterError, check_int
from ..blocks import BesselBasis
from ..nequip.equivariant import EquivariantMessagePassing, e3nn_modules
from ..nequip.pair_kernel import kernel_applies
from ..nequip.pair_tensor_product import PairTensorProduct
from .symmetric_contraction import SymmetricContraction

READOUT_MLP_WIDTH = 16  # hidden scalars of the last layer's energy readout (MACE's 16x0e)


def irreps_of_harmonics(o3, channels: int, l_max: int):
    """``channels`` × (0e + 1o + 2e + …) up to ``l_max``: the irreps of Y, and of A."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])


def to_channels(x: torch.Tensor, irreps) -> torch.Tensor:
    """e3nn layout [N, Σ mul·(2l+1)] (every mul equal) → [N, mul, Σ (2l+1)]."""
    blocks = torch.split(x, [mul * ir.dim for mul, ir in irreps], dim=1)
    return torch.cat([b.reshape(x.shape[0], mul, ir.dim) for b, (mul, ir) in zip(blocks, irreps)],
                     dim=2)


def from_channels(x: torch.Tensor, irreps) -> torch.Tensor:
    """[N, mul, Σ (2l+1)] → e3nn layout [N, Σ mul·(2l+1)] (the inverse of ``to_channels``)."""
    blocks = torch.split(x, [ir.dim for _, ir in irreps], dim=2)
    return torch.cat([b.reshape(x.shape[0], -1) for b in blocks], dim=1)


class MACELayer(nn.Module):
    """One MACE layer: features h (``irreps_in``) → h' (``irreps_out``).

    ``forward(h [N, dim_in], species [N], one_hot [N, S], couplings (the harmonics' coupling
    matrices, ``PairTensorProduct.pair_couplings``), radial [P, n_bessel] (enveloped),
    pair_index [2, P], inverse_neighbours: 1 / ⟨n_neighbours⟩) → [N, dim_out]``.
    """

    def __init__(self, irreps_in, irreps_out, n_features: int, l_max: int, correlation: int,
                 n_species: int, n_bessel: int, radial_mlp: Sequence[int], first: bool):
        super().__init__()
        o3, enn = e3nn_modules()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.irreps_a = irreps_of_harmonics(o3, n_features, l_max)
        species_irreps = o3.Irreps(f"{n_species}x0e")
        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        # The convolution's paths: (feature irrep) ⊗ (harmonic) → an irrep of A, one weight per
        # path and channel ('uvu') from the radial MLP.
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_of_harmonics(o3, 1, l_max)):
                for ir_out in ir_in * ir_sh:
                    if ir_out in self.irreps_a:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid_sorted, permutation, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, permutation[k], mode, train)
                        for i, j, k, mode, train in instructions]
        self.convolution = o3.TensorProduct(self.irreps_in, irreps_of_harmonics(o3, 1, l_max),
                                            mid_sorted, instructions, shared_weights=False,
                                            internal_weights=False)
        self.pair_convolution = PairTensorProduct(self.convolution)
        self.radial = enn.FullyConnectedNet([n_bessel, *radial_mlp,
                                             self.convolution.weight_numel],
                                            torch.nn.functional.silu)
        self.linear_a = o3.Linear(mid_sorted.simplify(), self.irreps_a)
        # First layer: A depends on the element through an element-dependent linear map (its
        # input h⁰ is the element itself, so there is nothing to add as a self-connection).
        # Later layers: the self-connection carries h^{t−1} ⊗ element into the update.
        self.first = first
        if first:
            self.element_linear = o3.FullyConnectedTensorProduct(self.irreps_a, species_irreps,
                                                                 self.irreps_a)
        else:
            self.self_connection = o3.FullyConnectedTensorProduct(self.irreps_in, species_irreps,
                                                                  self.irreps_out)
        self.contraction = SymmetricContraction(
            [(ir.l, ir.p) for _, ir in self.irreps_a], [(ir.l, ir.p) for _, ir in self.irreps_out],
            correlation, n_features, n_species)
        self.irreps_b = o3.Irreps([(n_features, ir) for _, ir in self.irreps_out])
        self.linear_out = o3.Linear(self.irreps_b, self.irreps_out)

    def atomic_basis(self, h: torch.Tensor, one_hot: torch.Tensor, couplings: torch.Tensor,
                     radial: torch.Tensor, pair_index: torch.Tensor,
                     inverse_neighbours: torch.Tensor) -> torch.Tensor:
        """A [N, n_features × (0e + 1o + … l_max)] in e3nn's layout."""
        x = self.linear_up(h)
        fused = kernel_applies(x, couplings, radial, pair_index)
        weights = self.pair_convolution.path_weights(self.radial, radial, None,
                                                     per_column=not fused)
        messages = self.pair_convolution(x, couplings, weights, pair_index, fused)
        a = self.linear_a(messages * inverse_neighbours)
        return self.element_linear(a, one_hot) if self.first else a

    def forward(self, h: torch.Tensor, species: torch.Tensor, one_hot: torch.Tensor,
                couplings: torch.Tensor, radial: torch.Tensor, pair_index: torch.Tensor,
                inverse_neighbours: torch.Tensor) -> torch.Tensor:
        a = self.atomic_basis(h, one_hot, couplings, radial, pair_index, inverse_neighbours)
        b = self.contraction(to_channels(a, self.irreps_a), species)
        update = self.linear_out(from_channels(b, self.irreps_b))
        return update if self.first else update + self.self_connection(h, one_hot)


class MACE(EquivariantMessagePassing):
    """MACE-style many-body equivariant potential (E(3): invariant under rotations and mirrors).

    Args:
        species: elements the model knows.
        cutoff: Å.
        n_features: channels of every irrep of the features (MACE's ``num_channels``).
        max_L: highest rotation order of the hidden features (the last layer keeps scalars).
        correlation: highest order of the products of A in the symmetric contraction (the
            messages are up to (correlation + 1)-body).
        n_layers: message-passing layers (≥ 1).
        l_max: highest order of the spherical harmonics and of the atomic basis A.
        n_bessel: Bessel functions of the radial basis.
        poly_p: order of the polynomial envelope.
        radial_mlp: hidden widths of the radial MLP.
    """

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0, n_features: int = 64,
                 max_L: int = 1, correlation: int = 3, n_layers: int = 2, l_max: int = 3,
                 n_bessel: int = 8, poly_p: int = 5, radial_mlp: Sequence[int] = (64, 64, 64)):
        check_int("n_features", n_features)
        check_int("max_L", max_L, minimum=0)
        check_int("correlation", correlation)
        check_int("n_layers", n_layers)
        check_int("l_max", l_max)
        check_int("n_bessel", n_bessel)
        check_int("poly_p", poly_p, minimum=2)
        if max_L > l_max:
            raise HyperParameterError("max_L", f"must be ≤ l_max ({l_max}), got {max_L}")
        if isinstance(radial_mlp, (str, bytes)) or not isinstance(radial_mlp, Sequence):
            raise HyperParameterError("radial_mlp", f"must be a list of widths, got {radial_mlp!r}")
        radial_mlp = [check_int(f"radial_mlp[{k}]", w) for k, w in enumerate(radial_mlp)]
        super().__init__(species, cutoff, n_features=n_features, max_L=max_L,
                         correlation=correlation, n_layers=n_layers, l_max=l_max,
                         n_bessel=n_bessel, poly_p=poly_p, radial_mlp=radial_mlp)
        o3, _ = e3nn_modules()
        n_species = len(self.species)
        self.poly_p = poly_p
        self.harmonics = o3.SphericalHarmonics(irreps_of_harmonics(o3, 1, l_max), normalize=True,
                                               normalization="component")
        self.bessel = BesselBasis(n_bessel, cutoff)
        scalars = o3.Irreps(f"{n_features}x0e")
        self.embedding = o3.Linear(o3.Irreps(f"{n_species}x0e"), scalars)
        hidden = irreps_of_harmonics(o3, n_features, max_L)
        self.layers, self.readouts = nn.ModuleList(), nn.ModuleList()
        irreps = scalars
        for t in range(n_layers):
            last = t == n_layers - 1
            out = scalars if last else hidden
            self.layers.append(MACELayer(irreps, out, n_features, l_max, correlation, n_species,
                                         n_bessel, radial_mlp, first=t == 0))
            if last:
                width = o3.Irreps(f"{READOUT_MLP_WIDTH}x0e")
                self.readouts.append(nn.Sequential(o3.Linear(out, width), nn.SiLU(),
                                                   o3.Linear(width, o3.Irreps("1x0e"))))
            else:
                self.readouts.append(o3.Linear(out, o3.Irreps("1x0e")))
            irreps = out
        self.register_buffer("avg_num_neighbors", torch.tensor(1.0))

    def layer_step(self, step, h, one_hot, couplings, envelope, radial, pair_index):
        """Layer ``step`` and its readout's energy term (MACE sums every layer's)."""
        inverse_neighbours = 1.0 / self.avg_num_neighbors.to(radial.dtype)
        species = one_hot.argmax(dim=1)  # the element index the contraction's weights take
        h = self.layers[step](h, species, one_hot, couplings, radial, pair_index,
                              inverse_neighbours)
        return h, self.readouts[step](h).squeeze(-1)

    def final_energy(self, h: torch.Tensor) -> None:
        """Every layer's readout is already in the energy column."""
        return None
