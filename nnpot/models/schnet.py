"""SchNet (Schütt et al., J. Chem. Phys. 148, 241722 (2018)).

embedding → [interaction + residual] × T → atom-wise readout → per-atom energy.
An interaction is a continuous-filter convolution: a filter network turns the Gaussian expansion
of each distance into a per-feature weight, damped by a cosine cutoff; neighbours' features are
multiplied by it and summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import StagedMessagePassing, check_int
from .blocks import CosineCutoff, GaussianRBF, ShiftedSoftplus, pair_convolution


class SchNetInteraction(nn.Module):
    """One interaction block: features [N, F] → update [N, F] (added to the features by SchNet)."""

    def __init__(self, n_features: int, n_rbf: int, n_filters: int):
        super().__init__()
        self.filter_network = nn.Sequential(
            nn.Linear(n_rbf, n_filters), ShiftedSoftplus(), nn.Linear(n_filters, n_filters))
        self.atom_to_filter = nn.Linear(n_features, n_filters, bias=False)
        self.update = nn.Sequential(
            nn.Linear(n_filters, n_features), ShiftedSoftplus(), nn.Linear(n_features, n_features))

    def forward(self, x: torch.Tensor, rbf: torch.Tensor, envelope: torch.Tensor,
                pair_index: torch.Tensor) -> torch.Tensor:
        """x [N, F], rbf [P, n_rbf], envelope [P] (cutoff function), pair_index [2, P] → [N, F]."""
        weights = self.filter_network(rbf) * envelope[:, None]
        messages = pair_convolution(self.atom_to_filter(x), weights, pair_index)
        return self.update(messages)


class SchNet(StagedMessagePassing):
    """SchNet with ``n_interactions`` blocks of ``n_features`` features and ``n_rbf`` Gaussians.

    Args:
        species: elements the model knows (symbols or atomic numbers).
        cutoff: radius of the interactions, Å.
        n_features: width of the atom features.
        n_interactions: number of interaction blocks.
        n_rbf: number of Gaussians expanding each distance.
        n_filters: width of the filters (defaults to ``n_features``).
    """

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0, n_features: int = 128,
                 n_interactions: int = 3, n_rbf: int = 50, n_filters: int | None = None):
        check_int("n_features", n_features, minimum=2)  # the readout halves it
        check_int("n_interactions", n_interactions)
        check_int("n_rbf", n_rbf)
        n_filters = check_int("n_filters", n_filters) if n_filters is not None else n_features
        super().__init__(species, cutoff, n_features=n_features, n_interactions=n_interactions,
                         n_rbf=n_rbf, n_filters=n_filters)
        self.embedding = nn.Embedding(len(self.species), n_features)
        self.radial_basis = GaussianRBF(n_rbf, cutoff)
        self.envelope = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(
            SchNetInteraction(n_features, n_rbf, n_filters) for _ in range(n_interactions))
        self.readout = nn.Sequential(
            nn.Linear(n_features, n_features // 2), ShiftedSoftplus(), nn.Linear(n_features // 2, 1))

    @property
    def receptive_field(self) -> float:
        """Å: each interaction passes messages one cutoff further."""
        return len(self.interactions) * self.cutoff

    # The stages of StagedMessagePassing; its forward composes them.
    @property
    def n_message_steps(self) -> int:
        return len(self.interactions)

    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        """species [N] → atom features [N, F] before the first interaction."""
        return self.embedding(species)

    def edge_features(self, pair_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pair_vec [P, 3] Å → (Gaussian expansion [P, n_rbf], cosine cutoff [P])."""
        distances = torch.linalg.vector_norm(pair_vec, dim=-1)
        return self.radial_basis(distances), self.envelope(distances)

    def message_step(self, step: int, x: torch.Tensor, edges: tuple[torch.Tensor, torch.Tensor],
                     pair_index: torch.Tensor) -> torch.Tensor:
        """Interaction ``step`` with its residual: features [N, F] → [N, F]."""
        rbf, envelope = edges
        return x + self.interactions[step](x, rbf, envelope, pair_index)

    def read_out(self, x: torch.Tensor) -> torch.Tensor:
        """Final features [N, F] → per-atom energies [N] (model units)."""
        return self.readout(x).squeeze(-1)
