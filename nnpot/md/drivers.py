"""MD and relaxation: thin layers over ASE's integrators, optimisers and cell filters.

``md()`` picks an ASE integrator for the ensemble, starts from Maxwell–Boltzmann velocities
(fixed seed), writes the trajectory (extxyz or HDF5, flushed frame by frame so a killed run
keeps what it wrote), a CSV log and a PNG of the traces, and stops with ``MDInstabilityError``
when the simulation blows up. ``relax()`` runs FIRE/BFGS/LBFGS, optionally with the cell
(FrechetCellFilter) and fixed symmetry, and reports whether it converged.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from ase import Atoms, units

from ..core.calculator import NNPCalculator
from ..core.structure_checks import OverlappingAtomsError
from .trajectory import TrajectoryWriter

if TYPE_CHECKING:
    from pymatgen.core import Molecule, Structure

    from ..core.potential import Potential

# What the drivers accept: a structure (Atoms, pymatgen, or any ASE-readable file) and a
# potential (a Potential, a calculator, or a model file).
StructureLike = Union[Atoms, "Structure", "Molecule", str, os.PathLike]
PotentialLike = Union["Potential", NNPCalculator, str, os.PathLike]

ENSEMBLES = ("nve", "nvt", "langevin", "bussi", "nose-hoover", "npt", "npt-aniso")
NEEDS_STRESS = ("npt", "npt-aniso")
MIN_DISTANCE = 0.5  # Å: closer than this, the simulation has blown up
GPA = units.GPa     # eV/Å³ per GPa


class MDInstabilityError(RuntimeError):
    """The simulation blew up (atoms too close, or a non-finite energy)."""


class ExtrapolationError(MDInstabilityError):
    """A committee's force deviation passed the stop threshold: the model is extrapolating."""


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


def _check_elements(atoms: Atoms, calc: NNPCalculator) -> None:
    import torch
    calc.potential.species_index(torch.as_tensor(atoms.numbers))


# -------------------------------------------------------------------------------------------
@dataclass
class MDResult:
    """What an MD run measured. Energies in eV, T in K, P in GPa, volume in Å³, time in ps."""
    atoms: Atoms
    steps: int
    log: dict[str, np.ndarray] = field(default_factory=dict)
    mean_temperature: float = math.nan
    mean_pressure: float = math.nan
    drift_mev_per_atom_ps: float = math.nan  # NVE: slope of the total energy
    ns_per_day: float = math.nan
    # committees: frames whose largest per-atom force deviation passed the threshold
    candidates: list[Atoms] = field(default_factory=list)

    def summary(self) -> str:
        time_ps = self.log["time_ps"][-1] if len(self.log.get("time_ps", [])) else 0
        lines = [f"{self.steps} steps, {time_ps:.3f} ps, "
                 f"{self.ns_per_day:.3f} ns/day",
                 f"mean T = {self.mean_temperature:.1f} K"]
        if not math.isnan(self.mean_pressure):
            lines.append(f"mean P = {self.mean_pressure:.4f} GPa, mean V = "
                         f"{np.mean(self.log['volume_A3']):.2f} Å³")
        if not math.isnan(self.drift_mev_per_atom_ps):
            lines.append(f"NVE energy drift = {self.drift_mev_per_atom_ps:+.4f} meV/atom/ps")
        if "max_force_std_eVA" in self.log:
            deviation = self.log["max_force_std_eVA"]
            lines.append(f"committee force deviation: max {np.max(deviation):.4f} eV/Å, "
                         f"{len(self.candidates)} candidate frame(s)")
        return "\n".join(lines)


def _integrator(atoms: Atoms, ensemble: str, timestep_fs: float, temperature: float,
                pressure_gpa: float, friction: float, tdamp_fs: float, pdamp_fs: float,
                rng: np.random.Generator):
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.verlet import VelocityVerlet

    dt = timestep_fs * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, dt)
    if ensemble in ("nvt", "langevin"):
        # ASE's recommended Langevin: fixcm=False, the centre of mass held by FixCom (md()
        # adds and removes it).
        return Langevin(atoms, dt, temperature_K=temperature, friction=friction / units.fs,
                        fixcm=False, rng=rng)
    if ensemble == "bussi":
        return Bussi(atoms, dt, temperature_K=temperature, taut=tdamp_fs * units.fs, rng=rng)
    if ensemble == "nose-hoover":
        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature, tdamp=tdamp_fs * units.fs)
    npt = IsotropicMTKNPT if ensemble == "npt" else MTKNPT
    return npt(atoms, dt, temperature_K=temperature, pressure_au=pressure_gpa * GPA,
               tdamp=tdamp_fs * units.fs, pdamp=pdamp_fs * units.fs)


def md(atoms: StructureLike, potential: PotentialLike, ensemble: str = "nvt",
       temperature: float = 300.0, timestep: float = 1.0, steps: int = 1000, pressure: float = 0.0,
       friction: float = 0.01, tdamp: float | None = None, pdamp: float | None = None,
       seed: int = 0, output: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
       interval: int = 10, plot: str | os.PathLike | None = None, device: str = "cpu",
       dtype: str | None = None, skin: float = 0.5, init_velocities: bool = True,
       progress: bool = True, uncertainty_threshold: float | None = None,
       uncertainty_stop: float | None = None,
       candidates: str | os.PathLike | None = None) -> MDResult:
    """Run molecular dynamics with an nnpot potential.

    Args:
        atoms: ``ase.Atoms``, a pymatgen structure or an ASE-readable file (not modified when a
            file; an Atoms object is moved in place).
        potential: a ``Potential``, a model file path or an ``NNPCalculator``.
        ensemble: nve | nvt (= langevin) | bussi | nose-hoover | npt (isotropic MTK) | npt-aniso
            (full-cell MTK).
        temperature: K (also the initial Maxwell–Boltzmann temperature).
        timestep: fs.  steps: number of MD steps.
        pressure: GPa (NPT).  friction: 1/fs (Langevin).
        tdamp, pdamp: thermostat/barostat time constants, fs (default 100 and 1000 time steps).
        seed: seeds the initial velocities and the stochastic thermostats.
        output: trajectory file, ``.extxyz``/``.xyz`` or ``.h5``/``.hdf5``, a frame every
            ``interval`` steps.  log: CSV of step, time, energies, T, P, V every ``interval`` steps.
        plot: PNG of the traces at the end.
        skin: Verlet skin of the calculator, Å (neighbour lists are reused between steps).
        uncertainty_threshold: with a committee, eV/Å: every logged frame (each ``interval``
            steps) whose largest per-atom force deviation exceeds it is a candidate for new
            reference data — kept in ``MDResult.candidates`` and appended to ``candidates``
            (extxyz). The log gets the column ``max_force_std_eVA`` whenever the model is a
            committee.
        uncertainty_stop: with a committee, eV/Å: stop at the first step whose largest force
            deviation exceeds it (``ExtrapolationError``: the model is extrapolating).

    Raises ``MDInstabilityError`` when atoms come closer than 0.5 Å or the energy is not
    finite; the trajectory and log written so far are kept.
    """
    _check_md_arguments(ensemble=ensemble, temperature=temperature, timestep=timestep,
                        steps=steps, friction=friction, tdamp=tdamp, pdamp=pdamp,
                        interval=interval, skin=skin)
    atoms = read_structure(atoms)
    calc = as_calculator(potential, device, dtype, skin)
    _check_elements(atoms, calc)
    _check_uncertainty_arguments(calc, uncertainty_threshold, uncertainty_stop, candidates)
    periodic = bool(atoms.pbc.all())
    if ensemble in NEEDS_STRESS and not periodic:
        raise ValueError(f"ensemble {ensemble!r} needs the stress, which needs a cell periodic in "
                         f"all three directions (pbc = {atoms.pbc.tolist()})")
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    # One atom has no motion but its centre of mass: removing that would leave no degree of
    # freedom (temperature 0/0), so a single atom keeps it.
    several = len(atoms) > 1
    if init_velocities:
        from ase.md.velocitydistribution import Stationary, thermalize_momenta
        thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
        if several:
            Stationary(atoms)
    dynamics = _integrator(atoms, ensemble, timestep, temperature, pressure, friction,
                           tdamp or 100 * timestep, pdamp or 1000 * timestep, rng)
    hold_centre = ensemble in ("nvt", "langevin") and not atoms.constraints and several
    if hold_centre:
        from ase.constraints import FixCom
        atoms.set_constraint(FixCom())

    records: dict[str, list] = {k: [] for k in ("step", "time_ps", "epot_eV", "ekin_eV",
                                                "etot_eV", "temperature_K", "pressure_GPa",
                                                "volume_A3")}
    if calc.is_committee:
        records["max_force_std_eVA"] = []
    found: list[Atoms] = []
    writer = TrajectoryWriter(output) if output else None
    candidate_writer = TrajectoryWriter(candidates) if candidates else None
    log_file = open(log, "w", newline="") if log else None
    log_writer = csv.writer(log_file) if log_file else None
    if log_writer:
        log_writer.writerow(list(records))
    n_atoms = len(atoms)

    def observe() -> None:
        _check_stability(atoms, calc, dynamics.nsteps)
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        pressure_now = (-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / GPA
                        if periodic else math.nan)
        row = [dynamics.nsteps, dynamics.nsteps * timestep / 1000, epot, ekin, epot + ekin,
               atoms.get_temperature(), pressure_now,
               atoms.get_volume() if periodic else math.nan]
        if calc.is_committee:
            deviation = float(np.max(calc.get_property("forces_std", atoms)))
            row.append(deviation)
            if uncertainty_threshold is not None and deviation > uncertainty_threshold:
                frame = atoms.copy()
                frame.info.update(step=dynamics.nsteps, max_force_std=deviation)
                found.append(frame)
                if candidate_writer:
                    candidate_writer.write(atoms, step=dynamics.nsteps, time_ps=row[1],
                                           max_force_std=deviation)
        for key, value in zip(records, row):
            records[key].append(value)
        if writer:
            writer.write(atoms, step=dynamics.nsteps, time_ps=row[1])
        if log_writer:
            log_writer.writerow([f"{v:.10g}" if isinstance(v, float) else v for v in row])
            log_file.flush()

    bar = _progress_bar(steps, timestep, progress)
    started = time.perf_counter()

    def on_step() -> None:
        if dynamics.nsteps % interval != 0:  # observe() checks on its own steps
            _check_stability(atoms, calc, dynamics.nsteps)
        if uncertainty_stop is not None:
            deviation = float(np.max(calc.get_property("forces_std", atoms)))
            if deviation > uncertainty_stop:
                raise ExtrapolationError(
                    f"step {dynamics.nsteps}: the committee's largest force deviation is "
                    f"{deviation:.3f} eV/Å (> {uncertainty_stop:g}, the stop threshold): the "
                    f"model is extrapolating; add reference data for such structures")
        if dynamics.nsteps > 0:  # observers also run once before the first step
            bar.update(1)

    dynamics.attach(observe, interval=interval)
    dynamics.attach(on_step, interval=1)
    try:
        dynamics.run(steps)
    except OverlappingAtomsError as error:  # atoms met within one step: a blow-up
        raise MDInstabilityError(f"step {dynamics.nsteps}: {error}; the simulation blew up "
                                 f"(try a smaller timestep)") from None
    finally:
        bar.close()
        if hold_centre:
            atoms.set_constraint()
        for open_writer in (writer, candidate_writer):
            if open_writer:
                open_writer.close()
        if log_file:
            log_file.close()
    elapsed = time.perf_counter() - started
    result = MDResult(atoms=atoms, steps=steps, log={k: np.asarray(v, dtype=float)
                                                     for k, v in records.items()},
                      candidates=found)
    result.ns_per_day = steps * timestep * 1e-6 / max(elapsed, 1e-9) * 86400
    result.mean_temperature = float(np.mean(result.log["temperature_K"]))
    if periodic:
        result.mean_pressure = float(np.mean(result.log["pressure_GPa"]))
    if ensemble == "nve" and len(result.log["time_ps"]) > 2:
        slope = np.polyfit(result.log["time_ps"], result.log["etot_eV"], 1)[0]
        result.drift_mev_per_atom_ps = float(slope * 1e3 / n_atoms)
    if plot:
        plot_md_traces(result.log, plot, title=f"{ensemble.upper()} MD, {n_atoms} atoms")
    return result


def _check_md_arguments(**values: Any) -> None:
    """Each MD argument in range, or a ValueError naming it (the CLI's option is the same name)."""
    if values["ensemble"] not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {values['ensemble']!r}; choose one of {ENSEMBLES}")
    rules = {"temperature": (0.0, True, "K"), "timestep": (0.0, False, "fs"),
             "friction": (0.0, False, "1/fs"), "tdamp": (0.0, False, "fs"),
             "pdamp": (0.0, False, "fs"), "skin": (0.0, True, "Å")}
    for name, (bound, inclusive, unit) in rules.items():
        value = values[name]
        if value is None and name in ("tdamp", "pdamp"):
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value \
                or (value < bound if inclusive else value <= bound):
            raise ValueError(f"{name} must be {'≥' if inclusive else '>'} {bound:g} {unit}, "
                             f"got {value!r}")
    for name, minimum in (("steps", 0), ("interval", 1)):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be a whole number ≥ {minimum}, got {value!r}")


def _check_uncertainty_arguments(calc: NNPCalculator, threshold: float | None,
                                 stop: float | None, candidates) -> None:
    for name, value in (("uncertainty_threshold", threshold), ("uncertainty_stop", stop)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be > 0 eV/Å, got {value!r}")
        if not calc.is_committee:
            raise ValueError(f"{name} needs a committee (nnpot.Committee, or a model file "
                             f"trained with model.committee: N); this model is a single "
                             f"potential, which has no force deviation")
    if threshold is not None and stop is not None and stop <= threshold:
        raise ValueError(f"uncertainty_stop ({stop}) must be above uncertainty_threshold "
                         f"({threshold})")
    if candidates is not None and threshold is None:
        raise ValueError("candidates needs uncertainty_threshold (which frames to keep)")


def _check_stability(atoms: Atoms, calc: NNPCalculator, step: int) -> None:
    energy = atoms.get_potential_energy()
    if not math.isfinite(energy):
        raise MDInstabilityError(f"step {step}: the energy is {energy}; the simulation blew up "
                                 f"(try a smaller timestep)")
    if calc.min_distance < MIN_DISTANCE:
        raise MDInstabilityError(f"step {step}: two atoms are {calc.min_distance:.3f} Å apart "
                                 f"(< {MIN_DISTANCE} Å); the simulation blew up (try a smaller "
                                 f"timestep)")


def _progress_bar(steps: int, timestep_fs: float, enabled: bool):
    from tqdm import tqdm

    class Bar(tqdm):
        @property
        def format_dict(self):
            d = super().format_dict
            rate = d.get("rate") or (d["n"] / d["elapsed"] if d.get("elapsed") else 0.0)  # steps/s
            d["postfix"] = f"{rate * timestep_fs * 1e-6 * 86400:.3f} ns/day"
            return d

    return Bar(total=steps, desc="MD", unit="step", disable=not enabled, mininterval=1.0,
               dynamic_ncols=True)


def trace_panels(log: dict[str, np.ndarray]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The panels worth drawing for an MD log: (axis label, [(log column, legend)]).

    Energy and temperature always; pressure for periodic cells (at fixed volume it says whether
    the cell is at equilibrium); volume only where it changes (NPT): a flat line carries nothing.
    """
    panels = [("energy (eV)", [("epot_eV", "potential"), ("etot_eV", "total")]),
              ("temperature (K)", [("temperature_K", "T")])]
    if np.isfinite(log["pressure_GPa"]).any():
        panels.append(("pressure (GPa)", [("pressure_GPa", "P")]))
        volume = log["volume_A3"]
        if np.isfinite(volume).all() and np.ptp(volume) > 1e-9 * np.abs(volume).max():
            panels.append(("volume (Å³)", [("volume_A3", "V")]))
    return panels


def plot_md_traces(log: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """PNG of energy, temperature, pressure (periodic cells) and volume (when it varies, NPT)
    against time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = log["time_ps"]
    panels = trace_panels(log)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), sharex=True)
    for ax, (label, series) in zip(np.atleast_1d(axes), panels):
        for key, name in series:
            ax.plot(t, log[key], label=name, lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("time (ps)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------------
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
    _check_elements(atoms, calc)
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

