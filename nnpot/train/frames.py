"""Reading extxyz frames and their labels: energy, forces and stress (or virial) from
``atoms.info``, ``atoms.arrays`` or the stored calculator results, named by the config's keys,
checked with errors that name the file, frame and key; and the label tensors a graph carries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ..core.graph import AtomicGraph
from .config import KeysConfig


class DataError(ValueError):
    """A problem with a data file, naming the file and, where it applies, the frame."""


# -------------------------------------------------------------------------------------------
# Reading frames and their labels
# -------------------------------------------------------------------------------------------
def read_frames(path: str | Path) -> list[Atoms]:
    """All frames of an extxyz (or any ASE-readable) file, as ``ase.Atoms``."""
    return list(iter_frames(path))


def iter_frames(path: str | Path) -> Iterator[Atoms]:
    """The frames of an extxyz (or any ASE-readable) file one by one (``ase.io.iread``), so a
    file larger than memory can be read; a malformed frame → DataError naming file and frame."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path} holds no frames (the file is empty)")
    frames = ase.io.iread(path, index=":")
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            break
        except Exception as error:  # ASE raises many types for malformed files
            raise DataError(f"{path}, frame {index}: cannot read as extxyz: "
                            f"{type(error).__name__}: {error}") from None
        yield atoms
        index += 1
    if index == 0:
        raise DataError(f"{path} holds no frames")


def available_keys(atoms) -> list[str]:
    keys = set(atoms.info) | (set(atoms.arrays) - {"numbers", "positions"})
    if atoms.calc is not None:
        keys |= set(getattr(atoms.calc, "results", {}))
    return sorted(keys)


def _lookup(atoms, key: str):
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    return results.get(key)


def _as_voigt(value, what: str, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size == 9:
        m = array.reshape(3, 3)
        return np.array([m[0, 0], m[1, 1], m[2, 2], 0.5 * (m[1, 2] + m[2, 1]),
                         0.5 * (m[0, 2] + m[2, 0]), 0.5 * (m[0, 1] + m[1, 0])])
    if array.size == 6:
        return array
    raise DataError(f"{where}: {what} must have 6 (Voigt) or 9 (3×3) values, got {array.size}")


def frame_labels(atoms: Atoms, keys: KeysConfig, where: str) -> dict:
    """Energy (required), forces and stress (optional) of one frame, checked.

    ``where`` names the file and frame in error messages. Stress falls back to the virial
    (σ = −W/V) and is dropped for frames that are not periodic in 3D.
    """
    energy = _lookup(atoms, keys.energy)
    if energy is None:
        raise DataError(f"{where} has no energy key {keys.energy!r}; keys found: "
                        f"{available_keys(atoms)} (set data.keys.energy)")
    try:
        energy = float(np.asarray(energy).reshape(()))
    except (TypeError, ValueError):
        raise DataError(f"{where}: energy {keys.energy!r} is not a single number") from None
    labels = {"energy": energy, "forces": None, "stress": None}

    forces = _lookup(atoms, keys.forces)
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise DataError(f"{where}: forces {keys.forces!r} have shape {forces.shape}, "
                            f"expected ({len(atoms)}, 3)")
        labels["forces"] = forces

    stress = _lookup(atoms, keys.stress)
    if stress is not None:
        labels["stress"] = _as_voigt(stress, f"stress {keys.stress!r}", where)
    else:
        virial = _lookup(atoms, keys.virial)
        if virial is not None and atoms.pbc.all():
            labels["stress"] = -_as_voigt(virial, f"virial {keys.virial!r}", where) / atoms.get_volume()
    if labels["stress"] is not None and not atoms.pbc.all():
        labels["stress"] = None  # stress is undefined without a 3D-periodic cell

    for name in ("energy", "forces", "stress"):
        if labels[name] is not None and not np.all(np.isfinite(labels[name])):
            raise DataError(f"{where}: {name} contains NaN or inf")
    if not np.all(np.isfinite(atoms.positions)):
        raise DataError(f"{where}: positions contain NaN or inf")
    return labels


def label_arrays(labels: dict, n_atoms: int) -> dict[str, Any]:
    """A frame's labels (``frame_labels``) as the fixed-shape values every labelled graph holds:
    missing forces and stress become zeros, flagged by ``has_forces`` / ``has_stress``."""
    has_forces, has_stress = labels["forces"] is not None, labels["stress"] is not None
    return {"energy": labels["energy"],
            "has_forces": has_forces,
            "forces": labels["forces"] if has_forces else np.zeros((n_atoms, 3)),
            "has_stress": has_stress,
            "stress": labels["stress"] if has_stress else np.zeros(6)}


def attach_labels(graph: AtomicGraph, arrays: dict[str, Any]) -> AtomicGraph:
    """``graph`` with the label tensors of ``label_arrays``' values (see ``GraphDataset``)."""
    graph.energy = torch.tensor([float(arrays["energy"])], dtype=torch.float64)
    graph.forces = torch.as_tensor(np.asarray(arrays["forces"], dtype=np.float64))
    graph.stress = torch.as_tensor(np.asarray(arrays["stress"], dtype=np.float64)).reshape(1, 6)
    graph.has_forces = torch.tensor([bool(arrays["has_forces"])])
    graph.has_stress = torch.tensor([bool(arrays["has_stress"])])
    return graph
