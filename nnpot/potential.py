"""Potential: a model's per-atom energies → total energy, forces and stress, and the model file.

E = Σ_i (scale·ε_i + shift + E0[Z_i]),  F = −∂E/∂R,  σ = (1/V)·∂E/∂ε (symmetric strain ε applied
to positions and cell). Forces and stress come from autograd here, in one place, for every model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from ase.data import atomic_numbers, chemical_symbols
from torch import nn
from torch_geometric.data import Data

from .devices import resolve_device
from .files import atomic_write
from .graph import pair_vectors
from .models import MODELS, AtomisticModel
from .version import __version__

FORMAT = "nnpot-model"
FORMAT_VERSION = 1

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


def voigt(tensor: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] symmetric → [B, 6] in ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    return tensor[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


class Potential(nn.Module):
    """A model plus the energy reference: per-element E0, a scale and a shift.

    Args:
        model: any ``nnpot.models.AtomisticModel``; its ``species`` and ``cutoff`` are the
            potential's.
        e0: reference energy per element, eV (``{"Cu": -3.7}``); elements left out get 0.
        scale: multiplies the model's per-atom output (eV per model unit).
        shift: added to every atom's energy, eV.
    """

    def __init__(self, model: AtomisticModel, e0: Mapping[str, float] | None = None,
                 scale: float = 1.0, shift: float = 0.0):
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
                create_graph: bool = False) -> dict[str, torch.Tensor]:
        """Energies and their derivatives for a graph or a batch of B graphs.

        Args:
            graph: ``AtomicGraph`` or a ``Batch`` of them (positions in Å).
            forces: compute F = −∂E/∂R.
            stress: compute σ = (1/V)·∂E/∂ε (NaN for structures not periodic in 3D).
            create_graph: keep the autograd graph of forces/stress (training on them).

        Returns a dict of tensors in the potential's dtype: ``energy`` [B] eV, ``energies`` [N]
        eV, and when asked ``forces`` [N, 3] eV/Å and ``stress`` [B, 6] eV/Å³ (Voigt, ASE sign).
        """
        dtype = self.dtype
        pos = graph.pos.to(dtype)
        cell = graph.cell.to(dtype).reshape(-1, 3, 3)
        n_graphs = cell.shape[0]
        batch = getattr(graph, "batch", None)
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        species = self.species_index(graph.numbers)

        wrt = []
        if forces or stress:
            pos = pos.detach().requires_grad_(True)
            wrt.append(pos)
        if stress:
            strain = torch.zeros_like(cell, requires_grad=True)
            wrt.append(strain)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            # Positions and cell deformed by (1 + ε); at ε = 0 nothing changes but the graph.
            if n_graphs == 1:
                strained_pos = pos + pos @ symmetric[0]
            else:
                strained_pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[batch])
            strained_cell = cell + cell @ symmetric
        else:
            strained_pos, strained_cell = pos, cell

        pair_vec = pair_vectors(strained_pos, strained_cell, graph.pair_index, graph.pair_shifts,
                                batch)
        per_atom = self.model(species, graph.pair_index, pair_vec)
        energies = self.scale * per_atom + self.shift + self.e0[species]
        energy = torch.zeros(n_graphs, dtype=dtype, device=pos.device).index_add(0, batch, energies)
        results = {"energy": energy, "energies": energies}
        if not wrt:
            return results

        grads = _gradients(energy.sum(), wrt, create_graph)
        if forces:
            results["forces"] = -grads[0]
        if stress:
            # Stress exists only for 3D-periodic cells; other structures get NaN rows (a
            # volume of 1 in the division keeps their gradient finite: it is never used).
            periodic = graph.pbc.reshape(-1, 3).all(dim=1).to(pos.device)
            volume = torch.where(periodic, torch.linalg.det(cell).abs(), torch.ones_like(energy))
            sigma = voigt(grads[1] / volume[:, None, None])
            results["stress"] = torch.where(periodic[:, None], sigma, torch.full_like(sigma, float("nan")))
        return results

    # ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, provenance: Mapping[str, Any] | None = None) -> Path:
        """Write the potential to one file, atomically (a temporary file renamed into place).

        ``provenance`` (dataset hash, metrics, config…) is merged into ``self.provenance`` and
        stored; it must hold plain Python values (str, numbers, lists, dicts).
        """
        if provenance:
            self.provenance.update(provenance)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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
        return atomic_torch_save(payload, path)


def _gradients(output: torch.Tensor, inputs: list[torch.Tensor],
               create_graph: bool) -> list[torch.Tensor]:
    """∂output/∂inputs, with zeros where the output does not depend on an input (no pairs)."""
    if not output.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(output, inputs, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file."""
    return atomic_write(path, lambda f: torch.save(payload, f))


# What a model file must hold: key → (accepted types, what it is). One place checks them all.
MODEL_FILE_ENTRIES = {
    "format_version": (int, "the format version"),
    "model_class": (str, "the model class name"),
    "hparams": (dict, "the model's hyper-parameters"),
    "e0": (dict, "the per-element reference energies"),
    "scale": ((int, float), "the energy scale"),
    "shift": ((int, float), "the energy shift"),
    "dtype": (str, "the dtype"),
    "state_dict": (dict, "the weights"),
}


def _check_model_file(path: Path, data: Any) -> None:
    """Every entry of a model file present and of the right type; a clear ValueError if not."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nnpot model file (it lacks the '{FORMAT}' marker)")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(f"{path} uses model-file format {version}, written by nnpot "
                         f"{data.get('nnpot_version')}; this nnpot ({__version__}) reads formats "
                         f"up to {FORMAT_VERSION}. Upgrade nnpot to load it.")
    for key, (types, what) in MODEL_FILE_ENTRIES.items():
        if key not in data:
            raise ValueError(f"{path} is a damaged nnpot model file: the entry {key!r} ({what}) "
                             f"is missing")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise ValueError(f"{path} is a damaged nnpot model file: the entry {key!r} ({what}) "
                             f"is a {type(data[key]).__name__}")
    if data["dtype"] not in DTYPES:
        raise ValueError(f"{path}: unsupported dtype {data['dtype']!r} in the model file "
                         f"(nnpot models are {' or '.join(DTYPES)})")
    if data["model_class"] not in MODELS:
        raise ValueError(f"{path} holds a {data['model_class']!r} model, which this nnpot does not "
                         f"provide (known: {sorted(MODELS)})")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Potential:
    """Read a model file written by :meth:`Potential.save`.

    The file is read with ``torch.load(weights_only=True)``: a model file holds data only and
    can never run code. A missing, truncated, damaged or foreign file, or one written by a newer
    nnpot format, is a ValueError (FileNotFoundError when missing) that says which; so is a
    device this machine does not have.
    """
    path = Path(path)
    device = resolve_device(device)  # before reading: a missing GPU is not a corrupt file
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt/foreign files
        raise ValueError(f"{path} is not a readable nnpot model file (truncated, corrupt or not "
                         f"written by nnpot): {type(error).__name__}: {str(error)[:200]}") from None
    _check_model_file(path, data)
    try:
        model = MODELS[data["model_class"]](**data["hparams"])
        potential = Potential(model, e0=data["e0"], scale=data["scale"], shift=data["shift"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: the stored hyper-parameters do not build a "
                         f"{data['model_class']}: {error}") from None
    potential.to(device=device, dtype=DTYPES[data["dtype"]])  # before loading: keeps bits exact
    try:
        potential.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit a {data['model_class']} with the stored "
                         f"hyper-parameters: {str(error)[:300]}") from None
    potential.provenance = dict(data.get("provenance", {}))
    return potential
