"""The main job (``make demo`` / ``nnpot demo``): the whole workflow on a fresh machine.

1. generate EMT reference data for fcc Cu (nnpot.demo.reference_data, seeded, short MD runs);
2. train a small SchNet on it for a fixed number of epochs (the same model on every machine:
   a fixed amount of work, not a time budget, whose result would depend on the machine);
3. report its errors on the held-out test frames;
4. relax a 3 %-strained Cu cell with the cell free, compare the lattice constant with EMT's;
5. run 2 ps of NVT MD at 600 K; print the summary and write the plots.

Nothing outside the repository is needed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from ase.build import bulk


def _banner(step: int, text: str) -> None:
    print(f"\n== {step}. {text} ==", flush=True)


DEMO_EPOCHS = 40  # ~45 s on a fast 2-core machine, ~3 min on a slow one; errors in README


def run_demo(output: Path, epochs: int = DEMO_EPOCHS) -> dict:
    """Run the whole demo into ``output``; returns the summary it also writes as JSON."""
    from ..core.model_file import load
    from ..md import md, relax
    from ..md.properties import equation_of_state
    from ..train import config_from_dict, fit
    from ..train.config import KeysConfig
    from ..train.evaluate import evaluate, labelled_graphs
    from ..train.report import metrics_table, plot_parity
    from .reference_data import emt_lattice_constant, write_emt_copper

    started = time.perf_counter()
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    summary: dict = {}

    _banner(1, "EMT reference data for fcc Cu (seeded, generated here)")
    train_file, test_file = write_emt_copper(output / "data", seed=0, scale=0.8, progress=True,
                                             md_steps=0.35)
    print(f"wrote {train_file} and {test_file}")

    _banner(2, f"train a small SchNet ({epochs} epochs)")
    run_dir = output / "run"
    if (run_dir / "checkpoint.pt").exists():  # a demo run again starts afresh
        for path in run_dir.iterdir():
            path.unlink()
    config = config_from_dict({
        "output": str(run_dir), "seed": 0,
        "model": {"type": "SchNet", "cutoff": 5.0,
                  "params": {"n_features": 32, "n_interactions": 2, "n_rbf": 20}},
        "data": {"train": str(train_file), "validation_fraction": 0.1,
                 "cache_dir": str(output / "cache")},
        "training": {"batch_size": 4, "max_epochs": epochs, "lr": 3e-3,
                     "scheduler": {"type": "cosine", "warmup_epochs": 2, "min_lr": 1e-5},
                     "loss": {"energy": 10.0, "forces": 1.0, "stress": 100.0},
                     "early_stopping_patience": epochs, "progress": False},
    })
    best = fit(config)

    _banner(3, "errors on the held-out test frames")
    potential = load(best)
    graphs = labelled_graphs(str(test_file), potential.cutoff, KeysConfig())
    metrics, values = evaluate(potential, graphs, batch_size=8, keep_values=True)
    test_metrics = metrics.summary()
    print(metrics_table({"test": {"frames": len(graphs), "metrics": test_metrics}}))
    plot_parity(values, test_metrics, output / "parity_test.png", "demo SchNet on EMT Cu test")
    summary["test"] = test_metrics

    _banner(4, "relax a 3 %-strained cell (cell free) and compare with EMT")
    a_emt = emt_lattice_constant()
    strained = bulk("Cu", "fcc", a=a_emt * 1.03, cubic=True).repeat((2, 2, 2))
    result = relax(strained, best, cell=True, fmax=0.005, steps=300, log=None,
                   output=output / "relaxed.extxyz")
    a_relaxed = float(np.cbrt(result.atoms.get_volume() / 8))
    a_eos, _, bulk_modulus = equation_of_state(result.atoms.calc, a_guess=a_emt)
    print(result.summary())
    print(f"lattice constant: relaxed {a_relaxed:.4f} Å, E(V) fit {a_eos:.4f} Å, "
          f"EMT {a_emt:.4f} Å ({100 * (a_eos / a_emt - 1):+.2f} %); bulk modulus {bulk_modulus:.1f} GPa")
    summary["relax"] = {"converged": result.converged, "a_relaxed": a_relaxed, "a_eos": a_eos,
                        "a_emt": a_emt, "bulk_modulus_gpa": bulk_modulus}

    _banner(5, "2 ps of NVT (Langevin) MD at 600 K, 108 atoms")
    atoms = bulk("Cu", "fcc", a=a_eos, cubic=True).repeat((3, 3, 3))
    md_result = md(atoms, best, ensemble="nvt", temperature=600, timestep=2.0, steps=1000,
                   output=output / "md.extxyz", log=output / "md.csv", interval=10,
                   plot=output / "md.png", seed=1)
    print(md_result.summary())
    second_half = md_result.log["temperature_K"][len(md_result.log["temperature_K"]) // 2:]
    summary["md"] = {"mean_T_second_half": float(np.mean(second_half)),
                     "ns_per_day": md_result.ns_per_day,
                     "mean_pressure_gpa": md_result.mean_pressure}

    summary["minutes"] = (time.perf_counter() - started) / 60
    (output / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"\n== done in {summary['minutes']:.1f} min ==")
    print(f"model: {best}\nmodel card: {run_dir / 'model_card.md'}")
    print("plots: " + ", ".join(str(p) for p in [run_dir / "learning_curves.png",
                                                 output / "parity_test.png", output / "md.png"]))
    return summary
