"""The main job (`make demo`): a fixed amount of work gives the same, good model on every
machine. The README's numbers are checked by the whole demo (40 epochs, a few minutes on two
cores: behind the `slow` marker); the default suite runs every step of it with 2 epochs."""

from __future__ import annotations

import json

import pytest

from nnpot.demo import DEMO_EPOCHS, run_demo


def check_outputs(summary: dict, output) -> None:
    """Every step ran and wrote what the README lists."""
    assert json.loads((output / "summary.json").read_text())["test"] == summary["test"]
    for name in ("md.png", "parity_test.png", "run/learning_curves.png", "run/best.pt",
                 "relaxed.extxyz", "md.extxyz", "md.csv"):
        assert (output / name).is_file(), name
    assert summary["relax"]["converged"], summary["relax"]
    # the Langevin thermostat holds 600 K whatever the model's accuracy
    assert abs(summary["md"]["mean_T_second_half"] / 600 - 1) < 0.1, summary["md"]


def test_every_step_of_the_demo_runs_and_writes_its_files(tmp_path):
    summary = run_demo(tmp_path, epochs=2)
    check_outputs(summary, tmp_path)
    assert summary["test"]["forces"]["count"] > 0 and summary["test"]["energy"]["count"] == 30


@pytest.mark.slow
def test_the_demo_gives_the_model_the_readme_promises(tmp_path):
    summary = run_demo(tmp_path, epochs=DEMO_EPOCHS)
    # README: test F MAE ≈ 18 meV/Å, E ≈ 1.3 meV/atom; relaxed a within 0.1 % of EMT's
    assert summary["test"]["forces"]["mae"] < 30.0, summary["test"]
    assert summary["test"]["energy"]["mae"] < 3.0, summary["test"]
    assert abs(summary["relax"]["a_eos"] / summary["relax"]["a_emt"] - 1) < 0.003, summary["relax"]
    check_outputs(summary, tmp_path)
