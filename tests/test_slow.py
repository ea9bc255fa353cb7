"""Slow checks (`make test-slow`, `pytest -m slow`): the 20-minute training acceptance runs of
benchmarks/ and neighbour lists on a large cell. Not in the default run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ase.build import bulk
from conftest import shared_file

from nnpot.core.neighbors import neighbor_pairs
from nnpot.train import fit, load_config

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def validation_mae(config_name: str, tmp_path: Path, data_file: str) -> dict[str, float]:
    """Train by benchmarks/<config_name> into tmp_path; validation MAEs (meV/atom, meV/Å)."""
    shared_file(data_file)  # skips in a clone without ../shared
    config = load_config(BENCHMARKS / config_name)
    config.output = str(tmp_path / "run")
    fit(config)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]["metrics"]
    return {name: metrics[name]["mae"] for name in ("energy", "forces")}


def test_mlearn_si_in_20_minutes_beats_the_target(tmp_path):
    mae = validation_mae("train_mlearn_si.yaml", tmp_path, "mlearn_Si_train.extxyz")
    assert mae["forces"] <= 100.0 and mae["energy"] <= 6.0, mae


def test_deepmd_water_in_20_minutes_beats_the_target(tmp_path):
    mae = validation_mae("train_deepmd_water.yaml", tmp_path, "deepmd_water_train.extxyz")
    assert mae["forces"] <= 110.0, mae


@pytest.mark.parametrize("backend", ["matscipy", "torch"])
def test_backends_agree_with_vesin_on_a_large_triclinic_cell(backend):
    atoms = bulk("Cu", "fcc", a=3.61).repeat((16, 16, 16))  # 4096 atoms, primitive (triclinic)
    atoms.rattle(0.1, seed=0)
    reference = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, 5.0, "vesin")
    pairs = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, 5.0, backend)
    assert reference[0].shape[1] > 80_000  # ~22 pairs per atom (half list) at 5 Å
    assert torch.equal(pairs[0], reference[0]) and torch.equal(pairs[1], reference[1])
