"""The chooser's view: every model family trained by ``nnpot train`` with the same budget on the
same split of a periodic solid (mlearn Si) and of a molecule (xtb ethanol), then compared by
validation error, speed and size — one table and one plot (error against speed).

    python benchmarks/compare_models.py [--minutes 15] [--jobs 2] [--output ../runs/compare]

Each run: 1 thread, ``--minutes`` of wall time, a cosine schedule, the same loss (E:F 1:1,
stress 10 where the data have it, energies ×100 in the last 20 %), batch 4, the data's seeded
10 % validation split (stratified by config type), which chooses nothing (the last epoch is
kept, no early stopping); ``--jobs`` runs at once (one core each).
Then for every trained model: validation E/F MAE, ms per energy+forces call on fcc Cu of 108
and 2048 atoms (an untrained model of the same hyper-parameters, float32, 2 threads, median of
3), and the parameter count. Runs resume where they stopped (``nnpot train --resume``).
Writes ``compare_models.json``, ``compare_models.md`` and ``compare_models.png`` into the output
folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml
from peers.peer_timing import copper

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# Each family at a size that trains in minutes on one core (the families' own defaults are
# sized for GPUs); the same for both data sets.
FAMILIES = {
    "SchNet": {"n_features": 64, "n_interactions": 3, "n_rbf": 32},
    "HDNNP": {"hidden": [48, 48]},
    "NequIP": {"l_max": 1, "n_features": 16, "n_layers": 3, "n_bessel": 8, "radial_mlp": [64, 64]},
    "MACE": {"n_features": 32, "max_L": 1, "correlation": 3, "n_layers": 2, "l_max": 3},
    "DimeNetPP": {"n_features": 64, "n_blocks": 3, "n_spherical": 6, "n_radial": 6,
                  "int_emb_size": 32, "basis_emb_size": 8, "out_emb_size": 128},
    "CGCNN": {"n_features": 64, "n_layers": 3, "n_gaussians": 40},
    "MPNN": {"n_features": 48, "n_steps": 3, "n_gaussians": 20, "edge_hidden": 64},
}
DATASETS = {"mlearn Si": ("mlearn_Si_train.extxyz", 5.0, 10.0),
            "xtb ethanol": ("xtb_ethanol_train.extxyz", 5.0, 0.0)}


def run_config(family: str, dataset: str, minutes: float, output: Path) -> Path:
    file, cutoff, stress = DATASETS[dataset]
    config = {
        "output": str(output / dataset.replace(" ", "_") / family), "seed": 0,
        "model": {"type": family, "cutoff": cutoff, "params": FAMILIES[family]},
        "data": {"train": str(DATA / file), "validation_fraction": 0.1, "stratify": True},
        "training": {"batch_size": 4, "max_epochs": 100000, "max_time_min": minutes, "lr": 0.002,
                     "scheduler": {"type": "cosine", "warmup_epochs": 2, "min_lr": 1e-5},
                     "loss": {"energy": 1.0, "forces": 1.0, "stress": stress,
                              "final_energy": 100.0, "final_fraction": 0.2},
                     # the validation frames report the error, so they choose nothing
                     "keep_epoch": "last", "early_stopping_patience": None,
                     "ema_decay": 0.99, "threads": 1,
                     "progress": False}}
    path = output / "configs" / f"{dataset.replace(' ', '_')}_{family}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train(config: Path) -> None:
    run = Path(yaml.safe_load(config.read_text())["output"])
    if (run / "metrics.json").is_file():
        return
    resume = ["--resume"] if (run / "checkpoint.pt").is_file() else []
    with open(config.with_suffix(".log"), "a") as log:
        subprocess.run([sys.executable, "-m", "nnpot.cli", "train", str(config), *resume],
                       stdout=log, stderr=subprocess.STDOUT, check=True)


def speed(family: str) -> dict[int, float]:
    """ms per energy + forces call of an untrained model of that size, fcc Cu."""
    from nnpot import NNPCalculator, Potential
    from nnpot.models import MODELS
    torch.set_num_threads(2)
    potential = Potential(MODELS[family](["Cu"], cutoff=5.0, **FAMILIES[family]))
    result = {}
    for n in (3, 8):
        atoms = copper(n)
        atoms.calc = NNPCalculator(potential)
        atoms.get_forces()
        times = []
        for _ in range(3):
            atoms.positions += 1e-4
            start = time.perf_counter()
            atoms.get_potential_energy(), atoms.get_forces()
            times.append(1e3 * (time.perf_counter() - start))
        result[len(atoms)] = statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT.parent / "runs" / "compare")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--merge", type=Path,
                        help="an earlier compare_models.json: its rows of the other families are "
                             "kept, so one family can be rerun after a change")
    args = parser.parse_args()
    configs = {(f, d): run_config(f, d, args.minutes, args.output)
               for d in DATASETS for f in args.families}
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(train, configs.values()))
    rows = []
    for (family, dataset), config in configs.items():
        run = Path(yaml.safe_load(config.read_text())["output"])
        metrics = json.loads((run / "metrics.json").read_text())["validation"]["metrics"]
        log = (run / "log.csv").read_text().splitlines()
        last = dict(zip(log[0].split(","), log[-1].split(",")))
        from nnpot import load
        rows.append({"family": family, "dataset": dataset, "epochs": int(last["epoch"]),
                     "energy_mae": metrics["energy"]["mae"], "forces_mae": metrics["forces"]["mae"],
                     "parameters": sum(p.numel() for p in load(run / "best.pt").parameters())})
    speeds = {family: speed(family) for family in args.families}
    for row in rows:
        row["ms_108"], row["ms_2048"] = speeds[row["family"]][108], speeds[row["family"]][2048]
    if args.merge:
        rows = merge(rows, args.merge, args.minutes)
    write_results(rows, args.minutes, args.output)


def merge(rows: list[dict], earlier_json: Path, minutes: float) -> list[dict]:
    """``rows`` with the rows of an earlier compare_models.json for every other (family,
    dataset), in the table's order."""
    earlier = json.loads(earlier_json.read_text())
    if earlier["minutes"] != minutes:
        raise SystemExit(f"{earlier_json} was measured with {earlier['minutes']} min per run, "
                         f"this run with {minutes}: not one table")
    rerun = {(r["family"], r["dataset"]) for r in rows}
    kept = [r for r in earlier["rows"] if (r["family"], r["dataset"]) not in rerun]
    order = {key: k for k, key in enumerate((f, d) for d in DATASETS for f in FAMILIES)}
    return sorted(kept + rows, key=lambda r: order[(r["family"], r["dataset"])])


def write_results(rows: list[dict], minutes: float, output: Path) -> None:
    """compare_models.json, .md (the table) and .png (the plot) in ``output``."""
    (output / "compare_models.json").write_text(json.dumps(
        {"minutes": minutes, "threads_training": 1, "rows": rows}, indent=1))
    lines = [f"Budget: {minutes:g} min of training per run on 1 thread; speed: untrained "
             f"model, fcc Cu, float32, 2 threads.", "",
             "| data | model | epochs | val. E MAE (meV/atom) | val. F MAE (meV/Å) | "
             "ms @108 | ms @2048 | parameters |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['family']} | {r['epochs']} | {r['energy_mae']:.2f} | "
                     f"{r['forces_mae']:.1f} | {r['ms_108']:.0f} | {r['ms_2048']:.0f} | "
                     f"{r['parameters']:,} |")
    (output / "compare_models.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, output / "compare_models.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(10, 4))
    for ax, dataset in zip(axes, DATASETS):
        for r in (r for r in rows if r["dataset"] == dataset):
            ax.loglog(r["ms_2048"], r["forces_mae"], "o")
            ax.annotate(r["family"], (r["ms_2048"], r["forces_mae"]), fontsize=8)
        ax.set_xlabel("ms per call, 2048 Cu atoms")
        ax.set_ylabel("validation force MAE (meV/Å)")
        ax.set_title(dataset)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
