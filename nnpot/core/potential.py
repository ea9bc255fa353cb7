"""Potential: a model's per-atom energies → total energy, forces and stress.

E = Σ_i (scale·ε_i + shift + E0[Z_i] + ε^rep_i),  F = −∂E/∂R,  σ = (1/V)·∂E/∂ε (symmetric strain ε applied
to positions and cell). Forces and stress come from autograd (``geometry``), in one place, for every
model. The file format and ``load`` are in ``model_file``.
ε^rep_i is an optional physical pair repulsion under the model (``pair_repulsion="zbl"``,
``nnpot.models.zbl``); without it, zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ase.data import atomic_numbers, chemical_symbols
from torch import nn
from torch_geometric.data import Data

from ..models import AtomisticModel
from ..models.zbl import PAIR_REPULSIONS, ZBLRepulsion
from ..version import __version__
from .files import FORMAT, atomic_torch_save
from .geometry import Geometry, PairGeometry
from .graph import pair_vectors

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float32"``/``"float64"``/torch dtype/None → torch dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[dtype]


class Potential(nn.Module):
    """A model plus the energy reference: per-element E0, a scale and a shift.

    Args:
        model: any ``nnpot.models.AtomisticModel``; its ``species`` and ``cutoff`` are the
            potential's.
        e0: reference energy per element, eV (``{"Cu": -3.7}``); elements left out get 0.
        scale: multiplies the model's per-atom output (eV per model unit).
        shift: added to every atom's energy, eV.
        pair_repulsion: ``None`` or ``"zbl"``: the ZBL screened nuclear repulsion between atoms
            closer than their covalent-radius sum, added to the model's energy (the network
            learns the rest), so that hot MD cannot collapse two atoms into one.
        pair_repulsion_radius: with ``pair_repulsion``, one distance (Å) where it is switched
            off for every pair instead of the covalent-radius sums (see ``models/zbl.py``).
    """

    def __init__(self, model: AtomisticModel, e0: Mapping[str, float] | None = None,
                 scale: float = 1.0, shift: float = 0.0, pair_repulsion: str | None = None,
                 pair_repulsion_radius: float | None = None):
        super().__init__()
        if not isinstance(model, AtomisticModel):
            raise TypeError(f"model must be an nnpot AtomisticModel, got {type(model).__name__}")
        self.model = model
        e0 = dict(e0 or {})
        unknown = sorted(set(e0) - set(model.species))
        if unknown:
            raise ValueError(f"e0 names elements {unknown} that the model does not know "
                             f"(model species: {model.species})")
        lookup = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for index, symbol in enumerate(model.species):
            lookup[atomic_numbers[symbol]] = index
        self.register_buffer("species_lookup", lookup)
        self.register_buffer("e0", torch.tensor([float(e0.get(s, 0.0)) for s in model.species]))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))
        if pair_repulsion is not None and pair_repulsion not in PAIR_REPULSIONS:
            raise ValueError(f"pair_repulsion must be None or one of {PAIR_REPULSIONS}, got "
                             f"{pair_repulsion!r}")
        if pair_repulsion_radius is not None:
            if pair_repulsion is None:
                raise ValueError("pair_repulsion_radius is the switch-off distance of a pair "
                                 "repulsion: it needs pair_repulsion")
            if not (isinstance(pair_repulsion_radius, (int, float))
                    and not isinstance(pair_repulsion_radius, bool)
                    and 0 < pair_repulsion_radius < float("inf")):
                raise ValueError(f"pair_repulsion_radius must be a distance > 0 in Å, got "
                                 f"{pair_repulsion_radius!r}")
            pair_repulsion_radius = float(pair_repulsion_radius)
        self.pair_repulsion = pair_repulsion
        self.pair_repulsion_radius = pair_repulsion_radius
        self.repulsion = (ZBLRepulsion(model.species, model.cutoff, pair_repulsion_radius)
                          if pair_repulsion else None)
        self.provenance: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------------
    @property
    def species(self) -> list[str]:
        return self.model.species

    @property
    def cutoff(self) -> float:
        return self.model.cutoff

    @property
    def dtype(self) -> torch.dtype:
        return self.e0.dtype

    @property
    def device(self) -> torch.device:
        return self.e0.device

    def e0_dict(self) -> dict[str, float]:
        return {s: float(v) for s, v in zip(self.species, self.e0.tolist())}

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers [N] → index into ``species`` [N]; unknown elements are a ValueError."""
        numbers = numbers.to(self.species_lookup.device)
        if numbers.numel() and (int(numbers.min()) < 1 or int(numbers.max()) >= len(self.species_lookup)):
            raise ValueError(f"invalid atomic numbers {sorted(set(numbers.tolist()))}")
        index = self.species_lookup[numbers]
        if numbers.numel() and bool((index < 0).any()):
            missing = sorted({chemical_symbols[z] for z in numbers[index < 0].tolist()})
            raise ValueError(f"element(s) {', '.join(missing)} not known to this potential "
                             f"(its species: {', '.join(self.species)})")
        return index

    def model_inputs(self, graph: Data, dtype: torch.dtype | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the model sees of a graph or batch: species index [N], pair_index [2, P] and
        pair vectors [P, 3] Å (in ``dtype``, default the potential's), without strain."""
        dtype = dtype or self.dtype
        cell = graph.cell.to(dtype).reshape(-1, 3, 3)
        vec = pair_vectors(graph.pos.to(dtype), cell, graph.pair_index, graph.pair_shifts,
                           getattr(graph, "batch", None))
        return self.species_index(graph.numbers), graph.pair_index, vec

    # ---------------------------------------------------------------------------------------
    def forward(self, graph: Data, forces: bool = True, stress: bool = False,
                create_graph: bool = False, stresses: bool = False) -> dict[str, torch.Tensor]:
        """Energies and their derivatives for a graph or a batch of B graphs.

        Args:
            graph: ``AtomicGraph`` or a ``Batch`` of them (positions in Å).
            forces: compute F = −∂E/∂R.
            stress: compute σ = (1/V)·∂E/∂ε (NaN for structures not periodic in 3D).
            create_graph: keep the autograd graph of forces/stress (training on them).
            stresses: per-atom stresses, σ split over the atoms (``nnpot.core.geometry``).

        Returns a dict of tensors in the potential's dtype: ``energy`` [B] eV, ``energies`` [N]
        eV, and when asked ``forces`` [N, 3] eV/Å, ``stress`` [B, 6] eV/Å³ (Voigt, ASE sign) and
        ``stresses`` [N, 6] eV/Å³ (the same, per atom; they sum to each structure's stress).
        """
        geometry = Geometry(graph, self.dtype, self.species_index(graph.numbers), forces, stress,
                            stresses)
        return geometry.results(self.atom_energies(geometry), create_graph)

    def atom_energies(self, geometry: Geometry | PairGeometry, shared: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Per-atom energies [N] eV: scale·model + shift + E0 of the element (+ repulsion).
        ``shared``: the model's ``shared_part`` of this geometry, computed once for a committee."""
        if shared is None:
            per_atom = self.model(geometry.species, geometry.pair_index, geometry.pair_vec)
        else:
            per_atom = self.model.forward_from_shared(shared, geometry.species)
        return self.energies_from_model(per_atom, geometry)

    def energies_from_model(self, per_atom: torch.Tensor, geometry: Geometry | PairGeometry
                            ) -> torch.Tensor:
        """The model's per-atom energies [N] → eV: scale·model + shift + E0 (+ repulsion)."""
        energies = self.scale * per_atom + self.shift + self.e0[geometry.species]
        if self.repulsion is not None:
            energies = energies + self.repulsion(geometry.species, geometry.pair_index,
                                                 geometry.pair_vec)
        return energies

    def payload(self) -> dict[str, Any]:
        """Everything a model file holds for this potential (plain values and CPU tensors)."""
        payload = {
            "format": FORMAT,
            "format_version": 1,  # single potentials stay readable by nnpot of format 1
            "nnpot_version": __version__,
            "model_class": type(self.model).__name__,
            "hparams": dict(self.model.hparams),
            "species": list(self.species),
            "cutoff": self.cutoff,
            "e0": self.e0_dict(),
            "scale": float(self.scale),
            "shift": float(self.shift),
            "dtype": str(self.dtype).replace("torch.", ""),
            "provenance": dict(self.provenance),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        if self.pair_repulsion is not None:
            payload.update(format_version=3, pair_repulsion=self.pair_repulsion)
        if self.pair_repulsion_radius is not None:
            # Informative: the radii are also buffers in the state dict, so a format-3 reader
            # that does not know this entry still loads them.
            payload["pair_repulsion_radius"] = self.pair_repulsion_radius
        return payload

    # ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, provenance: Mapping[str, Any] | None = None) -> Path:
        """Write the potential to one file, atomically (a temporary file renamed into place).

        ``provenance`` (dataset hash, metrics, config…) is merged into ``self.provenance`` and
        stored; it must hold plain Python values (str, numbers, lists, dicts).
        """
        if provenance:
            self.provenance.update(provenance)
        return atomic_torch_save(self.payload(), path)
