"""CGCNN (Xie & Grossman, Phys. Rev. Lett. 120, 145301 (2018)) as a potential.

element embedding → [gated convolution + residual] × L → atom-wise MLP → per-atom energy.
The convolution is PyG's ``CGConv``: for each directed edge j → i, z_ij = [x_i, x_j, e_ij]
with e_ij the Gaussian expansion of the distance, and

    x_i ← x_i + Σ_j σ(z_ij W_f + b_f) ⊙ softplus(z_ij W_s + b_s).

The original graph has a hard cutoff; a potential's energy must be smooth as atoms cross it,
so every message here is multiplied by the cosine cutoff f_c(d_ij) (the one change to the
layer, in ``SmoothCGConv.message``). The half pair list gives both directions of each pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.nn import CGConv

from .base import AtomisticModel, check_int
from .blocks import CosineCutoff, GaussianRBF, ShiftedSoftplus, directed_edge_features


class SmoothCGConv(CGConv):
    """``CGConv`` whose messages vanish smoothly at the cutoff: ``forward(x [N, F],
    edge_index [2, E], edge_attr [E, G + 1]) → [N, F]``, the last column of ``edge_attr`` the
    cutoff function (it rides in ``edge_attr`` because PyG builds ``propagate`` from
    ``CGConv``'s own arguments)."""

    def message(self, x_i: torch.Tensor, x_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return super().message(x_i, x_j, edge_attr[:, :-1]) * edge_attr[:, -1:]


class CGCNN(AtomisticModel):
    """Crystal graph convolutional network with ``n_layers`` gated convolutions.

    Args:
        species: elements the model knows (symbols or atomic numbers).
        cutoff: radius of the graph, Å.
        n_features: width of the atom features.
        n_layers: number of convolutions.
        n_gaussians: Gaussians expanding each distance on [0, cutoff].
    """

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0, n_features: int = 64,
                 n_layers: int = 3, n_gaussians: int = 40):
        check_int("n_features", n_features, minimum=2)
        check_int("n_layers", n_layers)
        check_int("n_gaussians", n_gaussians, minimum=2)
        super().__init__(species, cutoff, n_features=n_features, n_layers=n_layers,
                         n_gaussians=n_gaussians)
        self.embedding = nn.Embedding(len(self.species), n_features)
        self.distance_expansion = GaussianRBF(n_gaussians, cutoff)
        self.envelope = CosineCutoff(cutoff)
        self.convolutions = nn.ModuleList(SmoothCGConv(n_features, dim=n_gaussians)
                                          for _ in range(n_layers))
        self.readout = nn.Sequential(nn.Linear(n_features, n_features), ShiftedSoftplus(),
                                     nn.Linear(n_features, 1))

    @property
    def receptive_field(self) -> float:
        """Å: each convolution reaches one cutoff further."""
        return len(self.convolutions) * self.cutoff

    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        """species [N], pair_index [2, P], pair_vec [P, 3] Å → per-atom energies [N]."""
        edge_index, edge_attr = directed_edge_features(pair_index, pair_vec,
                                                       self.distance_expansion, self.envelope)
        x = self.embedding(species)
        for convolution in self.convolutions:
            x = convolution(x, edge_index, edge_attr)
        return self.readout(x).squeeze(-1)
