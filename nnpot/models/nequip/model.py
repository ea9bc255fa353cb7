"""NequIP: E(3)-equivariant message passing (Batzner et al., Nat. Commun. 13, 2453 (2022)).

    element embedding (scalars)
    → n_layers × interaction block:
          self-interaction (linear)
          convolution: m_i = Σ_j R(r_ij) · [h_j ⊗ Y(r̂_ij)] / sqrt(⟨n_neighbours⟩)
              Y: spherical harmonics of the pair direction up to l_max;
              R: radial MLP of a Bessel basis × polynomial envelope, one weight per path;
          linear, + self-connection (features ⊗ element one-hot)
          gated nonlinearity (SiLU on scalars, sigmoid gates on l > 0), residual update
    → scalars → per-atom energy

Built on e3nn (irreps, spherical harmonics, tensor products, gates). Pairs come as nnpot's half
list: the harmonics, their coupling matrices and the radial weights are computed once per pair
(and the couplings once per forward), and the reverse message uses Y_l(−r̂) = (−1)^l Y_l(r̂)
(pair_tensor_product.py; on the CPU a fused C++ kernel sums the messages, pair_kernel.cpp).
The average neighbour count is a data constant from the trainer's
model-statistics hook (stored in the model file).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..base import HyperParameterError, check_int
from ..blocks import BesselBasis
from .equivariant import EquivariantMessagePassing, e3nn_modules
from .pair_kernel import kernel_applies
from .pair_tensor_product import PairTensorProduct


class Interaction(nn.Module):
    """One NequIP interaction block: features (irreps_in) → features (irreps_out).

    ``forward(h [N, dim_in], one_hot [N, S], couplings [P, columns, rows] (from
    ``pair_convolution.pair_couplings`` of the harmonics), radial [P, n_radial], envelope [P],
    pair_index [2, P], norm) → [N, dim_out]``. Messages flow both ways along every pair. The
    path weights are the radial MLP's output times the envelope: exactly zero at and beyond the
    cutoff. They depend on the distance only, so the MLP runs once per pair for both directions.
    ``convolution`` (e3nn's tensor product) defines the paths; ``pair_convolution`` evaluates
    them (the same numbers, faster: see pair_tensor_product.py).
    """

    def __init__(self, irreps_in, irreps_sh, irreps_target, n_species: int, n_radial: int,
                 radial_mlp: Sequence[int]):
        super().__init__()
        o3, enn = e3nn_modules()
        self.irreps_in = o3.Irreps(irreps_in)
        self.self_interaction = o3.Linear(self.irreps_in, self.irreps_in)
        # The convolution's paths: every (feature irrep) ⊗ (harmonic) → an irrep the block
        # wants, one weight per path and channel ('uvu'), given per edge by the radial MLP.
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(o3.Irreps(irreps_sh)):
                for ir_out in ir_in * ir_sh:
                    if ir_out in o3.Irreps(irreps_target):
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid = o3.Irreps(mid)
        mid_sorted, permutation, _ = mid.sort()
        instructions = [(i, j, permutation[k], mode, train)
                        for i, j, k, mode, train in instructions]
        self.convolution = o3.TensorProduct(self.irreps_in, irreps_sh, mid_sorted, instructions,
                                            shared_weights=False, internal_weights=False)
        self.pair_convolution = PairTensorProduct(self.convolution)
        self.radial = enn.FullyConnectedNet([n_radial, *radial_mlp, self.convolution.weight_numel],
                                            torch.nn.functional.silu)
        # Gate: scalars (SiLU), one sigmoid gate per l > 0 channel, the gated l > 0 irreps.
        target = o3.Irreps(irreps_target)
        scalars = o3.Irreps([(m, ir) for m, ir in target if ir.l == 0
                             and ir in mid_sorted.simplify()])
        gated = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0
                           and ir in mid_sorted.simplify()])
        gates = o3.Irreps([(m, "0e") for m, _ in gated])
        # SiLU on scalars, tanh on pseudoscalars (an odd function keeps them pseudoscalars)
        self.gate = enn.Gate(scalars, [torch.nn.functional.silu if ir.p == 1 else torch.tanh
                                       for _, ir in scalars],
                             gates, [torch.sigmoid for _ in gates], gated)
        self.linear = o3.Linear(mid_sorted.simplify(), self.gate.irreps_in)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{n_species}x0e"), self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out

    def path_weights(self, radial: torch.Tensor, envelope: torch.Tensor,
                     per_column: bool = True) -> torch.Tensor:
        """The radial MLP's output times the envelope, per path or per column (see
        ``PairTensorProduct.path_weights``)."""
        return self.pair_convolution.path_weights(self.radial, radial, envelope, per_column)

    def forward(self, h: torch.Tensor, one_hot: torch.Tensor, couplings: torch.Tensor,
                radial: torch.Tensor, envelope: torch.Tensor, pair_index: torch.Tensor,
                norm: torch.Tensor) -> torch.Tensor:
        x = self.self_interaction(h)
        fused = kernel_applies(x, couplings, radial, pair_index)
        weights = self.path_weights(radial, envelope, per_column=not fused)
        aggregated = self.pair_convolution(x, couplings, weights, pair_index, fused)
        update = self.linear(aggregated * norm) + self.self_connection(h, one_hot)
        return self.gate(update)


class NequIP(EquivariantMessagePassing):
    """NequIP-style E(3)-equivariant potential.

    Args:
        species: elements the model knows.
        cutoff: Å.
        l_max: highest rotation order of the features and harmonics (≥ 1).
        n_features: channels per irrep.
        n_layers: interaction blocks.
        n_bessel: Bessel functions of the radial basis.
        poly_p: order of the polynomial envelope.
        parity: True: E(3) — features of the harmonics' own parity (l even: e, l odd: o), so
            the energy is invariant under rotations and mirrors. False: SO(3) — features of
            both parities, and pseudoscalars join the readout (invariant under rotations only).
        radial_mlp: hidden widths of the radial MLP.
    """

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0, l_max: int = 2,
                 n_features: int = 32, n_layers: int = 4, n_bessel: int = 8, poly_p: int = 6,
                 parity: bool = True, radial_mlp: Sequence[int] = (64, 64)):
        check_int("l_max", l_max)
        check_int("n_features", n_features)
        check_int("n_layers", n_layers)
        check_int("n_bessel", n_bessel)
        check_int("poly_p", poly_p, minimum=2)
        if not isinstance(parity, bool):
            raise HyperParameterError("parity", f"must be true or false, got {parity!r}")
        if isinstance(radial_mlp, (str, bytes)) or not isinstance(radial_mlp, Sequence):
            raise HyperParameterError("radial_mlp", f"must be a list of widths, got {radial_mlp!r}")
        radial_mlp = [check_int(f"radial_mlp[{k}]", w) for k, w in enumerate(radial_mlp)]
        super().__init__(species, cutoff, l_max=l_max, n_features=n_features, n_layers=n_layers,
                         n_bessel=n_bessel, poly_p=poly_p, parity=parity, radial_mlp=radial_mlp)
        o3, _ = e3nn_modules()
        n_species = len(self.species)
        self.poly_p = poly_p
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        parities = (None,) if parity else (1, -1)
        hidden = o3.Irreps([(n_features, (l, p if p is not None else (-1) ** l))
                            for l in range(l_max + 1) for p in parities])
        self.harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True,
                                               normalization="component")
        self.embedding = o3.Linear(o3.Irreps(f"{n_species}x0e"), o3.Irreps(f"{n_features}x0e"))
        self.bessel = BesselBasis(n_bessel, cutoff)
        irreps = o3.Irreps(f"{n_features}x0e")
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = Interaction(irreps, self.irreps_sh, hidden, n_species, n_bessel, radial_mlp)
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.readout = nn.Sequential(
            o3.Linear(irreps, o3.Irreps(f"{max(1, n_features // 2)}x0e")),
            nn.SiLU(),
            o3.Linear(o3.Irreps(f"{max(1, n_features // 2)}x0e"), o3.Irreps("1x0e")))
        if not parity:  # pseudoscalars (0o) enter the energy too: only rotations remain
            self.pseudo = o3.Linear(irreps, o3.Irreps("1x0o"))
        self.register_buffer("avg_num_neighbors", torch.tensor(1.0))

    # ---------------------------------------------------------------------------------------
    def layer_step(self, step, h, one_hot, couplings, envelope, radial, pair_index):
        """Interaction ``step``, residual where the irreps stay the same; no energy term."""
        layer = self.layers[step]
        norm = self.avg_num_neighbors.to(radial.dtype).rsqrt()
        update = layer(h, one_hot, couplings, radial, envelope, pair_index, norm)
        return (h + update if layer.irreps_out == layer.irreps_in else update), None

    def final_energy(self, h: torch.Tensor) -> torch.Tensor:
        """The last features → per-atom energies [N] (with pseudoscalars when not E(3))."""
        energy = self.readout(h).squeeze(-1)
        if hasattr(self, "pseudo"):
            energy = energy + self.pseudo(h).squeeze(-1)
        return energy
