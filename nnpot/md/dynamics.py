"""Molecular dynamics with an nnpot potential: ``md()`` picks an ASE integrator for the
ensemble, starts from Maxwell–Boltzmann velocities (fixed seed), and lets an ``MDObserver``
write the trajectory (extxyz or HDF5, frame by frame), a CSV log and the candidate frames; it
stops with ``MDInstabilityError`` when the simulation blows up, and draws the traces."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms, units

from ..core.calculator import NNPCalculator
from ..core.structure_checks import OverlappingAtomsError
from .inputs import GPA, PotentialLike, StructureLike, as_calculator, check_elements, read_structure
from .observer import MDInstabilityError, MDObserver
from .plots import plot_md_traces

ENSEMBLES = ("nve", "nvt", "langevin", "bussi", "nose-hoover", "npt", "npt-aniso")
NEEDS_STRESS = ("npt", "npt-aniso")


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
        tdamp: thermostat time constant, fs (default 100 time steps).
        pdamp: barostat time constant, fs (default 1000 time steps).
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
    check_elements(atoms, calc)
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

    bar = _progress_bar(steps, timestep, progress)
    observer = MDObserver(atoms, calc, dynamics, timestep, interval, output=output, log=log,
                          candidates=candidates, uncertainty_threshold=uncertainty_threshold,
                          uncertainty_stop=uncertainty_stop, progress_bar=bar)
    observer.attach()
    started = time.perf_counter()
    try:
        dynamics.run(steps)
    except OverlappingAtomsError as error:  # atoms met within one step: a blow-up
        raise MDInstabilityError(f"step {dynamics.nsteps}: {error}; the simulation blew up "
                                 f"(try a smaller timestep)") from None
    finally:
        bar.close()
        if hold_centre:
            atoms.set_constraint()
        observer.close()
    elapsed = time.perf_counter() - started
    result = MDResult(atoms=atoms, steps=steps, log=observer.log_arrays(),
                      candidates=observer.candidates)
    result.ns_per_day = steps * timestep * 1e-6 / max(elapsed, 1e-9) * 86400
    result.mean_temperature = float(np.mean(result.log["temperature_K"]))
    if periodic:
        result.mean_pressure = float(np.mean(result.log["pressure_GPa"]))
    if ensemble == "nve" and len(result.log["time_ps"]) > 2:
        slope = np.polyfit(result.log["time_ps"], result.log["etot_eV"], 1)[0]
        result.drift_mev_per_atom_ps = float(slope * 1e3 / len(atoms))
    if plot:
        plot_md_traces(result.log, plot, title=f"{ensemble.upper()} MD, {len(atoms)} atoms")
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
