"""The paths a GPU takes: neighbour lists, every model, committees, training and MD on CUDA give
what the CPU gives. Skipped, saying why, on a machine without CUDA (CI has none; they run where
a GPU is lent, see docs/benchmarks.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ethanol_like, make_hdnnp, make_potential, rattled_cell, triclinic_pair
from test_physics import attach
from test_train import emt_frames, small_config

import nnpot
from nnpot import Committee
from nnpot.core.neighbors import neighbor_pairs
from nnpot.md import md
from nnpot.train import config_from_dict, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("structure", [rattled_cell, triclinic_pair, ethanol_like])
def test_neighbor_pairs_built_on_the_gpu_equal_the_cpu_ones(structure):
    atoms = structure()
    cell = atoms.cell.array if atoms.pbc.any() else None
    cpu_index, cpu_shifts = neighbor_pairs(atoms.positions, cell, atoms.pbc, 4.0)
    positions = torch.tensor(atoms.positions, device="cuda")
    gpu_index, gpu_shifts = neighbor_pairs(positions, cell, atoms.pbc, 4.0)  # auto: on the GPU
    assert gpu_index.device.type == "cuda"
    assert torch.equal(gpu_index.cpu(), cpu_index) and torch.equal(gpu_shifts.cpu(), cpu_shifts)


def test_float32_on_the_gpu_agrees_with_float64_on_the_cpu(potential64):
    cpu = attach(rattled_cell(), potential64)
    gpu = attach(rattled_cell(), potential64, device="cuda", dtype="float32")
    assert gpu.get_potential_energy() == pytest.approx(cpu.get_potential_energy(), abs=1e-4)
    assert np.allclose(gpu.get_forces(), cpu.get_forces(), atol=1e-4)


def test_a_committee_on_the_gpu_gives_the_cpu_mean_and_spread():
    members = [make_potential(seed=0), make_potential(seed=1), make_hdnnp(seed=2)]
    cpu = attach(rattled_cell(), Committee(members))
    gpu = attach(rattled_cell(), Committee(members), device="cuda")
    for atoms in (cpu, gpu):
        atoms.get_stress()
        atoms.get_forces()
    for key in ("energy", "forces", "stress", "energy_std", "forces_std", "stress_std"):
        np.testing.assert_allclose(gpu.calc.results[key], cpu.calc.results[key], rtol=0,
                                   atol=1e-9, err_msg=key)


def test_md_on_the_gpu_follows_the_cpu_trajectory():
    runs = [md(rattled_cell(), make_potential(), ensemble="nve", temperature=300, timestep=1.0,
               steps=20, interval=5, device=device, dtype="float64", progress=False)
            for device in ("cpu", "cuda")]
    np.testing.assert_allclose(runs[1].atoms.positions, runs[0].atoms.positions, atol=1e-8)


def test_training_on_the_gpu_gives_the_cpu_model(tmp_path):
    import ase.io
    data = tmp_path / "emt.extxyz"
    ase.io.write(data, emt_frames(16), format="extxyz")
    metrics = {}
    for name, device in (("cpu", "cpu"), ("gpu", "cuda")):
        config = small_config(tmp_path / name, data, max_epochs=3)
        config["device"] = device
        model = fit(config_from_dict(config))
        metrics[name] = json.loads((tmp_path / name / "run" / "metrics.json").read_text())
        atoms = attach(emt_frames(1, seed=9)[0], model)  # a GPU-trained file on the CPU
        assert np.isfinite(atoms.get_potential_energy())
    for term in ("energy", "forces"):
        cpu, gpu = (metrics[name]["validation"]["metrics"][term]["mae"] for name in ("cpu", "gpu"))
        assert gpu == pytest.approx(cpu, rel=1e-3), term
    assert nnpot.load(tmp_path / "gpu" / "run" / "best.pt").dtype == torch.float32
