"""MPNN (Gilmer et al., ICML 2017) as a potential: the edge-network message function with a GRU
update, the framework of "Neural Message Passing for Quantum Chemistry".

element embedding → T × [message m_i = Σ_j A(d_ij) h_j, h_i ← GRU(m_i, h_i)] → per-atom MLP.
A(d_ij) is an F × F matrix made by a network of the Gaussian expansion of the distance (PyG's
``NNConv``, the edge network), multiplied by the cosine cutoff f_c(d_ij) so that the energy is
smooth as atoms cross the cutoff. The weights of the message and update functions are shared
across the T steps, as in the paper; the half pair list gives both directions of each pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.nn import NNConv

from .base import AtomisticModel, check_int
from .blocks import CosineCutoff, GaussianRBF, ShiftedSoftplus, directed_edge_features


class EdgeNetwork(nn.Module):
    """[E, G + 1] (the Gaussians and, last, the cutoff function) → [E, F·F] message matrices,
    each damped by its edge's cutoff function."""

    def __init__(self, n_gaussians: int, n_features: int, hidden: int):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(n_gaussians, hidden), ShiftedSoftplus(),
                                     nn.Linear(hidden, n_features * n_features))

    def forward(self, edge_attr: torch.Tensor) -> torch.Tensor:
        return self.network(edge_attr[:, :-1]) * edge_attr[:, -1:]


class MPNN(AtomisticModel):
    """Edge-network message passing with a GRU update over ``n_steps`` steps.

    Args:
        species: elements the model knows (symbols or atomic numbers).
        cutoff: radius of the graph, Å.
        n_features: width of the hidden states h_i.
        n_steps: message-passing steps T (shared weights).
        n_gaussians: Gaussians expanding each distance on [0, cutoff].
        edge_hidden: width of the edge network's hidden layer.
    """

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0, n_features: int = 64,
                 n_steps: int = 3, n_gaussians: int = 20, edge_hidden: int = 64):
        check_int("n_features", n_features, minimum=2)
        check_int("n_steps", n_steps)
        check_int("n_gaussians", n_gaussians, minimum=2)
        check_int("edge_hidden", edge_hidden)
        super().__init__(species, cutoff, n_features=n_features, n_steps=n_steps,
                         n_gaussians=n_gaussians, edge_hidden=edge_hidden)
        self.embedding = nn.Embedding(len(self.species), n_features)
        self.distance_expansion = GaussianRBF(n_gaussians, cutoff)
        self.envelope = CosineCutoff(cutoff)
        # NNConv's own root weight is left out: the GRU sees h_i itself
        self.message = NNConv(n_features, n_features,
                              EdgeNetwork(n_gaussians, n_features, edge_hidden),
                              aggr="add", root_weight=False)
        self.update = nn.GRUCell(n_features, n_features)
        self.readout = nn.Sequential(nn.Linear(n_features, n_features), ShiftedSoftplus(),
                                     nn.Linear(n_features, 1))

    @property
    def receptive_field(self) -> float:
        """Å: each step reaches one cutoff further."""
        return self.hparams["n_steps"] * self.cutoff

    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        """species [N], pair_index [2, P], pair_vec [P, 3] Å → per-atom energies [N]."""
        edge_index, edge_attr = directed_edge_features(pair_index, pair_vec,
                                                       self.distance_expansion, self.envelope)
        h = self.embedding(species)
        for _ in range(self.hparams["n_steps"]):
            h = self.update(self.message(h, edge_index, edge_attr), h)
        return self.readout(h).squeeze(-1)
