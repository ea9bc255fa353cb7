"""Behler–Parrinello high-dimensional neural network potential (HDNNP).

Behler & Parrinello, Phys. Rev. Lett. 98, 146401 (2007); Behler, J. Chem. Phys. 134, 074106 (2011).

    E = Σ_i NN_{Z_i}(G_i)

G_i are atom i's element-resolved symmetry functions (``symmetry_functions``), centred and scaled
by their training-set mean and spread (per element, from the trainer's model-statistics hook);
NN_Z is one small network per element.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..base import AtomisticModel, HyperParameterError, check_int
from .n2p2 import read_input_nn
from .symmetry_functions import (
    CUTOFF_FUNCTIONS,
    SymmetryFunctionDescriptor,
    default_functions,
    default_functions_from,
    parse_function,
)

ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "silu": nn.SiLU}


class ElementNetworks(nn.Module):
    """One MLP per element: features [N, D] and species [N] → per-atom outputs [N].

    The element's weights are stacked ([S, in, out] per layer) and applied to that element's
    atoms only; with one element the atoms need no gathering at all.
    """

    def __init__(self, n_species: int, n_inputs: int, hidden: Sequence[int], activation: str):
        super().__init__()
        widths = [n_inputs, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = fan_in ** -0.5  # the default nn.Linear initialisation, per element
            self.weights.append(nn.Parameter(torch.empty(n_species, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_species, fan_out).uniform_(-bound, bound)))
        self.activation = ACTIVATIONS[activation]()

    def _mlp(self, x: torch.Tensor, s: int) -> torch.Tensor:
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.addmm(bias[s], x, weight[s])
            if layer < last:
                x = self.activation(x)
        return x.squeeze(-1)

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        n_species = self.weights[0].shape[0]
        if n_species == 1:
            return self._mlp(x, 0)
        out = x.new_zeros(x.shape[0])
        for s in range(n_species):
            # No branch on an element being absent: a traced (exported) graph cannot have one,
            # and an empty selection costs next to nothing.
            atoms = torch.nonzero(species == s).flatten()
            out = out.index_copy(0, atoms, self._mlp(x.index_select(0, atoms), s))
        return out


class HDNNP(AtomisticModel):
    """Behler–Parrinello HDNNP.

    Args:
        species: elements the model knows.
        cutoff: Å; every symmetry function's cutoff must be ≤ it (the largest one usually is).
        symmetry_functions: ``None`` for a default set from the cutoff (``default_functions``),
            a mapping of that set's arguments (``{"n_radial": 16, "angular_cutoff": 5.0}``),
            the path of an n2p2 ``input.nn`` (its ``symfunction_short`` lines, lengths in Å;
            see ``HDNNP.from_n2p2`` for the rest of the file and for Bohr), or a list of dicts,
            each applied to every neighbour element (G2) or unordered pair
            of neighbour elements (G3, G9): ``{"type": "G2", "eta": 0.5, "rs": 0.0,
            "cutoff": 5.0}``, ``{"type": "G9", "eta": 0.01, "zeta": 4, "lambda": -1,
            "cutoff": 3.5}`` (η in Å⁻², r_s and cutoffs in Å; ``rs`` optional for all).
        hidden: widths of each element network's hidden layers.
        activation: tanh | softplus | silu.
        cutoff_function: cos | p2 (n2p2's polynomial).
    """

    needs_statistics = True
    path_hyperparameters = ("symmetry_functions",)  # an n2p2 input.nn
    # Its scatter-adds over angle triplets become atomic adds in parallel compiled kernels:
    # 4.7× slower on one thread (2048 atoms: 61 ms serial, 281 / 625 ms parallel on 1 / 2
    # threads); it scales over MPI ranks instead (one cutoff deep, no ghost graph).
    serial_kernels = True

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0,
                 symmetry_functions: Sequence[Mapping[str, Any]] | None = None,
                 hidden: Sequence[int] = (25, 25), activation: str = "tanh",
                 cutoff_function: str = "cos"):
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
            raise HyperParameterError("hidden", f"must be a list of layer widths, got {hidden!r}")
        hidden = [check_int(f"hidden[{k}]", width) for k, width in enumerate(hidden)]
        if activation not in ACTIVATIONS:
            raise HyperParameterError("activation", f"must be one of {sorted(ACTIVATIONS)}, "
                                                    f"got {activation!r}")
        if cutoff_function not in CUTOFF_FUNCTIONS:
            raise HyperParameterError("cutoff_function", f"must be one of {CUTOFF_FUNCTIONS}, "
                                                         f"got {cutoff_function!r}")
        super().__init__(species, cutoff, symmetry_functions=None, hidden=hidden,
                         activation=activation, cutoff_function=cutoff_function)
        if isinstance(symmetry_functions, (str, os.PathLike)):
            symmetry_functions = read_input_nn(symmetry_functions).symmetry_functions
        if symmetry_functions is None:
            functions = default_functions(self.cutoff)
        elif isinstance(symmetry_functions, Mapping):
            functions = default_functions_from(symmetry_functions, self.cutoff)
        else:
            if isinstance(symmetry_functions, (str, bytes)) or \
                    not isinstance(symmetry_functions, Sequence):
                raise HyperParameterError("symmetry_functions", f"must be a list of mappings, got "
                                                                f"{type(symmetry_functions).__name__}")
            functions = [parse_function(spec, self.cutoff, f"entry {k}")
                         for k, spec in enumerate(symmetry_functions)]
        # The file stores the resolved set, so a model rebuilt from it never depends on defaults.
        self.hparams["symmetry_functions"] = [f.as_dict() for f in functions]
        n_species = len(self.species)
        self.descriptor = SymmetryFunctionDescriptor(n_species, functions, cutoff_function)
        n_features = self.descriptor.n_features
        self.register_buffer("feature_mean", torch.zeros(n_species, n_features))
        self.register_buffer("feature_scale", torch.ones(n_species, n_features))  # 1 / spread
        self.networks = ElementNetworks(n_species, n_features, hidden, activation)

    @classmethod
    def from_n2p2(cls, path: str | os.PathLike, length_unit: str = "angstrom",
                  **overrides: Any) -> HDNNP:
        """An untrained HDNNP set up as an n2p2 ``input.nn`` describes it: its elements,
        symmetry functions, cutoff function, hidden layers and activation (``overrides`` win;
        ``length_unit``: "angstrom" or "bohr", the unit of the file's lengths). The weights
        are not read: nnpot trains its own."""
        arguments = read_input_nn(path, length_unit).hdnnp_arguments()
        arguments.update(overrides)
        return cls(**arguments)

    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        """species [N], pair_index [2, P], pair_vec [P, 3] Å → per-atom energies [N]."""
        return self.forward_from_shared(self.shared_part(species, pair_index, pair_vec), species)

    def shared_key(self) -> tuple:
        """HDNNPs with the same symmetry functions share them in a committee (most of a call's
        cost: the networks on top are cheap)."""
        return ("HDNNP", tuple(self.species), repr(self.hparams["symmetry_functions"]),
                self.hparams["cutoff_function"])

    def shared_part(self, species: torch.Tensor, pair_index: torch.Tensor,
                    pair_vec: torch.Tensor) -> torch.Tensor:
        """The raw symmetry functions [N, n_features]."""
        return self.descriptor(species, pair_index, pair_vec)

    def forward_from_shared(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Raw symmetry functions [N, n_features] → per-atom energies [N]."""
        if len(self.species) == 1:
            features = (features - self.feature_mean[0]) * self.feature_scale[0]
        else:
            features = (features - self.feature_mean[species]) * self.feature_scale[species]
        return self.networks(features, species)

    @torch.no_grad()
    def fit_statistics(self, inputs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                       ) -> None:
        """Mean and spread of every symmetry function over each element's training atoms
        (float64 sums); a function that never varies for an element keeps scale 1."""
        n_species, n_features = self.feature_mean.shape
        count = torch.zeros(n_species, dtype=torch.float64)
        total = torch.zeros(n_species, n_features, dtype=torch.float64)
        squares = torch.zeros(n_species, n_features, dtype=torch.float64)
        for species, pair_index, pair_vec in inputs:
            features = self.descriptor(species, pair_index, pair_vec).double().cpu()
            species = species.cpu()
            count += torch.bincount(species, minlength=n_species).double()
            total.index_add_(0, species, features)
            squares.index_add_(0, species, features**2)
        seen = count > 0
        mean = torch.where(seen[:, None], total / count.clamp(min=1)[:, None], 0.0)
        variance = torch.where(seen[:, None], squares / count.clamp(min=1)[:, None] - mean**2, 0.0)
        spread = variance.clamp(min=0).sqrt()
        # Constant functions (e.g. a pair of elements never seen together) stay unscaled.
        constant = spread <= 1e-6 * (mean.abs() + 1.0)
        scale = torch.where(constant, torch.ones_like(spread), 1.0 / spread)
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_scale.copy_(scale.to(self.feature_scale))
