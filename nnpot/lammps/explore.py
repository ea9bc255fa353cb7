"""Committee MD in LAMMPS for exploration (``nnpot learn`` with ``explore.engine: lammps``).

The committee is exported once (``nnpot lammps export``, float64) and driven by its mean, as in
``nnpot md``; every ``interval`` steps LAMMPS dumps the positions and each atom's force
deviation (``fix pair … force_std``, the calculator's ``forces_std``). What comes back is one
``Atoms`` per dumped step with ``info["max_force_std"]`` (eV/Å) and ``arrays["forces_std"]``.

LAMMPS wants a lower-triangular cell (a along x, b in the xy plane), so a start structure is
rotated into that orientation first; the frames keep it (the reference calculation that labels
them does not care how a crystal is turned).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from .build import build_plugin
from .export import export_for_lammps
from .run import LammpsRunError, nnpot_preamble, read_dump, run_lammps, write_data

# LAMMPS fixes of each nnpot md ensemble; damping over 100 steps (temperature) and 1000 steps
# (pressure), as LAMMPS's documentation suggests.
_ENSEMBLES = {
    "nve": "fix md all nve",
    "nvt": "fix md all nve\nfix bath all langevin {T} {T} {tdamp} {seed} zero yes",
    "langevin": "fix md all nve\nfix bath all langevin {T} {T} {tdamp} {seed} zero yes",
    "bussi": "fix md all nve\nfix bath all temp/csvr {T} {T} {tdamp} {seed}",
    "nose-hoover": "fix md all nvt temp {T} {T} {tdamp}",
    "npt": "fix md all npt temp {T} {T} {tdamp} iso {P} {P} {pdamp}",
    "npt-aniso": "fix md all npt temp {T} {T} {tdamp} aniso {P} {P} {pdamp}",
}
BAR_PER_GPA = 1e4


@dataclass
class LammpsExploration:
    """The dumped frames of one run, and whether LAMMPS stopped before the last step."""

    frames: list[Atoms]
    note: str


def lammps_orientation(atoms: Atoms) -> Atoms:
    """``atoms`` turned so that its cell is lower-triangular (LAMMPS's form), wrapped."""
    turned = atoms.copy()
    cell, rotation = atoms.cell.standard_form()
    turned.set_cell(cell, scale_atoms=False)
    turned.positions = atoms.positions @ rotation.T
    turned.wrap()
    return turned


def export_committee(model: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """The float64 package of a committee's model file, compiled once into ``folder``."""
    package = Path(folder) / "committee-float64.pt2"
    if not package.is_file():
        export_for_lammps(model, package, log=lambda line: None, first_member=False)
    return package


def explore(package: str | os.PathLike, species: list[str], start: Atoms, folder: str | os.PathLike,
            ensemble: str, temperature: float, steps: int, timestep: float, interval: int,
            seed: int, pressure: float = 0.0) -> LammpsExploration:
    """Run ``steps`` MD steps of ``timestep`` fs from ``start`` in LAMMPS with the committee
    ``package`` (its elements in model order: ``species``), dumping every ``interval`` steps.

    ``pressure`` in GPa (npt ensembles). A run LAMMPS stops with an error (lost atoms, say)
    keeps the frames dumped before it; the note says why it stopped.
    """
    if ensemble not in _ENSEMBLES:
        raise ValueError(f"explore.ensemble {ensemble!r} has no LAMMPS form; one of "
                         f"{', '.join(_ENSEMBLES)}")
    missing = sorted(set(start.get_chemical_symbols()) - set(species))
    if missing:
        raise ValueError(f"the start structure has {', '.join(missing)}, which the committee "
                         f"(elements {' '.join(species)}) does not know")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atoms = lammps_orientation(start)
    write_data(atoms, folder / "data.lmp", species)
    dt = timestep * 1e-3  # ps
    fixes = _ENSEMBLES[ensemble].format(T=temperature, tdamp=100 * dt, pdamp=1000 * dt,
                                        P=pressure * BAR_PER_GPA, seed=seed % 900_000_000 + 1)
    script = nnpot_preamble(build_plugin(log=lambda line: None), package, " ".join(species)) + f"""
timestep {dt}
velocity all create {temperature} {seed % 900_000_000 + 1} dist gaussian mom yes rot no
{fixes}
fix deviation all pair {interval} nnpot force_std 0
dump frames all custom {interval} frames.txt id type x y z f_deviation
dump_modify frames format float %.17g sort id
thermo {interval}
run {steps}
"""
    note = "finished"
    try:
        run_lammps(script, folder)
    except LammpsRunError as error:
        note = f"stopped early: LAMMPS: {str(error).strip().splitlines()[-1][:200]}"
    return LammpsExploration(read_frames(folder / "frames.txt", species), note)


def read_frames(path: Path, species: list[str]) -> list[Atoms]:
    """The frames of ``dump custom … id type x y z f_deviation`` as periodic Atoms."""
    if not path.is_file():
        return []
    frames = []
    for snapshot in read_dump(path):
        column = snapshot.columns
        atoms = Atoms([species[int(t) - 1] for t in column["type"]],
                      positions=np.stack([column[c] for c in "xyz"], axis=1),
                      cell=snapshot.cell, pbc=True)
        atoms.arrays["forces_std"] = column["f_deviation"].copy()
        atoms.info["max_force_std"] = float(column["f_deviation"].max())
        frames.append(atoms)
    return frames
