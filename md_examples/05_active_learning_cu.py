"""Active learning on copper, with ASE's EMT standing in for DFT.

From 20 labelled frames of 300 K bulk Cu, `nnpot learn` trains a committee of 4 HDNNPs,
explores bulk, a (111) slab and an expanded cell (which melts) by MD at 300, 800 and 1600 K,
labels up to 25 frames per iteration where the committee disagrees (farthest-point sampling),
and stops at 200 labels; the last committee trains longer (8 min) on all of them. The same
loop with random selection from the same kind of MD is the baseline. Then the final
committee's force deviation is checked against its true error on a test set (bulk,
surfaces, vacancies, liquid) and on a 1500 K liquid it has not seen.

    python md_examples/05_active_learning_cu.py                  # both loops, one after the other
    python md_examples/05_active_learning_cu.py --method fps     # one loop (run two in parallel)
    python md_examples/05_active_learning_cu.py --analyse        # the comparison and the check

About 30 minutes per loop on 2 cores (training is 1.5 min per iteration); the test set is
../shared/data/emt_cu_test.extxyz when present, else generated here (a smaller one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

import nnpot
from nnpot.active_learning import learn, learn_config_from_dict, plot_learning_curve
from nnpot.demo.reference_data import emt_lattice_constant, write_emt_copper

OUT = Path("md_examples_output") / "active_learning"
SHARED_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "emt_cu_test.extxyz"


def emt_md_frames(atoms, temperature: float, frames: int, every: int, equilibrate: int,
                  seed: int) -> list:
    """EMT-labelled frames of a Langevin run (2 fs), every ``every`` steps."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02,
                        fixcm=False, rng=rng)
    dynamics.run(equilibrate)
    out = []
    for _ in range(frames):
        dynamics.run(every)
        frame = atoms.copy()
        frame.set_constraint()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces(apply_constraint=False),
                                           stress=atoms.get_stress())
        out.append(frame)
    return out


def prepare(folder: Path) -> dict[str, Path]:
    """Start set, exploration structures, test set and the unseen 1500 K liquid."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.extxyz" for name in
             ("start", "bulk", "slab", "expanded", "liquid_1500K")}
    if all(p.exists() for p in paths.values()):
        return paths | {"test": SHARED_TEST if SHARED_TEST.exists() else folder / "test.extxyz"}
    a0 = emt_lattice_constant()
    cell = bulk("Cu", "fcc", a=a0, cubic=True).repeat((2, 2, 2))        # 32 atoms
    ase.io.write(paths["start"], emt_md_frames(cell, 300, 20, 20, 200, seed=1))
    ase.io.write(paths["bulk"], cell)
    slab = fcc111("Cu", size=(2, 2, 6), a=a0, vacuum=6.0)
    slab.info.pop("adsorbate_info", None)
    slab.pbc = True
    ase.io.write(paths["slab"], slab)
    expanded = cell.copy()
    expanded.set_cell(cell.cell.array * 1.03, scale_atoms=True)         # melts at 1600 K
    ase.io.write(paths["expanded"], expanded)
    liquid = bulk("Cu", "fcc", a=a0 * 1.03, cubic=True).repeat((3, 3, 3))  # 108 atoms
    ase.io.write(paths["liquid_1500K"], melt_and_sample(liquid))
    if not SHARED_TEST.exists():
        write_emt_copper(folder / "generated", seed=3, scale=0.3)
    return paths | {"test": SHARED_TEST if SHARED_TEST.exists()
                    else folder / "generated" / "emt_cu_test.extxyz"}


def melt_and_sample(atoms) -> list:
    """Melt at 3000 K (2 ps), then 20 frames of liquid at 1500 K, 80 fs apart."""
    hot = emt_md_frames(atoms, 3000, 1, 1, 1000, seed=2)[0]
    return emt_md_frames(hot, 1500, 20, 40, 500, seed=3)


def loop_config(paths: dict[str, Path], method: str, minutes: float,
                final_minutes: float) -> dict:
    return {
        "start": str(paths["start"]), "test": str(paths["test"]),
        "output": str(OUT / method), "seed": 0,
        "label": {"calculator": "ase.calculators.emt.EMT"},
        "explore": {"structures": [str(paths[n]) for n in ("bulk", "slab", "expanded")],
                    "temperatures": [300, 800, 1600], "steps": 400, "timestep": 2.0,
                    "interval": 20},
        "select": {"lower": 0.03, "upper": 0.5, "per_iteration": 25, "method": method},
        "budget": {"labels": 200, "iterations": 12},
        "final_train": {"training": {"max_time_min": final_minutes}},
        "train": {
            "model": {"type": "HDNNP", "cutoff": 5.0, "committee": 4,
                      "params": {"hidden": [32, 32]}},
            "data": {"validation_fraction": 0.1},
            "training": {"batch_size": 4, "max_epochs": 100000, "max_time_min": minutes,
                         "lr": 3e-3, "scheduler": {"type": "cosine", "warmup_epochs": 3},
                         "loss": {"energy": 10.0, "forces": 1.0, "stress": 100.0},
                         "threads": 1, "progress": False},
        },
    }


def analyse(paths: dict[str, Path]) -> None:
    """The two loops' curves in one plot, and how the final committee's spread tracks its error."""
    from scipy.stats import spearmanr

    histories = {}
    for method in ("fps", "random"):
        state = OUT / method / "state.json"
        if state.exists():
            histories[f"{method} ({'active learning' if method == 'fps' else 'baseline'})"] = \
                json.loads(state.read_text())["history"]
    plot_learning_curve(histories, OUT / "fps_vs_random.png")
    summary = {name: [(row["labels"], round(row.get("test_forces_mae", float("nan")), 1))
                      for row in history] for name, history in histories.items()}
    committee = nnpot.load(OUT / "fps" / "model.pt")
    calc = nnpot.NNPCalculator(committee, dtype="float64")
    rows = []
    for source in ("test", "liquid_1500K"):
        for frame in ase.io.read(paths[source], index=":"):
            truth = frame.get_forces()
            atoms = frame.copy()
            atoms.calc = calc
            error = np.linalg.norm(atoms.get_forces() - truth, axis=1).max()
            deviation = calc.get_property("forces_std", atoms).max()
            kind = "liquid_1500K" if source != "test" else frame.info.get("config_type", "test")
            rows.append((kind, deviation, error))
    deviation = np.array([r[1] for r in rows])
    error = np.array([r[2] for r in rows])
    by_kind = {}
    for kind, dev, err in rows:
        by_kind.setdefault(kind, []).append((dev, err))
    summary["spearman_max_deviation_vs_max_error"] = float(spearmanr(deviation, error)[0])
    summary["by_kind"] = {k: {"frames": len(v),
                              "mean_max_deviation_eVA": float(np.mean([d for d, _ in v])),
                              "mean_max_error_eVA": float(np.mean([e for _, e in v]))}
                          for k, v in sorted(by_kind.items())}
    (OUT / "analysis.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["fps", "random"], action="append")
    parser.add_argument("--minutes", type=float, default=1.5, help="training per iteration")
    parser.add_argument("--final-minutes", type=float, default=8.0,
                        help="training of the last committee (on all the labels)")
    parser.add_argument("--analyse", action="store_true", help="only compare and check")
    args = parser.parse_args()
    paths = prepare(OUT / "data")
    if not args.analyse:
        for method in args.method or ["fps", "random"]:
            config = learn_config_from_dict(loop_config(paths, method, args.minutes,
                                                        args.final_minutes))
            resume = (Path(config.output) / "state.json").exists()
            learn(config, resume=resume)
            print((Path(config.output) / "report.md").read_text())
    if args.analyse or not args.method:
        analyse(paths)


if __name__ == "__main__":
    main()
