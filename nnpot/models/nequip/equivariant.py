"""What the equivariant message-passing models (NequIP, MACE) share: e3nn, the per-pair
inputs of their convolutions, the coupling matrices once per layer structure, the average
neighbour count from the training data, and the receptive field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch

from ..base import AtomisticModel
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


class PairInputs(NamedTuple):
    """Per pair: harmonics Y(r̂) [P, n_harmonics], envelope [P], enveloped radial basis
    [P, n_bessel]; per atom: the element one-hot [N, S] (in the pair vectors' dtype)."""
    harmonics: torch.Tensor
    envelope: torch.Tensor
    radial: torch.Tensor
    one_hot: torch.Tensor


class EquivariantMessagePassing(AtomisticModel):
    """Base of NequIP and MACE. A subclass sets ``harmonics`` (e3nn spherical harmonics),
    ``bessel`` (a radial basis), ``poly_p`` (the envelope's order) and ``layers`` (each with a
    ``pair_convolution``), and registers the buffer ``avg_num_neighbors``."""

    needs_statistics = True

    @property
    def receptive_field(self) -> float:
        """Å: each layer passes messages one cutoff further."""
        return len(self.layers) * self.cutoff

    def pair_inputs(self, species: torch.Tensor, pair_vec: torch.Tensor) -> PairInputs:
        distance = torch.linalg.vector_norm(pair_vec, dim=-1)
        envelope = polynomial_envelope(distance, self.cutoff, self.poly_p)
        return PairInputs(self.harmonics(pair_vec), envelope,
                          self.bessel(distance) * envelope[:, None],
                          torch.nn.functional.one_hot(species, len(self.species)).to(
                              pair_vec.dtype))

    @staticmethod
    def couplings(layer, harmonics: torch.Tensor, cache: dict) -> torch.Tensor:
        """The harmonics' coupling matrices of ``layer``'s convolution, computed once per
        layer structure (``cache``: one dict per forward)."""
        convolution = layer.pair_convolution
        if convolution.structure not in cache:
            cache[convolution.structure] = convolution.pair_couplings(harmonics)
        return cache[convolution.structure]

    @torch.no_grad()
    def fit_statistics(self, inputs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                       ) -> None:
        """The average number of neighbours within the cutoff per atom (both directions)."""
        count = average_neighbour_count(inputs, self.cutoff)
        if count is not None:
            self.avg_num_neighbors.fill_(count)
