"""MD trajectories on disk: extxyz or HDF5, written frame by frame and flushed.

A run that is killed keeps every frame written before the kill: extxyz frames go out in one
``write`` call each, and the HDF5 file is written in SWMR mode (single writer, multiple readers),
which keeps the file readable at every flush.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

HDF5_SUFFIXES = (".h5", ".hdf5")
EXTXYZ_SUFFIXES = (".extxyz", ".xyz")


class TrajectoryWriter:
    """Append frames (positions, cell, velocities, energy, forces) to ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in HDF5_SUFFIXES + EXTXYZ_SUFFIXES:
            raise ValueError(f"trajectory {self.path}: use .extxyz/.xyz or .h5/.hdf5")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.kind = "hdf5" if suffix in HDF5_SUFFIXES else "extxyz"
        self._h5 = None
        self._text = open(self.path, "w") if self.kind == "extxyz" else None

    def write(self, atoms: Atoms, step: int, time_ps: float, **info: float) -> None:
        """One frame; ``info`` (extxyz only) adds per-frame values such as max_force_std."""
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        if self.kind == "extxyz":
            import ase.io

            frame = atoms.copy()
            frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
            frame.info.update(step=step, time_ps=time_ps, **info)
            buffer = io.StringIO()
            ase.io.write(buffer, frame, format="extxyz")
            self._text.write(buffer.getvalue())  # one write per frame
            self._text.flush()
            return
        self._write_hdf5(atoms, step, time_ps, energy, forces)

    def _write_hdf5(self, atoms, step, time_ps, energy, forces) -> None:
        import h5py

        n = len(atoms)
        if self._h5 is None:
            h5 = h5py.File(self.path, "w", libver="latest")
            h5["numbers"] = atoms.numbers
            h5["pbc"] = atoms.pbc
            for name, shape in (("positions", (n, 3)), ("velocities", (n, 3)), ("forces", (n, 3)),
                                ("cell", (3, 3)), ("energy", ()), ("step", ()), ("time_ps", ())):
                h5.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape),
                                  chunks=(1, *shape) if shape else (256,),
                                  dtype=np.int64 if name == "step" else np.float64)
            h5.swmr_mode = True
            self._h5 = h5
        h5 = self._h5
        if h5["positions"].shape[1] != n:
            raise ValueError(f"{self.path}: the number of atoms changed ({h5['positions'].shape[1]} → {n})")
        values = {"positions": atoms.positions, "velocities": atoms.get_velocities(),
                  "forces": forces, "cell": atoms.cell.array, "energy": energy, "step": step,
                  "time_ps": time_ps}
        for name, value in values.items():
            dataset = h5[name]
            dataset.resize(dataset.shape[0] + 1, axis=0)
            dataset[-1] = value
        h5.flush()

    def close(self) -> None:
        if self._text:
            self._text.close()
            self._text = None
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def read_trajectory(path: str | os.PathLike) -> list[Atoms]:
    """Frames of a trajectory written by ``TrajectoryWriter`` (either format)."""
    path = Path(path)
    if path.suffix.lower() not in HDF5_SUFFIXES:
        import ase.io
        return ase.io.read(path, index=":")
    import h5py

    frames = []
    # locking=False: an SWMR reader needs no lock, and taking one races the live writer
    # (BlockingIOError "unable to lock file" while `nnpot md` is still writing)
    with h5py.File(path, "r", libver="latest", swmr=True, locking=False) as h5:
        numbers, pbc = h5["numbers"][:], h5["pbc"][:]
        for k in range(h5["positions"].shape[0]):
            atoms = Atoms(numbers=numbers, positions=h5["positions"][k], cell=h5["cell"][k],
                          pbc=pbc, velocities=h5["velocities"][k])
            atoms.calc = SinglePointCalculator(atoms, energy=float(h5["energy"][k]),
                                               forces=h5["forces"][k])
            atoms.info.update(step=int(h5["step"][k]), time_ps=float(h5["time_ps"][k]))
            frames.append(atoms)
    return frames
