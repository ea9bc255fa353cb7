"""What the MD and relaxation drivers accept: a structure (``ase.Atoms``, a pymatgen
Structure/Molecule, or any ASE-readable file) and a potential (a ``Potential``, an
``NNPCalculator`` or a model file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ase import Atoms, units

from ..core.calculator import NNPCalculator

if TYPE_CHECKING:
    from pymatgen.core import Molecule, Structure

    from ..core.potential import Potential

StructureLike = Union[Atoms, "Structure", "Molecule", str, os.PathLike]
PotentialLike = Union["Potential", NNPCalculator, str, os.PathLike]
GPA = units.GPa     # eV/Å³ per GPa


def read_structure(source: StructureLike) -> Atoms:
    """``ase.Atoms`` from Atoms, a pymatgen Structure/Molecule, or any ASE-readable file."""
    if isinstance(source, Atoms):
        return source
    if type(source).__module__.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor
        return AseAtomsAdaptor.get_atoms(source)
    import ase.io

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"structure file {path} not found")
    try:
        atoms = ase.io.read(path)  # the last frame of a trajectory
    except Exception as error:  # ASE raises many types for unreadable files
        raise ValueError(f"cannot read a structure from {path}: {type(error).__name__}: "
                         f"{error}") from None
    if len(atoms) == 0:
        raise ValueError(f"{path} holds no atoms")
    return atoms


def as_calculator(potential: PotentialLike, device: str = "cpu", dtype: str | None = None,
                  skin: float = 0.5) -> NNPCalculator:
    """An NNPCalculator from a calculator (returned as is), a Potential or a model file path."""
    if isinstance(potential, NNPCalculator):
        return potential
    return NNPCalculator(potential, device=device, dtype=dtype, skin=skin)


def check_elements(atoms: Atoms, calc: NNPCalculator) -> None:
    """A ValueError naming an element of ``atoms`` the potential was not trained on."""
    import torch
    calc.potential.species_index(torch.as_tensor(atoms.numbers))
