"""Relaxation of positions (and the cell) with ASE's optimisers: FIRE, BFGS or LBFGS, the cell
through FrechetCellFilter, optionally with fixed symmetry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

from .inputs import GPA, PotentialLike, StructureLike, as_calculator, check_elements, read_structure


@dataclass
class RelaxResult:
    """Outcome of a relaxation: energy eV, max force eV/Å, stress GPa (Voigt), steps taken."""
    atoms: Atoms
    converged: bool
    steps: int
    energy: float
    fmax: float
    stress_gpa: np.ndarray | None

    def summary(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        text = (f"{state} after {self.steps} steps: E = {self.energy:.6f} eV, "
                f"max |F| = {self.fmax:.5f} eV/Å")
        if self.stress_gpa is not None:
            text += f", stress = [{', '.join(f'{s:.4f}' for s in self.stress_gpa)}] GPa"
        return text


OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")


def relax(atoms: StructureLike, potential: PotentialLike, cell: bool = False,
          fmax: float = 0.01, steps: int = 500, optimizer: str = "FIRE",
          fix_symmetry: bool = False, pressure: float = 0.0,
          output: str | os.PathLike | None = None, trajectory: str | os.PathLike | None = None,
          device: str = "cpu", dtype: str | None = None, log: Any = "-") -> RelaxResult:
    """Relax positions (and the cell with ``cell=True``) until every force is below ``fmax``.

    Args:
        atoms: ``ase.Atoms``, a pymatgen structure or an ASE-readable file.
        potential: a ``Potential``, a model file path or an ``NNPCalculator``.
        cell: relax the cell too (ASE's FrechetCellFilter; the criterion then includes the
            stress, scaled by the volume as ASE does); needs a 3D-periodic cell.
        fmax: eV/Å.  steps: at most this many optimiser steps.
        optimizer: FIRE | BFGS | LBFGS.  fix_symmetry: keep the space group (ase FixSymmetry).
        pressure: external pressure for the cell relaxation, GPa.
        output: write the relaxed structure (any ASE format, by extension).
        trajectory: ASE ``.traj`` of the optimisation.  log: optimiser log ("-" = stdout, None).

    Returns a ``RelaxResult``; ``converged`` is False when ``steps`` ran out.
    """
    import ase.optimize
    from ase.filters import FrechetCellFilter

    if optimizer.upper() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if not isinstance(fmax, (int, float)) or not fmax > 0:
        raise ValueError(f"fmax must be > 0 eV/Å, got {fmax!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a whole number ≥ 0, got {steps!r}")
    if pressure and not cell:
        raise ValueError("pressure acts on the cell: it needs cell=True")
    atoms = read_structure(atoms)
    calc = as_calculator(potential, device, dtype, skin=0.0)
    check_elements(atoms, calc)
    if cell and not atoms.pbc.all():
        raise ValueError(f"--cell relaxation needs a cell periodic in all three directions "
                         f"(pbc = {atoms.pbc.tolist()})")
    atoms.calc = calc
    own_constraints = list(atoms.constraints)  # e.g. FixAtoms from a POSCAR's selective dynamics
    if fix_symmetry:
        from ase.constraints import FixSymmetry
        atoms.set_constraint(own_constraints + [FixSymmetry(atoms)])
    target = FrechetCellFilter(atoms, scalar_pressure=pressure * GPA) if cell else atoms
    opt_class = getattr(ase.optimize, optimizer.upper())
    opt = opt_class(target, logfile=log, trajectory=str(trajectory) if trajectory else None)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    finally:
        if fix_symmetry:
            atoms.set_constraint(own_constraints)
    forces = atoms.get_forces()
    result = RelaxResult(
        atoms=atoms, converged=converged, steps=opt.nsteps, energy=atoms.get_potential_energy(),
        fmax=float(np.sqrt((forces**2).sum(axis=1)).max()) if len(atoms) else 0.0,
        stress_gpa=atoms.get_stress() / GPA if atoms.pbc.all() else None)
    if output:
        import ase.io
        ase.io.write(output, atoms)
    return result
