"""The main job (`make demo`): a fixed amount of work gives the same, good model on every
machine. Its expected results are in the README; this runs the whole demo (~1.5 min)."""

from __future__ import annotations

import json

from nnpot.demo import DEMO_EPOCHS, run_demo


def test_the_demo_gives_the_model_the_readme_promises(tmp_path):
    summary = run_demo(tmp_path, epochs=DEMO_EPOCHS)
    # README: test F MAE ≈ 18 meV/Å, E ≈ 1.3 meV/atom; relaxed a within 0.1 % of EMT's
    assert summary["test"]["forces"]["mae"] < 30.0, summary["test"]
    assert summary["test"]["energy"]["mae"] < 3.0, summary["test"]
    relax = summary["relax"]
    assert relax["converged"]
    assert abs(relax["a_eos"] / relax["a_emt"] - 1) < 0.003, relax
    assert abs(summary["md"]["mean_T_second_half"] / 600 - 1) < 0.1, summary["md"]
    assert json.loads((tmp_path / "summary.json").read_text())["test"] == summary["test"]
    for name in ("md.png", "parity_test.png", "run/learning_curves.png", "run/best.pt"):
        assert (tmp_path / name).is_file(), name
