"""Ship the liquid-water potential: train it (optional), copy the model, check MD stability,
write the model card.

    python potentials/build_water.py potentials/deepmd-water-nequip --train   # hours (every stage)
    python potentials/build_water.py potentials/deepmd-water-nequip           # card only

Like ``build_mlearn.py`` (whose copy, MD check and card section it uses), for DeePMD-kit's
example water data: 64 H2O molecules in a periodic box. The MD check starts from the first
training frame and runs NVT (Bussi thermostat, 1 fs: the O–H stretch's period of ~9 fs is nine
steps, well inside velocity Verlet's stability limit of period/π) for 10 ps at 300 K, recording
the shortest interatomic distance every 10 steps against 0.7× the shortest distance in the
training data (an O–H bond).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ase.io import read
from build_mlearn import (
    rebuild_text,
    ship_run,
    shortest_training_distance,
    stability,
    train_stages,
    write_card,
)

import nnpot

# DeePMD-kit's DeepPot-SE on liquid water (Zhang et al., NeurIPS 2018; RMSE, meV/atom and meV/Å)
DEEPMD_RMSE = (1.0, 40.0)
TIMESTEP_FS = 1.0


def card(folder: Path, steps: int, temperatures: list[float]) -> None:
    config, metrics, last = ship_run(folder)
    validation = metrics["validation"]["metrics"]
    data = Path(config.data.train)
    limit = 0.7 * shortest_training_distance(data)
    md_rows = stability(folder / "model.pt", read(data, 0), temperatures, steps, limit,
                        timestep=TIMESTEP_FS)
    energy, forces = validation["energy"], validation["forces"]
    model = nnpot.load(folder / "model.pt")
    lines = [
        f"# Liquid water — {type(model.model).__name__} fitted to DeePMD-kit's example data",
        "",
        f"`NNPCalculator(\"{folder.as_posix()}/model.pt\")`. Training data: "
        f"`deepmd_water_train.extxyz` (DeePMD-kit's water example: 64 H2O, 192 atoms, periodic), "
        f"a seeded {config.data.validation_fraction:.0%} of the frames held out for validation. "
        + rebuild_text(folder, "build_water.py"),
        "",
        "## Errors (meV/atom, meV/Å; force per component)",
        "",
        "| | energy MAE | force MAE | energy RMSE | force RMSE | set |",
        "|---|---|---|---|---|---|",
        f"| **nnpot** | {energy['mae']:.2f} | {forces['mae']:.1f} | **{energy['rmse']:.2f}** | "
        f"**{forces['rmse']:.1f}** | validation ({metrics['validation']['frames']} frames) |",
        f"| DeePMD-kit DeepPot-SE (reported) | | | ~{DEEPMD_RMSE[0]:g} | ~{DEEPMD_RMSE[1]:g} | "
        f"its own test frames |",
        "",
        "Validation frames come from the same trajectories as the training frames "
        "(time-correlated), so they flatter a little.",
    ]
    write_card(folder, lines, config, last, md_rows, steps, limit, TIMESTEP_FS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", action="store_true", help="run nnpot train first (resumes)")
    parser.add_argument("--steps", type=int, default=10000,
                        help=f"MD steps of {TIMESTEP_FS} fs per temperature (default: 10 ps)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0],
                        help="K (default: 300)")
    args = parser.parse_args()
    if args.train:
        train_stages(args.folder)
    card(args.folder, args.steps, args.temperatures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
