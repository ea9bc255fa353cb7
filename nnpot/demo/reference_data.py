"""Reference data the project generates itself: fcc Cu labelled by ASE's EMT calculator.

EMT (effective-medium theory) is not DFT, but it is a real many-body potential that ships with
ASE, so nnpot can train, test and ship a Cu potential — and the demo can run — on any machine,
reproducibly (fixed seeds), with nothing downloaded. The recipe samples what a Cu potential
meets in practice: bulk MD from 300 K to a superheated 1400 K crystal, the liquid, strained
cells (isotropic and random), a vacancy and a (111) surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta


def emt_lattice_constant() -> float:
    """EMT's equilibrium fcc Cu lattice constant (Å), from an E(V) fit."""
    from ase.eos import EquationOfState

    volumes, energies = [], []
    for a in np.linspace(3.55, 3.63, 9):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, _, _ = EquationOfState(volumes, energies).fit()
    return float((v0) ** (1 / 3))


@dataclass
class Recipe:
    """One kind of configuration: how to build it and how to sample it."""
    name: str
    build: Callable[[float, np.random.Generator], Atoms]
    temperature: float       # K
    frames: int
    equilibrate: int = 300   # MD steps before the first frame
    every: int = 20          # MD steps between frames
    melt_temperature: float | None = None  # first run this hot (K) to melt


def _bulk(a0: float, rng) -> Atoms:
    return bulk("Cu", "fcc", a=a0, cubic=True).repeat((3, 3, 3))


def _strained(kind: str) -> Callable[[float, np.random.Generator], Atoms]:
    def build(a0: float, rng) -> Atoms:
        atoms = _bulk(a0, rng)
        if kind == "iso":
            strain = np.eye(3) * rng.uniform(-0.03, 0.03)
        else:
            e = rng.uniform(-0.03, 0.03, 6)
            strain = np.array([[e[0], e[5], e[4]], [e[5], e[1], e[3]], [e[4], e[3], e[2]]])
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        return atoms
    return build


def _vacancy(a0: float, rng) -> Atoms:
    atoms = _bulk(a0, rng)
    del atoms[0]
    return atoms


def _slab(a0: float, rng) -> Atoms:
    slab = fcc111("Cu", size=(3, 3, 6), a=a0, vacuum=7.5)
    slab.info.pop("adsorbate_info", None)  # a dict extxyz cannot store
    slab.pbc = True  # periodic images separated by 15 Å of vacuum: stress is defined
    return slab


def _liquid(a0: float, rng) -> Atoms:
    atoms = _bulk(a0, rng)
    atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)  # the liquid is ~9 % less dense
    return atoms


RECIPES = [
    Recipe("bulk_md_300K", _bulk, 300, 30),
    Recipe("bulk_md_800K", _bulk, 800, 30),
    Recipe("bulk_md_1400K", _bulk, 1400, 20),
    Recipe("liquid_md_1600K", _liquid, 1600, 30, melt_temperature=3000),
    Recipe("strain_iso_300K", _strained("iso"), 300, 20, equilibrate=100, every=1),
    Recipe("strain_random_300K", _strained("random"), 300, 20, equilibrate=100, every=1),
    Recipe("vacancy_md_600K", _vacancy, 600, 20),
    Recipe("slab111_md_500K", _slab, 500, 20),
]


def _labelled(atoms: Atoms, config_type: str) -> Atoms:
    frame = atoms.copy()
    frame.set_constraint()
    # Raw calculator forces: FixCom would subtract the (tiny) net force from the labels.
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces(apply_constraint=False),
                                       stress=atoms.get_stress())
    frame.info["config_type"] = config_type
    return frame


def generate_emt_copper(seed: int = 0, scale: float = 1.0, progress: bool = False,
                        md_steps: float = 1.0) -> list[Atoms]:
    """Labelled frames (energy eV, forces eV/Å, stress eV/Å³) of fcc Cu from EMT.

    ``scale`` multiplies the number of frames of every recipe (1.0: 190 frames, ~1.5 minutes
    on one fast core). Frames of strained cells are independent; the others are Langevin MD
    snapshots 40 fs apart, 2 fs time step. ``md_steps`` multiplies every MD length (melting,
    equilibration, steps between frames): the EMT calls of those steps are almost all of the
    cost, so 0.35 generates the same kinds of frames ~3× faster, a little more correlated.
    """
    rng = np.random.default_rng(seed)
    a0 = emt_lattice_constant()
    frames: list[Atoms] = []
    recipes = RECIPES
    if progress:
        from tqdm import tqdm
        recipes = tqdm(RECIPES, desc="EMT reference data")
    for recipe in recipes:
        n_frames = max(1, int(round(recipe.frames * scale)))
        independent = recipe.every == 1  # strained cells: a fresh cell per frame
        atoms = None
        for _ in range(n_frames):
            if atoms is None or independent:
                atoms = recipe.build(a0, rng)
                atoms.calc = EMT()
                thermalize_momenta(atoms, temperature_K=recipe.temperature, rng=rng)
                Stationary(atoms)
                if recipe.melt_temperature:
                    _langevin(atoms, recipe.melt_temperature, rng).run(_steps(1000, md_steps))
                _langevin(atoms, recipe.temperature, rng).run(_steps(recipe.equilibrate, md_steps))
            else:
                _langevin(atoms, recipe.temperature, rng).run(_steps(recipe.every, md_steps))
            frames.append(_labelled(atoms, recipe.name))
    return frames


def _steps(steps: int, factor: float) -> int:
    return max(1, int(round(steps * factor)))


def _langevin(atoms: Atoms, temperature: float, rng) -> Langevin:
    # fixcm=False with a FixCom constraint: the sampling ASE recommends (fixcm=True is biased).
    if not atoms.constraints:
        atoms.set_constraint(FixCom())
    return Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                    fixcm=False, rng=rng)


def write_emt_copper(directory: str | Path, seed: int = 0, scale: float = 1.0,
                     test_fraction: float = 0.2, progress: bool = False,
                     md_steps: float = 1.0) -> tuple[Path, Path]:
    """Generate the data and write ``cu_emt_train.extxyz`` and ``cu_emt_test.extxyz``.

    The test set is every ``1/test_fraction``-th frame of each configuration type, so it spans
    the same kinds of structures. Returns the two paths.
    """
    import ase.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    frames = generate_emt_copper(seed=seed, scale=scale, progress=progress, md_steps=md_steps)
    step = max(2, int(round(1 / test_fraction)))
    test = [f for k, f in enumerate(frames) if k % step == step - 1]
    train = [f for k, f in enumerate(frames) if k % step != step - 1]
    train_path, test_path = directory / "cu_emt_train.extxyz", directory / "cu_emt_test.extxyz"
    ase.io.write(train_path, train, format="extxyz")
    ase.io.write(test_path, test, format="extxyz")
    return train_path, test_path
