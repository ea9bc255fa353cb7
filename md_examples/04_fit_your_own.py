"""Fit your own potential on generated EMT data, then run MD with it.

Replace the data files with your own extxyz (and `data.keys` with your label names) to fit your
DFT data the same way. Run: python md_examples/04_fit_your_own.py  (about 4 minutes)
"""

from pathlib import Path

from ase.build import bulk

import nnpot
from nnpot.demo.reference_data import write_emt_copper
from nnpot.train import fit

OUT = Path("md_examples_output") / "fit_your_own"

# 1. Data: EMT-labelled Cu frames (energies, forces, stress), seeded.
train_file, test_file = write_emt_copper(OUT / "data", seed=1, scale=0.5)

# 2. Train: the same keys as a YAML config for `nnpot train` (see README).
best = fit({
    "output": str(OUT / "run"),
    "model": {"type": "SchNet", "cutoff": 5.0,
              "params": {"n_features": 32, "n_interactions": 2, "n_rbf": 20}},
    "data": {"train": str(train_file), "test": str(test_file), "validation_fraction": 0.1,
             "cache_dir": str(OUT / "cache")},
    "training": {"max_time_min": 3, "max_epochs": 500, "lr": 3e-3,
                 "scheduler": {"type": "cosine", "warmup_epochs": 2},
                 "loss": {"energy": 10.0, "forces": 1.0, "stress": 100.0}, "progress": False},
})
print(f"model: {best}; card: {OUT / 'run' / 'model_card.md'}")

# 3. Use it: 1 ps of NVT MD at 500 K.
atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((3, 3, 3))
result = nnpot.md(atoms, best, ensemble="nvt", temperature=500, timestep=2.0, steps=500,
                  plot=OUT / "md.png", progress=False)
print(result.summary())
