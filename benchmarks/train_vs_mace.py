"""Training speed against mace-torch: the same MACE size, data, split and wall-time budget.

nnpot's MACE (``nnpot train``) and mace-torch 0.3.16's own trainer (``mace_run_train``) fit
``mlearn_Si_train.extxyz`` side by side, one process each with ``--threads`` threads (default
1: the two runs share a 2-core machine), ``--minutes`` of wall time each (default 30). Both
validate on the frames ``nnpot train`` holds out with seed 0 (10 % of every config_type), and
both models are then evaluated on those frames by the same code (energy MAE per atom, force
MAE per component). Model size for both: 64 channels, hidden irreps 64x0e + 64x1o, harmonics to
l = 3, correlation 3, 2 layers, cutoff 5 Å, 8 Bessel functions, radial MLP 64-64-64.

mace-torch runs with its recommendations for a small set: EMA (0.99), AMSGrad, energy/force
weights 1/100, stage two (energy weight 1000) from ¾ of its epochs, lr 0.01, batch 4. It has no
wall-time limit, so ``--mace-epochs`` sets its epochs (or one calibration epoch, not counted in
its budget, sizes them — with its set-up that over-estimates an epoch); a run still going at
the limit is stopped, and its last checkpoint becomes the model (``--restart_latest`` with no
epochs left). ``--reuse-nnpot`` runs the mace-torch side again beside nnpot's finished
run. nnpot: its ``max_time_min``, the 60-minute recipe's schedule and loss
(benchmarks/train_mlearn_si_mace.yaml), batch 4; or, with
``--nnpot-loss mace``, mace-torch's loss weights and lr in nnpot's loss.

    python benchmarks/train_vs_mace.py [--minutes 30] [--threads 1] [--peers DIR]
        [--out runs/train_vs_mace] [--json benchmarks/results/train_vs_mace.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml
from peers.peer_timing import PEERS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mlearn_Si_train.extxyz"
MACE_ARGS = ["--model", "MACE", "--num_channels", "64", "--max_L", "1", "--max_ell", "3",
             "--correlation", "3", "--num_interactions", "2", "--r_max", "5.0",
             "--num_radial_basis", "8", "--num_cutoff_basis", "5", "--radial_MLP", "[64,64,64]",
             "--E0s", "average", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
             "--stress_key", "REF_stress", "--loss", "weighted", "--energy_weight", "1",
             "--forces_weight", "100", "--swa", "--swa_energy_weight", "1000", "--ema",
             "--ema_decay", "0.99", "--amsgrad", "--lr", "0.01", "--batch_size", "4",
             "--valid_batch_size", "4", "--device", "cpu", "--default_dtype", "float32",
             "--seed", "0", "--eval_interval", "1", "--error_table", "PerAtomMAE"]


def split_files(out: Path) -> tuple[Path, Path]:
    """train.extxyz and valid.extxyz: nnpot's seed-0 stratified split, labels under REF_*."""
    from nnpot.train.data import split_indices

    frames = ase.io.read(DATA, ":")
    groups = [str(a.info.get("config_type", "")) for a in frames]
    train_idx, valid_idx = split_indices(len(frames), 0.1, 0, groups)
    paths = []
    for name, indices in (("train", train_idx), ("valid", valid_idx)):
        labelled = []
        for k in indices:
            atoms = frames[k]
            copy = atoms.copy()
            copy.calc = None
            copy.info = {"config_type": groups[k], "REF_energy": atoms.get_potential_energy()}
            copy.arrays["REF_forces"] = atoms.get_forces()
            if "stress" in atoms.calc.results:
                copy.info["REF_stress"] = atoms.get_stress()
            labelled.append(copy)
        path = out / f"{name}.extxyz"
        ase.io.write(path, labelled, format="extxyz")
        paths.append(path)
    return paths[0], paths[1]


# mace-torch's recommended weights in nnpot's loss: forces 100 × per-atom energy, the final
# stage's energy 1000 from ¾ of the budget, no stress term, lr 0.01
MACE_WEIGHTS = {"lr": 0.01, "loss": {"energy": 1.0, "forces": 100.0, "stress": 0.0,
                                     "final_energy": 1000.0, "final_fraction": 0.25}}


def nnpot_run(out: Path, train: Path, valid: Path, minutes: float, threads: int,
              loss: str = "recipe") -> subprocess.Popen:
    recipe = yaml.safe_load((ROOT / "benchmarks" / "train_mlearn_si_mace.yaml").read_text())
    if loss == "mace":
        recipe["training"].update(MACE_WEIGHTS)
    config = {"output": str(out / nnpot_folder(loss)), "seed": 0,
              "model": {"type": "MACE", "cutoff": 5.0, "params": {
                  "n_features": 64, "max_L": 1, "correlation": 3, "n_layers": 2, "l_max": 3,
                  "n_bessel": 8, "poly_p": 5, "radial_mlp": [64, 64, 64]}},
              "data": {"train": str(train), "validation": str(valid),
                       "keys": {"energy": "REF_energy", "forces": "REF_forces",
                                "stress": "REF_stress"}},
              "training": {**recipe["training"], "max_time_min": minutes, "threads": threads}}
    path = out / f"{nnpot_folder(loss)}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = open(out / f"{nnpot_folder(loss)}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "nnpot.cli", "train", str(path)],
                            stdout=log, stderr=subprocess.STDOUT)


def nnpot_folder(loss: str) -> str:
    return "nnpot" if loss == "recipe" else "nnpot_mace_weights"


def mace_train(python: Path, out: Path, train: Path, valid: Path, name: str, epochs: int,
               threads: int, timeout: float | None, extra=()) -> tuple[bool, float]:
    """One mace_run_train; returns (finished, seconds)."""
    command = [str(python.parent / "mace_run_train"), "--name", name, "--train_file", str(train),
               "--valid_file", str(valid), "--work_dir", str(out), *MACE_ARGS,
               "--max_num_epochs", str(epochs),
               "--start_swa", str(max(1, (3 * epochs) // 4)), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / f"{name}.log", "a") as log:
        try:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True,
                           timeout=timeout)
            return True, time.perf_counter() - start
        except subprocess.TimeoutExpired:
            return False, time.perf_counter() - start


def latest_checkpoint_epoch(out: Path, name: str) -> int:
    epochs = [int(m.group(1)) for p in (out / "checkpoints").glob(f"{name}*.pt")
              if (m := re.search(r"_epoch-(\d+)", p.name))]
    if not epochs:
        raise RuntimeError(f"mace-torch wrote no checkpoint in {out / 'checkpoints'} within "
                           f"the budget")
    return max(epochs)


def mace_predictions(python: Path, model: Path, valid: Path) -> list[dict]:
    code = ("import os, json, sys; os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1');"
            "import ase.io; from mace.calculators import MACECalculator;"
            f"calc = MACECalculator(model_paths={str(model)!r}, device='cpu', "
            "default_dtype='float32'); out = [];\n"
            f"for a in ase.io.read({str(valid)!r}, ':'):\n"
            "    a.calc = calc; out.append({'energy': float(a.get_potential_energy()), "
            "'forces': a.get_forces().tolist()})\n"
            "print(json.dumps(out))")
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def errors(predictions: list[dict], valid: Path) -> dict:
    """Energy MAE (meV/atom) and force MAE (meV/Å, per component) against the references."""
    frames = ase.io.read(valid, ":")
    e = [abs(p["energy"] - a.info["REF_energy"]) / len(a) for p, a in zip(predictions, frames)]
    f = np.concatenate([np.abs(np.asarray(p["forces"]) - a.arrays["REF_forces"]).ravel()
                        for p, a in zip(predictions, frames)])
    return {"energy_mae": 1e3 * float(np.mean(e)), "forces_mae": 1e3 * float(np.mean(f))}


def nnpot_result(run: Path, valid: Path) -> dict:
    from nnpot import load

    training = load(run / "best.pt").provenance.get("training", {})
    return {"epochs": training.get("epochs"), "time_min": training.get("time_min"),
            **errors(nnpot_predictions(run / "best.pt", valid), valid)}


def nnpot_predictions(model: Path, valid: Path) -> list[dict]:
    from nnpot import NNPCalculator

    calc = NNPCalculator(model)
    out = []
    for atoms in ase.io.read(valid, ":"):
        atoms.calc = calc
        out.append({"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peers", type=Path, default=PEERS)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "train_vs_mace")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--mace-epochs", type=int,
                        help="mace-torch's --max_num_epochs (no calibration epoch)")
    parser.add_argument("--nnpot-loss", choices=("recipe", "mace"), default="recipe",
                        help="nnpot's loss: the 60-minute recipe's, or mace-torch's weights")
    parser.add_argument("--nnpot-only", action="store_true",
                        help="train and evaluate nnpot alone (the mace-torch side as before)")
    parser.add_argument("--reuse-nnpot", action="store_true",
                        help="evaluate nnpot's finished run in --out instead of training again")
    args = parser.parse_args()
    python = args.peers / "mace" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no mace-torch environment at {python}: ../shared/peers/setup.sh "
                 f"{args.peers} mace")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reuse_nnpot:
        train, valid = args.out / "train.extxyz", args.out / "valid.extxyz"
        ours = subprocess.Popen([sys.executable, "-c", ""])  # nothing to wait for
    else:
        train, valid = split_files(args.out)
        ours = nnpot_run(args.out, train, valid, args.minutes, args.threads, args.nnpot_loss)
    try:
        if args.nnpot_only:
            ours.wait()
            result = {"minutes": args.minutes, "threads": args.threads, "nnpot_loss":
                      args.nnpot_loss, "nnpot": nnpot_result(args.out / nnpot_folder(
                          args.nnpot_loss), valid)}
        else:
            result = compare(args, python, ours, train, valid)
    finally:  # an error on the mace-torch side must not leave nnpot's run behind
        if ours.poll() is None:
            ours.terminate()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def compare(args, python: Path, ours: subprocess.Popen, train: Path, valid: Path) -> dict:
    """mace-torch's run beside nnpot's (already started), then both models evaluated."""
    # one calibration epoch, then the budget
    if args.mace_epochs:
        calibration, epochs = None, args.mace_epochs
    else:
        _, calibration = mace_train(python, args.out / "calibration", train, valid,
                                    "calibration", 1, args.threads, None)
        epochs = max(2, int(args.minutes * 60 / calibration))
        print(f"mace-torch: one epoch (with set-up) took {calibration:.0f} s: "
              f"--max_num_epochs {epochs}", flush=True)
    finished, seconds = mace_train(python, args.out / "mace", train, valid, "si", epochs,
                                   args.threads, args.minutes * 60)
    reached = epochs if finished else latest_checkpoint_epoch(args.out / "mace", "si")
    if not finished:  # make the model file of the last checkpoint, training nothing more
        mace_train(python, args.out / "mace", train, valid, "si", reached, args.threads, None,
                   extra=("--restart_latest",))
    models = sorted((args.out / "mace").glob("si*.model"), key=lambda p: p.stat().st_mtime)
    models = [m for m in models if "compiled" not in m.name]
    ours.wait()
    return {
        "minutes": args.minutes, "threads": args.threads, "nnpot_loss": args.nnpot_loss,
        "nnpot": nnpot_result(args.out / nnpot_folder(args.nnpot_loss), valid),
        "mace-torch": {"epochs_planned": epochs, "epochs": reached,
                       "time_min": seconds / 60, "finished": finished,
                       "calibration_s": calibration, "model": models[-1].name,
                       **errors(mace_predictions(python, models[-1], valid), valid)},
        "validation_frames": len(ase.io.read(valid, ":"))}


if __name__ == "__main__":
    main()
