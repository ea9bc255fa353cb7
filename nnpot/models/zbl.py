"""Screened nuclear repulsion (ZBL) as a physical prior under a learned potential.

A network trained on near-equilibrium DFT data has never seen two atoms closer than the shortest
training distance, and nothing stops its energy from falling as they approach: hot MD then finds
that hole and collapses. The Ziegler–Biersack–Littmark universal pair potential

    E(r) = k Z_i Z_j / r · φ(r / a),   a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),  k = 14.399645 eV·Å
    φ(x) = 0.18175 e^(−3.19980 x) + 0.50986 e^(−0.94229 x) + 0.28022 e^(−0.40290 x)
           + 0.02817 e^(−0.20162 x)

(Ziegler, Biersack and Littmark, The Stopping and Range of Ions in Solids, 1985) is the
nuclei's Coulomb repulsion screened by their electrons: exact enough at short range, and it
grows without bound as r → 0. As in MACE's and NequIP's ZBL options it is switched off
smoothly (a polynomial f(r/r_c) with f, f′ and f″ zero at r_c) at r_c = the sum of the two
elements' covalent radii (ASE's), or the model's cutoff where that is shorter, so it acts only
at distances shorter than bonds; the network learns the rest of the energy on top of it.

In a metal the covalent-radius sum can lie past the first neighbours (Mo: 3.08 Å against 2.73 Å
in bcc Mo), so the switched tail acts on every frame, with forces as large as DFT's. ``radius``
sets one switch-off distance for every pair instead, e.g. below the shortest distance in the
training data. The tail is not only a cost: on the Mo HDNNP's cross-validation the default fit
better than a switch at 2.0 Å (docs/potentials.md), as a repulsive shape the network need not
learn from the few closest pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase.data import atomic_numbers, covalent_radii
from torch import nn

from .blocks import polynomial_envelope

COULOMB_EV_ANGSTROM = 14.399645  # e² / (4π ε0) in eV·Å
SCREENING_LENGTH = 0.46850        # Å, ZBL's universal a = 0.8854 a_0 (a_0 the Bohr radius)
SCREENING_EXPONENT = 0.23
PHI_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
SWITCH_POWER = 6                  # the polynomial envelope of NequIP (Gasteiger et al.'s p = 6)

PAIR_REPULSIONS = ("zbl",)


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies for pairs closer than their covalent-radius sum.

    Args:
        species: the potential's elements (index order of ``species`` below).
        cutoff: the model's cutoff, Å; no switch radius exceeds it (pairs beyond it are not in
            the neighbour list, so the energy must be zero there).
        radius: ``None`` (each pair switched off at its covalent-radius sum) or one switch-off
            distance for every pair, Å, > 0.
    """

    def __init__(self, species: Sequence[str], cutoff: float, radius: float | None = None):
        super().__init__()
        numbers = [atomic_numbers[s] for s in species]
        # Built in float64 (1.32 Å is not a float32 number), so a potential made and used in
        # float64 has the exact radii; cast to the pair vectors' dtype where used.
        radii = torch.tensor([float(covalent_radii[z]) for z in numbers], dtype=torch.float64)
        switch = radii[:, None] + radii[None, :]
        if radius is not None:
            switch = torch.full_like(switch, float(radius))
        self.register_buffer("charge", torch.tensor([float(z) for z in numbers],
                                                    dtype=torch.float64))
        # A buffer, so the radii travel in the state dict with the weights.
        self.register_buffer("switch_radius", torch.clamp(switch, max=float(cutoff)))

    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        """species [N] index, pair_index [2, P] (each pair once), pair_vec [P, 3] Å → [N] eV,
        each pair's energy split equally between its two atoms."""
        first, second = species[pair_index[0]], species[pair_index[1]]
        charge = self.charge.to(pair_vec.dtype)
        z_i, z_j = charge[first], charge[second]
        r = torch.linalg.vector_norm(pair_vec, dim=-1)
        r_c = self.switch_radius.to(pair_vec.dtype)[first, second]
        x = r * (z_i**SCREENING_EXPONENT + z_j**SCREENING_EXPONENT) / SCREENING_LENGTH
        phi = sum(c * torch.exp(-b * x) for c, b in zip(PHI_COEFFICIENTS, PHI_EXPONENTS))
        # The envelope is exactly 0 (value and gradient) for r ≥ r_c, and r > 0 for every pair
        # (no atom sits on another), so far pairs add nothing without a mask of their own.
        pair = COULOMB_EV_ANGSTROM * z_i * z_j / r * phi * polynomial_envelope(r, r_c,
                                                                             SWITCH_POWER)
        energies = pair_vec.new_zeros(species.shape[0])
        return energies.index_add(0, pair_index[0], 0.5 * pair).index_add(0, pair_index[1],
                                                                          0.5 * pair)
