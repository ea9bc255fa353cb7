"""What the equivariant message-passing models (NequIP, MACE) share: e3nn, the per-pair
inputs of their convolutions, the coupling matrices once per layer structure, the average
neighbour count from the training data, the receptive field, and the message-passing stages
(``StagedMessagePassing``) that LAMMPS's halo exchange runs one by one.

Between stages an atom's state is one row of doubles (what LAMMPS copies to ghosts):
[features h, zero-padded to the widest layer | element one-hot | energy so far]. The one-hot
travels so that a step needs no species input; the energy column carries the energy terms of
layers that read out as they go (MACE)."""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterable
from typing import NamedTuple

import torch

from ..base import StagedMessagePassing
from ..blocks import average_neighbour_count, polynomial_envelope


def e3nn_modules():
    """(e3nn.o3, e3nn.nn), or an ImportError that says what to install."""
    try:
        import e3nn  # noqa: F401
    except ImportError:  # pragma: no cover - e3nn is a dependency; say so if it is missing
        raise ImportError("nnpot's equivariant models need e3nn: pip install e3nn") from None
    from e3nn import nn as enn
    from e3nn import o3
    return o3, enn


class StateLayout(NamedTuple):
    """A state row: features h^t in its first ``dims[t]`` columns, zero-padded to ``width``;
    ``slots[t]``: which coupling tensor layer t reads; ``first_layers``: the first layer of each
    distinct convolution structure (whose couplings ``edge_features`` computes)."""
    dims: list[int]
    width: int
    slots: list[int]
    first_layers: list[int]


class EquivariantMessagePassing(StagedMessagePassing):
    """Base of NequIP and MACE. A subclass sets ``harmonics`` (e3nn spherical harmonics),
    ``bessel`` (a radial basis), ``poly_p`` (the envelope's order), ``embedding`` (one-hot →
    h⁰) and ``layers`` (each with ``irreps_in``, ``irreps_out`` and a ``pair_convolution``),
    registers the buffer ``avg_num_neighbors``, and implements ``layer_step`` and
    ``final_energy``; ``forward`` is the composition of the stages."""

    needs_statistics = True

    # ---------------------------------------------------------------- what a subclass adds
    @abc.abstractmethod
    def layer_step(self, step: int, h: torch.Tensor, one_hot: torch.Tensor,
                   couplings: torch.Tensor, envelope: torch.Tensor, radial: torch.Tensor,
                   pair_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer ``step``: h [N, dim_in] → (h' [N, dim_out], its energy term [N] or None)."""

    @abc.abstractmethod
    def final_energy(self, h: torch.Tensor) -> torch.Tensor | None:
        """The last features → their energy term [N] (None: the layers gave them all)."""

    # ---------------------------------------------------------------- the stages
    @property
    def n_message_steps(self) -> int:
        return len(self.layers)

    @functools.cached_property
    def _layout(self) -> StateLayout:
        """Where things sit in a state row, and which pair tensors each layer reads (derived
        once from the layers; they never change)."""
        dims = [self.layers[0].irreps_in.dim] + [layer.irreps_out.dim for layer in self.layers]
        structures, slots, first_layers = [], [], []
        for k, layer in enumerate(self.layers):
            structure = layer.pair_convolution.structure
            if structure not in structures:
                structures.append(structure)
                first_layers.append(k)
            slots.append(structures.index(structure))
        return StateLayout(dims, max(dims), slots, first_layers)

    def edge_features(self, pair_vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """pair_vec [P, 3] → (envelope [P], enveloped radial basis [P, n_bessel], the coupling
        matrices [P, columns, rows] of each distinct layer structure)."""
        distance = torch.linalg.vector_norm(pair_vec, dim=-1)
        envelope = polynomial_envelope(distance, self.cutoff, self.poly_p)
        radial = self.bessel(distance) * envelope[:, None]
        harmonics = self.harmonics(pair_vec)
        couplings = [self.layers[k].pair_convolution.pair_couplings(harmonics)
                     for k in self._layout.first_layers]
        return (envelope, radial, *couplings)

    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        """species [N] → state [N, width + S + 1]: h⁰ (padded), one-hot, energy 0."""
        one_hot = torch.nn.functional.one_hot(species, len(self.species)).to(
            self.avg_num_neighbors.dtype)
        dims, width = self._layout.dims, self._layout.width
        h = self.embedding(one_hot)
        return torch.cat([torch.nn.functional.pad(h, (0, width - dims[0])), one_hot,
                          one_hot.new_zeros(one_hot.shape[0], 1)], dim=1)

    def message_step(self, step: int, x: torch.Tensor, edges: tuple[torch.Tensor, ...],
                     pair_index: torch.Tensor) -> torch.Tensor:
        """Layer ``step`` on the state rows: [N, width + S + 1] → the same."""
        dims, width = self._layout.dims, self._layout.width
        h, one_hot, energy = x[:, :dims[step]], x[:, width:-1], x[:, -1]
        envelope, radial = edges[0], edges[1]
        couplings = edges[2 + self._layout.slots[step]]
        h, term = self.layer_step(step, h, one_hot, couplings, envelope, radial, pair_index)
        if term is not None:
            energy = energy + term
        return torch.cat([torch.nn.functional.pad(h, (0, width - dims[step + 1])), one_hot,
                          energy[:, None]], dim=1)

    def read_out(self, x: torch.Tensor) -> torch.Tensor:
        """Final state rows → per-atom energies [N] (model units)."""
        term = self.final_energy(x[:, :self._layout.dims[-1]])
        return x[:, -1] if term is None else x[:, -1] + term

    def node_features(self, species: torch.Tensor, pair_index: torch.Tensor,
                      pair_vec: torch.Tensor) -> list[torch.Tensor]:
        """The atom features after the embedding and after every layer: [N, dim] each, in
        e3nn's layout of ``layer.irreps_out`` (for tests of equivariance)."""
        dims = self._layout.dims
        edges = self.edge_features(pair_vec)
        x = self.initial_features(species)
        features = [x[:, :dims[0]]]
        for step in range(self.n_message_steps):
            x = self.message_step(step, x, edges, pair_index)
            features.append(x[:, :dims[step + 1]])
        return features

    @property
    def receptive_field(self) -> float:
        """Å: each layer passes messages one cutoff further."""
        return len(self.layers) * self.cutoff

    @torch.no_grad()
    def fit_statistics(self, inputs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                       ) -> None:
        """The average number of neighbours within the cutoff per atom (both directions)."""
        count = average_neighbour_count(inputs, self.cutoff)
        if count is not None:
            self.avg_num_neighbors.fill_(count)
