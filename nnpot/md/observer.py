"""What ``md()`` records while ASE's dynamics runs: an ``MDObserver`` attached to the integrator
logs a row every ``interval`` steps (energies, T, P, V, a committee's force deviation), writes
the trajectory, the CSV log and the candidate frames as it goes (a killed run keeps what it
wrote), and checks every step that the simulation has not blown up or left the training data."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
from ase import Atoms

from ..core.calculator import NNPCalculator
from .inputs import GPA
from .trajectory import TrajectoryWriter

MIN_DISTANCE = 0.5  # Å: closer than this, the simulation has blown up
COLUMNS = ("step", "time_ps", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "pressure_GPa",
           "volume_A3")


class MDInstabilityError(RuntimeError):
    """The simulation blew up (atoms too close, or a non-finite energy)."""


class ExtrapolationError(MDInstabilityError):
    """A committee's force deviation passed the stop threshold: the model is extrapolating."""


def check_stability(atoms: Atoms, calc: NNPCalculator, step: int) -> None:
    """MDInstabilityError when the energy is not finite or two atoms are closer than 0.5 Å."""
    energy = atoms.get_potential_energy()
    if not math.isfinite(energy):
        raise MDInstabilityError(f"step {step}: the energy is {energy}; the simulation blew up "
                                 f"(try a smaller timestep)")
    if calc.min_distance < MIN_DISTANCE:
        raise MDInstabilityError(f"step {step}: two atoms are {calc.min_distance:.3f} Å apart "
                                 f"(< {MIN_DISTANCE} Å); the simulation blew up (try a smaller "
                                 f"timestep)")


class MDObserver:
    """Attached to an ASE integrator: ``observe`` every ``interval`` steps, ``on_step`` every
    step; ``close`` the files at the end; ``log_arrays`` is the log as arrays.

    Args:
        atoms, calc, dynamics: the system, its calculator and the ASE integrator.
        timestep: fs.  interval: steps between logged rows and trajectory frames.
        output, log, candidates: trajectory, CSV log and candidate-frame files (or None).
        uncertainty_threshold: eV/Å; logged frames above it are candidates (committees).
        uncertainty_stop: eV/Å; any step above it stops the run (``ExtrapolationError``).
        progress_bar: a tqdm bar advanced every step.
    """

    def __init__(self, atoms: Atoms, calc: NNPCalculator, dynamics, timestep: float,
                 interval: int, output: str | os.PathLike | None = None,
                 log: str | os.PathLike | None = None,
                 candidates: str | os.PathLike | None = None,
                 uncertainty_threshold: float | None = None,
                 uncertainty_stop: float | None = None, progress_bar=None):
        self.atoms, self.calc, self.dynamics = atoms, calc, dynamics
        self.timestep, self.interval = timestep, interval
        self.threshold, self.stop = uncertainty_threshold, uncertainty_stop
        self.bar = progress_bar
        self.periodic = bool(atoms.pbc.all())
        self.records: dict[str, list] = {key: [] for key in COLUMNS}
        if calc.is_committee:
            self.records["max_force_std_eVA"] = []
        self.candidates: list[Atoms] = []
        self.writer = TrajectoryWriter(output) if output else None
        self.candidate_writer = TrajectoryWriter(candidates) if candidates else None
        self.log_file = open(log, "w", newline="") if log else None
        self.log_writer = csv.writer(self.log_file) if self.log_file else None
        if self.log_writer:
            self.log_writer.writerow(list(self.records))

    def attach(self) -> None:
        self.dynamics.attach(self.observe, interval=self.interval)
        self.dynamics.attach(self.on_step, interval=1)

    def _deviation(self) -> float:
        return float(np.max(self.calc.get_property("forces_std", self.atoms)))

    def observe(self) -> None:
        """One row of the log (and a trajectory frame, and a candidate when uncertain)."""
        atoms, step = self.atoms, self.dynamics.nsteps
        check_stability(atoms, self.calc, step)
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        pressure = (-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / GPA
                    if self.periodic else math.nan)
        time_ps = step * self.timestep / 1000
        row = [step, time_ps, epot, ekin, epot + ekin, atoms.get_temperature(), pressure,
               atoms.get_volume() if self.periodic else math.nan]
        if self.calc.is_committee:
            deviation = self._deviation()
            row.append(deviation)
            if self.threshold is not None and deviation > self.threshold:
                frame = atoms.copy()
                frame.info.update(step=step, max_force_std=deviation)
                self.candidates.append(frame)
                if self.candidate_writer:
                    self.candidate_writer.write(atoms, step=step, time_ps=time_ps,
                                                max_force_std=deviation)
        for key, value in zip(self.records, row):
            self.records[key].append(value)
        if self.writer:
            self.writer.write(atoms, step=step, time_ps=time_ps)
        if self.log_writer:
            self.log_writer.writerow([f"{v:.10g}" if isinstance(v, float) else v for v in row])
            self.log_file.flush()

    def on_step(self) -> None:
        """Every step: stability (``observe`` checks its own steps) and the stop threshold."""
        step = self.dynamics.nsteps
        if step % self.interval != 0:
            check_stability(self.atoms, self.calc, step)
        if self.stop is not None:
            deviation = self._deviation()
            if deviation > self.stop:
                raise ExtrapolationError(
                    f"step {step}: the committee's largest force deviation is "
                    f"{deviation:.3f} eV/Å (> {self.stop:g}, the stop threshold): the "
                    f"model is extrapolating; add reference data for such structures")
        if step > 0 and self.bar is not None:  # observers also run once before the first step
            self.bar.update(1)

    def close(self) -> None:
        for writer in (self.writer, self.candidate_writer):
            if writer:
                writer.close()
        if self.log_file:
            self.log_file.close()

    def log_arrays(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(values, dtype=float) for key, values in self.records.items()}
