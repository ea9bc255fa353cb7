"""Potential: a model's per-atom energies → total energy, forces and stress, and the model file.

E = Σ_i (scale·ε_i + shift + E0[Z_i] + ε^rep_i),  F = −∂E/∂R,  σ = (1/V)·∂E/∂ε (symmetric strain ε applied
to positions and cell). Forces and stress come from autograd here, in one place, for every model.
ε^rep_i is an optional physical pair repulsion under the model (``pair_repulsion="zbl"``,
``nnpot.repulsion``); without it, zero.
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
from .repulsion import PAIR_REPULSIONS, ZBLRepulsion
from .version import __version__

FORMAT = "nnpot-model"
FORMAT_VERSION = 3  # 1: one potential; 2: adds committee files (kind: committee); 3: adds
#                      pair_repulsion (written as 3 only by potentials that have one, so every
#                      other file stays readable by older nnpot, and an older nnpot refuses a
#                      file whose energies it would get wrong)

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
        pair_repulsion: ``None`` or ``"zbl"``: the ZBL screened nuclear repulsion between atoms
            closer than their covalent-radius sum, added to the model's energy (the network
            learns the rest), so that hot MD cannot collapse two atoms into one.
    """

    def __init__(self, model: AtomisticModel, e0: Mapping[str, float] | None = None,
                 scale: float = 1.0, shift: float = 0.0, pair_repulsion: str | None = None):
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
        self.pair_repulsion = pair_repulsion
        self.repulsion = ZBLRepulsion(model.species, model.cutoff) if pair_repulsion else None
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
        geometry = Geometry(graph, self.dtype, self.species_index(graph.numbers), forces, stress)
        return geometry.results(self.atom_energies(geometry), create_graph)

    def atom_energies(self, geometry: "Geometry", shared: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Per-atom energies [N] eV: scale·model + shift + E0 of the element (+ repulsion).
        ``shared``: the model's ``shared_part`` of this geometry, computed once for a committee."""
        if shared is None:
            per_atom = self.model(geometry.species, geometry.pair_index, geometry.pair_vec)
        else:
            per_atom = self.model.forward_from_shared(shared, geometry.species)
        return self.energies_from_model(per_atom, geometry)

    def energies_from_model(self, per_atom: torch.Tensor, geometry: "Geometry") -> torch.Tensor:
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


class Geometry:
    """What every member of a potential sees of a graph or batch, set up once: positions that
    require grad (for forces), a zero strain applied to positions and cell (for stress), the
    species index and the pair vectors [P, 3] Å. ``results`` turns per-atom energies into
    energies, forces and stress; a committee calls it once per member on the same geometry."""

    def __init__(self, graph: Data, dtype: torch.dtype, species: torch.Tensor, forces: bool,
                 stress: bool):
        self.graph, self.forces, self.stress, self.species = graph, forces, stress, species
        pos = graph.pos.to(dtype)
        self.cell = graph.cell.to(dtype).reshape(-1, 3, 3)
        self.n_graphs = self.cell.shape[0]
        batch = getattr(graph, "batch", None)
        self.batch = (torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
                      if batch is None else batch)
        self.wrt = []
        if forces or stress:
            pos = pos.detach().requires_grad_(True)
            self.wrt.append(pos)
        if stress:
            strain = torch.zeros_like(self.cell, requires_grad=True)
            self.wrt.append(strain)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            # Positions and cell deformed by (1 + ε); at ε = 0 nothing changes but the graph.
            if self.n_graphs == 1:
                strained_pos = pos + pos @ symmetric[0]
            else:
                strained_pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[self.batch])
            strained_cell = self.cell + self.cell @ symmetric
        else:
            strained_pos, strained_cell = pos, self.cell
        self.pair_index = graph.pair_index
        self.pair_vec = pair_vectors(strained_pos, strained_cell, graph.pair_index,
                                     graph.pair_shifts, self.batch)

    def results(self, energies: torch.Tensor, create_graph: bool,
                retain_graph: bool | None = None) -> dict[str, torch.Tensor]:
        """Per-atom energies [N] → ``energy`` [B], ``energies`` [N] and, as asked, ``forces``
        [N, 3] and ``stress`` [B, 6] (see ``Potential.forward``). ``retain_graph`` keeps the
        shared part of the graph for the next member's derivatives."""
        energy = torch.zeros(self.n_graphs, dtype=energies.dtype,
                             device=energies.device).index_add(0, self.batch, energies)
        results = {"energy": energy, "energies": energies}
        if not self.wrt:
            return results
        grads = _gradients(energy.sum(), self.wrt, create_graph, retain_graph)
        if self.forces:
            results["forces"] = -grads[0]
        if self.stress:
            # Stress exists only for 3D-periodic cells; other structures get NaN rows (a
            # volume of 1 in the division keeps their gradient finite: it is never used).
            periodic = self.graph.pbc.reshape(-1, 3).all(dim=1).to(energy.device)
            volume = torch.where(periodic, torch.linalg.det(self.cell).abs(),
                                 torch.ones_like(energy))
            sigma = voigt(grads[-1] / volume[:, None, None])
            results["stress"] = torch.where(periodic[:, None], sigma,
                                            torch.full_like(sigma, float("nan")))
        return results


def _gradients(output: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool,
               retain_graph: bool | None = None) -> list[torch.Tensor]:
    """∂output/∂inputs, with zeros where the output does not depend on an input (no pairs)."""
    if not output.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(output, inputs, create_graph=create_graph,
                                retain_graph=retain_graph, allow_unused=True)
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


def _check_version(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nnpot model file (it lacks the '{FORMAT}' marker)")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(f"{path} uses model-file format {version}, written by nnpot "
                         f"{data.get('nnpot_version')}; this nnpot ({__version__}) reads formats "
                         f"up to {FORMAT_VERSION}. Upgrade nnpot to load it.")


def _check_model_file(path: Path, data: Any, where: str = "") -> None:
    """Every entry of a model file (or of one committee member, ``where``) present and of the
    right type; a clear ValueError if not."""
    where = f" ({where})" if where else ""
    if not isinstance(data, dict):
        raise ValueError(f"{path} is a damaged nnpot model file{where}: not a mapping")
    for key, (types, what) in MODEL_FILE_ENTRIES.items():
        if key not in data:
            raise ValueError(f"{path} is a damaged nnpot model file{where}: the entry {key!r} "
                             f"({what}) is missing")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise ValueError(f"{path} is a damaged nnpot model file{where}: the entry {key!r} "
                             f"({what}) is a {type(data[key]).__name__}")
    if data["dtype"] not in DTYPES:
        raise ValueError(f"{path}{where}: unsupported dtype {data['dtype']!r} in the model file "
                         f"(nnpot models are {' or '.join(DTYPES)})")
    if data["model_class"] not in MODELS:
        raise ValueError(f"{path}{where} holds a {data['model_class']!r} model, which this nnpot "
                         f"does not provide (known: {sorted(MODELS)})")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> "Potential | Committee":
    """Read a model file written by :meth:`Potential.save` or :meth:`Committee.save`.

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
    _check_version(path, data)
    if data.get("kind") == "committee":
        from .committee import Committee

        members = data.get("members")
        if not isinstance(members, list) or not members:
            raise ValueError(f"{path} is a damaged nnpot committee file: no members")
        committee = Committee([_potential_from(path, member, device, f"member {k}")
                               for k, member in enumerate(members)])
        committee.provenance = dict(data.get("provenance", {}))
        return committee
    return _potential_from(path, data, device)


def _potential_from(path: Path, data: Any, device: torch.device, where: str = "") -> Potential:
    """A Potential from one model file's (or committee member's) entries, checked."""
    _check_model_file(path, data, where)
    where = f" ({where})" if where else ""
    try:
        model = MODELS[data["model_class"]](**data["hparams"])
        potential = Potential(model, e0=data["e0"], scale=data["scale"], shift=data["shift"],
                              pair_repulsion=data.get("pair_repulsion"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}{where}: the stored hyper-parameters do not build a "
                         f"{data['model_class']}: {error}") from None
    potential.to(device=device, dtype=DTYPES[data["dtype"]])  # before loading: keeps bits exact
    try:
        potential.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}{where}: the weights do not fit a {data['model_class']} with the "
                         f"stored hyper-parameters: {str(error)[:300]}") from None
    potential.provenance = dict(data.get("provenance", {}))
    return potential
