"""benchmarks/shear_stress_check.py: a potential's stress tells stored from exchanged yz/xz."""

from __future__ import annotations

import sys
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

REPOSITORY = Path(__file__).resolve().parents[1]
CU_MODEL = REPOSITORY / "potentials" / "cu" / "model.pt"
sys.path.insert(0, str(REPOSITORY / "benchmarks"))
from shear_stress_check import check, swap  # noqa: E402


def _sheared_cu_frames(path: Path) -> None:
    """fcc Cu cells under yz or xz shear (3 %), with EMT's energy, forces and stress: the data
    potentials/cu was fitted to, so its stress agrees with these labels' shears."""
    frames = []
    for i, (row, column) in enumerate([(1, 2), (0, 2), (1, 2), (0, 2)]):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        cell = atoms.cell.array.copy()
        cell[row, column] = (0.03 if i < 2 else -0.03) * cell[row, row]
        atoms.set_cell(cell, scale_atoms=True)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["config_type"] = "Elastic" if i % 2 == 0 else "Shear"
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def test_check_counts_the_assignment_the_potential_fits(tmp_path):
    data = tmp_path / "cu.extxyz"
    _sheared_cu_frames(data)
    as_stored = check(data, CU_MODEL)
    assert {k: dict(v) for k, v in as_stored.items()} == {"Elastic": {"stored": 2},
                                                          "Shear": {"stored": 2}}
    swapped = tmp_path / "out" / "swapped.extxyz"
    assert swap(data, swapped) == 4
    assert {k: dict(v) for k, v in check(swapped, CU_MODEL).items()} == {
        "Elastic": {"exchanged": 2}, "Shear": {"exchanged": 2}}


def test_swap_changes_only_the_two_shear_components_of_the_named_types(tmp_path):
    data = tmp_path / "cu.extxyz"
    _sheared_cu_frames(data)
    out = tmp_path / "swapped.extxyz"
    assert swap(data, out, config_types=["Shear"]) == 2
    for before, after in zip(ase.io.read(data, ":"), ase.io.read(out, ":"), strict=True):
        s0, s1 = before.get_stress(), after.get_stress()
        expected = s0[[0, 1, 2, 4, 3, 5]] if before.info["config_type"] == "Shear" else s0
        np.testing.assert_array_equal(s1, expected)
        np.testing.assert_array_equal(after.get_forces(), before.get_forces())
        assert after.get_potential_energy() == before.get_potential_energy()
        assert after.info == before.info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cu.extxyz", "swapped.extxyz"]
