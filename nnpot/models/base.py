"""The contract every model follows: per-atom energies from species and pair vectors."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ase.data import atomic_numbers, chemical_symbols
from torch import nn


class HyperParameterError(ValueError):
    """A model hyper-parameter out of range or of the wrong type; ``name`` is the parameter."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name} {message}")
        self.name = name


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, or a ``HyperParameterError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HyperParameterError(name, f"must be an integer ≥ {minimum}, got {value!r}")
    if value < minimum:
        raise HyperParameterError(name, f"must be ≥ {minimum}, got {value}")
    return value


def normalise_species(species: Sequence[str | int]) -> list[str]:
    """Element symbols from symbols or atomic numbers, checked, without duplicates."""
    symbols = []
    for s in species:
        if isinstance(s, (int,)) and 0 < s < len(chemical_symbols):
            symbol = chemical_symbols[s]
        elif isinstance(s, str) and s in atomic_numbers and s != "X":
            symbol = s
        else:
            raise ValueError(f"unknown element {s!r} in species {list(species)}")
        if symbol in symbols:
            raise ValueError(f"element {symbol} appears twice in species {list(species)}")
        symbols.append(symbol)
    if not symbols:
        raise ValueError("species must name at least one element")
    return symbols


class AtomisticModel(nn.Module):
    """Base class of nnpot models.

    A model maps a structure to per-atom energies and nothing else; ``nnpot.Potential`` adds
    reference energies, forces and stress for every model alike.

    ``forward(species, pair_index, pair_vec) -> energies``:

    * ``species``    [N] int64, index of each atom's element in ``self.species``
    * ``pair_index`` [2, P] int64, each pair (i, j) within the cutoff once (``nnpot.core.graph``)
    * ``pair_vec``   [P, 3] float, r_ij = R[j] − R[i] + S·cell in Å (carries the autograd graph)
    * returns        [N] float, per-atom energies in model units (scaled by the Potential)

    Pairs may be longer than ``cutoff`` (a Verlet list with a skin); a model must give them
    exactly zero weight. ``hparams`` are the constructor's keyword arguments, saved in model
    files so that the same model can be rebuilt.

    The model-statistics hook: a model that needs constants from the training data (descriptor
    means and spreads, an average neighbour count) sets ``needs_statistics = True``; the trainer
    then calls :meth:`fit_statistics` once, before training, with the training set's inputs, and
    the model keeps what it derives as buffers (saved in the model file, restored on resume).
    Without it the model still works (identity scaling), so an untrained model can be timed.
    """

    needs_statistics = False
    # Hyper-parameters that may name a file; a training config gives them relative to itself.
    path_hyperparameters: tuple[str, ...] = ()
    # True when the model's compiled kernels (``nnpot lammps export``) should run on one thread:
    # scatter-adds over many small rows become atomic adds in parallel kernels.
    serial_kernels = False

    def __init__(self, species: Sequence[str | int], cutoff: float, **hparams: Any):
        super().__init__()
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0 \
                or cutoff == float("inf"):
            raise HyperParameterError("cutoff", f"must be a positive number of Å, got {cutoff!r}")
        self.species = normalise_species(species)
        self.cutoff = float(cutoff)
        self.hparams = {"species": list(self.species), "cutoff": self.cutoff, **hparams}

    @classmethod
    def check_hyperparameters(cls, cutoff: float, **params: Any) -> None:
        """Raise ``HyperParameterError`` (or TypeError for an unknown keyword) if ``params``
        cannot build this model. Default: build one for a single element and drop it."""
        cls(species=["H"], cutoff=cutoff, **params)

    @property
    def receptive_field(self) -> float:
        """How far (Å) an atom's energy reaches: ``cutoff`` for a descriptor model, message
        steps × ``cutoff`` for message passing. A domain decomposition (LAMMPS) needs ghost
        atoms out to this distance for every owned atom's energy to be exact."""
        return self.cutoff

    # Committees: members whose ``shared_key`` is equal (and not None) compute ``shared_part``
    # once and each finish with ``forward_from_shared``; the energies are those of ``forward``.
    def shared_key(self) -> Any:
        """A hashable that is equal for models whose ``shared_part`` is the same function of
        the inputs (no trainable weights in it); None: nothing to share (the default)."""
        return None

    def shared_part(self, species: torch.Tensor, pair_index: torch.Tensor,
                    pair_vec: torch.Tensor) -> torch.Tensor:
        """The weight-free first part of ``forward`` (see ``shared_key``)."""
        raise TypeError(f"{type(self).__name__} shares nothing with other committee members "
                        f"(its shared_key is None)")

    def forward_from_shared(self, shared: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies [N] from ``shared_part``'s output (see ``shared_key``)."""
        raise TypeError(f"{type(self).__name__} shares nothing with other committee members "
                        f"(its shared_key is None)")

    def fit_statistics(self, inputs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                       ) -> None:
        """Derive data constants from the training set, given as ``(species, pair_index,
        pair_vec)`` batches (the ``forward`` inputs, no gradient). Default: nothing to derive."""


class StagedMessagePassing(AtomisticModel, metaclass=abc.ABCMeta):
    """A model that comes in message-passing stages, so that ``nnpot lammps export`` can
    compile each stage on its own and LAMMPS can exchange ghost atoms' features between ranks
    after every message step (halo exchange). ``forward`` is the composition of the stages —
    one code path for ASE and LAMMPS; a subclass implements the stages:

    * ``n_message_steps``: how many message steps;
    * ``edge_features(pair_vec [P, 3])``: the per-pair inputs every step reads;
    * ``initial_features(species [N])``: atom features [N, F] before the first step;
    * ``message_step(step, x [N, F], edges, pair_index)``: features after step ``step``;
    * ``read_out(x [N, F])``: per-atom energies [N] (model units).
    """

    @property
    @abc.abstractmethod
    def n_message_steps(self) -> int:
        """Message steps of the model."""

    @abc.abstractmethod
    def edge_features(self, pair_vec: torch.Tensor) -> Any:
        """pair_vec [P, 3] Å → the per-pair inputs every message step reads."""

    @abc.abstractmethod
    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        """species [N] → atom features [N, F] before the first message step."""

    @abc.abstractmethod
    def message_step(self, step: int, x: torch.Tensor, edges: Any,
                     pair_index: torch.Tensor) -> torch.Tensor:
        """Message step ``step``: features [N, F] → [N, F]."""

    @abc.abstractmethod
    def read_out(self, x: torch.Tensor) -> torch.Tensor:
        """Final features [N, F] → per-atom energies [N] (model units)."""

    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        """species [N], pair_index [2, P], pair_vec [P, 3] Å → per-atom energies [N]."""
        edges = self.edge_features(pair_vec)
        x = self.initial_features(species)
        for step in range(self.n_message_steps):
            x = self.message_step(step, x, edges, pair_index)
        return self.read_out(x)
