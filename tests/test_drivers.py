"""MD and relaxation drivers, with the shipped Cu potential and with bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from conftest import make_potential

import nnpot
from nnpot.cli import main as cli_main
from nnpot.demo.reference_data import emt_lattice_constant
from nnpot.md import MDInstabilityError, md, relax
from nnpot.md.properties import equation_of_state
from nnpot.md.trajectory import read_trajectory

CU_MODEL = Path(__file__).resolve().parents[1] / "potentials" / "cu" / "model.pt"


def cu_cell(n: int = 4, a: float = 3.59) -> Atoms:
    return bulk("Cu", "fcc", a=a, cubic=True).repeat((n, n, n))


# ------------------------------------------------------------------ acceptance (potentials/cu)
@pytest.mark.parametrize("steps", [300, pytest.param(2000, marks=pytest.mark.slow)])
def test_nve_energy_drift_is_small(steps):
    # 108 atoms for 0.3 ps (2 ps with -m slow): the drift is ~1e-4 meV/atom/ps, far below the
    # limit
    result = md(cu_cell(3), nnpot.NNPCalculator(CU_MODEL, dtype="float64", skin=0.5),
                ensemble="nve", temperature=300, timestep=1.0, steps=steps, interval=10,
                progress=False)
    assert len(result.atoms) == 108
    assert abs(result.drift_mev_per_atom_ps) < 0.5, result.summary()


def test_langevin_holds_the_temperature():
    result = md(cu_cell(4), CU_MODEL, ensemble="nvt", temperature=600, timestep=2.0, steps=600,
                interval=5, seed=3, progress=False)
    temperatures = result.log["temperature_K"]
    second_half = temperatures[len(temperatures) // 2:]
    assert abs(np.mean(second_half) / 600 - 1) < 0.05, np.mean(second_half)


def test_cell_relaxation_reaches_the_lattice_constant(tmp_path, capsys):
    a_emt = emt_lattice_constant()
    strained = cu_cell(2, a=a_emt * 1.03)
    ase.io.write(tmp_path / "strained.vasp", strained, format="vasp")
    out = tmp_path / "relaxed.extxyz"
    code = cli_main(["relax", str(CU_MODEL), str(tmp_path / "strained.vasp"), "--cell",
                     "--fmax", "0.005", "--output", str(out), "--dtype", "float64"])
    assert code == 0, capsys.readouterr()
    relaxed = ase.io.read(out)
    a_relaxed = np.cbrt(relaxed.get_volume() / 8)
    a_own, _, _ = equation_of_state(nnpot.NNPCalculator(CU_MODEL, dtype="float64"), a_guess=a_emt)
    assert abs(a_relaxed / a_own - 1) < 0.002
    assert abs(a_own / a_emt - 1) < 0.01
    assert "converged" in capsys.readouterr().out


# ------------------------------------------------------------------ outputs
def test_md_writes_trajectory_log_and_plot(tmp_path):
    result = md(cu_cell(2), CU_MODEL, ensemble="nvt", temperature=500, timestep=2.0, steps=40,
                interval=10, output=tmp_path / "t.extxyz", log=tmp_path / "md.csv",
                plot=tmp_path / "md.png", progress=False)
    frames = ase.io.read(tmp_path / "t.extxyz", ":")
    assert len(frames) == 5 and frames[-1].info["step"] == 40
    assert frames[-1].get_forces().shape == (32, 3)
    header = (tmp_path / "md.csv").read_text().splitlines()[0]
    assert header == "step,time_ps,epot_eV,ekin_eV,etot_eV,temperature_K,pressure_GPa,volume_A3"
    assert (tmp_path / "md.png").stat().st_size > 1000
    assert "mean T" in result.summary()


@pytest.mark.parametrize("ensemble", ["bussi", "nose-hoover", "npt", "npt-aniso"])
def test_other_ensembles_run(ensemble):
    atoms = cu_cell(2)
    volume = atoms.get_volume()
    result = md(atoms, CU_MODEL, ensemble=ensemble, temperature=800, timestep=2.0, steps=30,
                pressure=1.0, interval=5, progress=False)
    assert np.isfinite(result.log["etot_eV"]).all()
    if ensemble.startswith("npt"):
        assert result.atoms.get_volume() != volume


def test_md_from_a_pymatgen_structure():
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(cu_cell(2))
    result = md(structure, CU_MODEL, steps=10, interval=5, progress=False)
    assert len(result.atoms) == 32


def test_hdf5_trajectory_survives_a_kill(tmp_path):
    ase.io.write(tmp_path / "start.extxyz", cu_cell(3))
    traj = tmp_path / "traj.h5"
    proc = subprocess.Popen([sys.executable, "-m", "nnpot.cli", "md", str(CU_MODEL),
                             str(tmp_path / "start.extxyz"), "--steps", "100000", "--interval", "2",
                             "--output", str(traj), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if traj.exists() and len(read_trajectory(traj)) >= 5:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    frames = read_trajectory(traj)
    assert len(frames) >= 5
    assert np.isfinite(frames[-1].positions).all()
    assert np.isfinite(frames[-1].get_potential_energy())
    assert frames[-1].info["step"] > 0


# ------------------------------------------------------------------ bad input
def test_unreadable_structure_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.cif"
    bad.write_text("this is not a crystal")
    assert cli_main(["md", str(CU_MODEL), str(bad), "--steps", "5"]) != 0
    assert "broken.cif" in capsys.readouterr().err
    assert cli_main(["relax", str(CU_MODEL), str(tmp_path / "missing.vasp")]) != 0
    assert "missing.vasp" in capsys.readouterr().err


def test_unknown_elements_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"Fe.*not known.*Cu"):
        md(bulk("Fe", "bcc", a=2.87, cubic=True), CU_MODEL, steps=5, progress=False)


def test_npt_needs_a_periodic_cell():
    cluster = cu_cell(1)
    cluster.pbc = False
    with pytest.raises(ValueError, match="periodic in all three directions"):
        md(cluster, CU_MODEL, ensemble="npt", steps=5, progress=False)
    with pytest.raises(ValueError, match="periodic"):
        relax(cluster, CU_MODEL, cell=True)


def test_a_blown_up_run_stops_and_keeps_its_trajectory(tmp_path):
    atoms = cu_cell(2)
    with pytest.raises(MDInstabilityError, match="blew up"):
        md(atoms, CU_MODEL, ensemble="nve", temperature=20000, timestep=25.0, steps=500,
           interval=1, output=tmp_path / "t.extxyz", log=tmp_path / "md.csv", progress=False)
    frames = ase.io.read(tmp_path / "t.extxyz", ":")
    assert len(frames) >= 1
    assert len((tmp_path / "md.csv").read_text().splitlines()) == len(frames) + 1


def test_blow_up_exit_code_from_the_cli(tmp_path, capsys):
    ase.io.write(tmp_path / "start.extxyz", cu_cell(2))
    code = cli_main(["md", str(CU_MODEL), str(tmp_path / "start.extxyz"), "--ensemble", "nve",
                     "--temperature", "20000", "--timestep", "25", "--steps", "500",
                     "--interval", "1", "--output", str(tmp_path / "t.extxyz"), "--quiet"])
    assert code == 3
    assert "kept what was written" in capsys.readouterr().err


def test_relaxation_that_runs_out_of_steps_says_so(tmp_path, capsys):
    atoms = cu_cell(2)
    atoms.rattle(0.2, seed=1)
    ase.io.write(tmp_path / "rattled.extxyz", atoms)
    code = cli_main(["relax", str(CU_MODEL), str(tmp_path / "rattled.extxyz"), "--fmax", "1e-6",
                     "--steps", "3"])
    assert code == 1
    assert "not converged" in capsys.readouterr().err


def test_isolated_molecule_md_works_without_stress():
    potential = make_potential(species=("C", "H", "O"), dtype=__import__("torch").float64)
    result = md(molecule("CH3CH2OH"), potential, ensemble="nvt", temperature=300, timestep=0.5,
                steps=20, interval=5, progress=False)
    assert np.isnan(result.mean_pressure) and np.isfinite(result.mean_temperature)


def test_md_plot_draws_volume_only_where_it_changes():
    from nnpot.md.plots import trace_panels

    nvt = md(cu_cell(2), CU_MODEL, ensemble="nvt", steps=10, interval=5, progress=False)
    npt = md(cu_cell(2), CU_MODEL, ensemble="npt", steps=10, interval=5, pressure=2.0,
             progress=False)
    molecule_run = md(Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0, 0]]), CU_MODEL, steps=10,
                      interval=5, progress=False)
    names = lambda result: [label.split()[0] for label, _ in trace_panels(result.log)]  # noqa: E731
    assert names(nvt) == ["energy", "temperature", "pressure"]
    assert names(npt) == ["energy", "temperature", "pressure", "volume"]
    assert names(molecule_run) == ["energy", "temperature"]


def test_a_single_atom_runs_md_at_finite_temperature():
    atom = Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 2.6, pbc=True)
    result = md(atom, CU_MODEL, ensemble="nvt", temperature=300, steps=50, interval=10,
                progress=False)
    assert np.isfinite(result.log["temperature_K"]).all() and result.log["temperature_K"].max() > 0


def test_fix_symmetry_keeps_and_restores_the_users_constraints():
    from ase.constraints import FixAtoms

    atoms = cu_cell(2, a=3.65)
    atoms.rattle(0.02, seed=4)
    fixed = atoms.positions[:4].copy()
    atoms.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    result = relax(atoms, CU_MODEL, fix_symmetry=True, fmax=0.05, steps=50, log=None)
    assert np.allclose(result.atoms.positions[:4], fixed)  # FixAtoms held during the relaxation
    assert [type(c).__name__ for c in result.atoms.constraints] == ["FixAtoms"]  # and restored


def test_elastic_constants_from_strained_frames_match_finite_differences():
    """The fit a model card applies to a data set's Elastic frames (one axis or one shear
    strained per frame, as in mlearn) gives EMT Cu's C11, C12, C44 of central differences."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from nnpot.md.properties import (
        cubic_elastic_constants,
        cubic_elastic_constants_from_frames,
        lagrangian_strain,
    )
    a0 = 3.5898
    reference = bulk("Cu", "fcc", a=a0, cubic=True).repeat(2)
    strains, energies, stresses = [], [], []
    for component in range(6):
        for size in (-0.01, -0.005, 0.005, 0.01):
            deformation = np.eye(3)
            i, j = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)][component]
            deformation[i, j] += size
            atoms = reference.copy()
            atoms.set_cell(reference.cell.array @ deformation.T, scale_atoms=True)
            atoms.calc = EMT()
            strains.append(lagrangian_strain(atoms.cell.array, reference.cell.array))
            energies.append(atoms.get_potential_energy())
            stresses.append(atoms.get_stress())
    fit = cubic_elastic_constants_from_frames(np.array(strains), np.array(energies),
                                              np.array(stresses), reference.get_volume())
    c11, c12, c44 = cubic_elastic_constants(EMT(), a0, "Cu", "fcc")
    assert fit["c11"] == pytest.approx(c11, rel=0.02)
    assert fit["c12"] == pytest.approx(c12, rel=0.02)
    assert fit["c44"] == pytest.approx(c44, rel=0.03)
    only_normal = cubic_elastic_constants_from_frames(np.array(strains[:12]),
                                                      np.array(energies[:12]),
                                                      np.array(stresses[:12]),
                                                      reference.get_volume())
    assert np.isnan(only_normal["c44"])  # no frame shears the cell: C44 is not determined
