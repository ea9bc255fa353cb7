"""Ship an mlearn potential: train it (optional), copy the model, check MD stability, write
the model card.

    python potentials/build_mlearn.py potentials/mlearn-si-nequip --train   # hours
    python potentials/build_mlearn.py potentials/mlearn-si-nequip           # card only

The folder holds ``config.yaml`` (``nnpot train`` of it writes ``run/``). This script copies
``run/best.pt`` to ``model.pt`` with the run's learning curves and validation parity plot (a
potential fitted on every frame instead carries its cross-validation: ``cv_report.json`` and
``cv_parity.png`` copied from the ``nnpot cv`` run), then
runs the stability check the issue asks for: NVT MD (Bussi thermostat, 2 fs) of a 64-atom
diamond-structure cell at 300 K and at the liquid temperatures of the training data, 10 ps
each, recording the shortest interatomic distance every 10 steps against 0.7× the shortest
distance in the training data. The card lists the validation errors next to GAP and MTP
(published test-set errors, Zuo et al. 2020), the training time, the MD check and the
evaluation speed (ms/atom/step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from ase.io import read
from ase.neighborlist import neighbor_list
from dft_properties import plot_energy_volume, properties, properties_section

import nnpot
from nnpot.core.committee import members_of
from nnpot.md import MDInstabilityError, md
from nnpot.train import TrainConfig, fit, load_config
from nnpot.train.cv import mean_stderr_text
from nnpot.train.data import file_sha256, split_indices

REPOSITORY = Path(__file__).resolve().parents[1]
# Published mlearn test-set errors (energy meV/atom, force meV/Å), Zuo et al. 2020
PUBLISHED = {"Si": {"GAP": (2.91, 70), "MTP": (2.21, 60)},
             "Ge": {"GAP": (2.06, 50), "MTP": (1.79, 50)},
             "Mo": {"GAP": (2.24, 90), "MTP": (2.83, 90)},
             "Li": {"GAP": (0.49, 10), "MTP": (0.49, 10)}}
# Structure for the MD check, and the temperatures of the data's AIMD runs above the melting
# point (Si 1687 K, Ge 1211 K, Mo 2896 K, Li 454 K)
CONVENTIONAL_ATOMS = {"Si": 8, "Ge": 8, "Mo": 2, "Li": 2}  # diamond, bcc
STRUCTURES = {"Si": ("diamond", 5.47), "Ge": ("diamond", 5.76), "Mo": ("bcc", 3.16),
              "Li": ("bcc", 3.43)}
LIQUID_K = {"Si": [2530, 3374], "Ge": [1816, 2422], "Mo": [3000, 6000], "Li": [680, 907]}


def shortest_training_distance(path: Path) -> float:
    return min(float(neighbor_list("d", frame, 3.0).min())
               for frame in read(path, ":") if len(neighbor_list("d", frame, 3.0)))


def mlearn_cell(element: str):
    """The 54- or 64-atom crystal the MD check starts from (bcc 3×3×3, diamond 2×2×2)."""
    lattice, a = STRUCTURES[element]
    cubic = bulk(element, lattice, a=a, cubic=True)
    return cubic.repeat(2 if len(cubic) == 8 else 3 if len(cubic) == 2 else 2)


def errors_by_config_type(model: Path, config: TrainConfig) -> dict[str, dict[str, float]]:
    """Validation errors per config_type: the trainer's stratified split of the training file
    (same fraction and seed), each frame evaluated with NNPCalculator. Returns config_type →
    {"frames", "energy_mae" (meV/atom), "forces_mae" (meV/Å, per component)}."""
    frames = read(config.data.train, ":")
    groups = [str(atoms.info.get(config.data.keys.group, "")) for atoms in frames]
    _, validation = split_indices(len(frames), config.data.validation_fraction, config.seed,
                                  groups if config.data.stratify else None)
    calculator = nnpot.NNPCalculator(model)
    errors: dict[str, dict[str, list[float]]] = {}
    for k in validation:
        atoms = frames[k].copy()
        reference_energy = frames[k].get_potential_energy()
        reference_forces = frames[k].get_forces()
        atoms.calc = calculator
        group = errors.setdefault(groups[k], {"energy": [], "forces": []})
        group["energy"].append(abs(atoms.get_potential_energy() - reference_energy) / len(atoms))
        group["forces"].extend(np.abs(atoms.get_forces() - reference_forces).ravel().tolist())
    return {name: {"frames": len(group["energy"]),
                   "energy_mae": 1e3 * float(np.mean(group["energy"])),
                   "forces_mae": 1e3 * float(np.mean(group["forces"]))}
            for name, group in sorted(errors.items())}


def stability(model: Path, atoms0, temperatures: list[float], steps: int, limit: float,
              timestep: float = 2.0, jobs: int = 1) -> list[dict]:
    """NVT runs (Bussi, ``timestep`` fs) from ``atoms0``; the shortest distance seen (every 10
    steps) and whether it stays above ``limit`` Å. The rows of ``stability.json`` beside the
    model are reused when they were run on this very model file (its SHA-256), at these
    temperatures, steps and limit: a card rebuilt for new errors does not rerun the MD.
    ``jobs`` > 1 runs that many temperatures at once, each a process on one thread."""
    digest = file_sha256(model)
    wanted = {"model_sha256": digest, "steps": steps, "timestep_fs": timestep,
              "limit_A": round(limit, 6)}
    previous = model.parent / "stability.json"
    if previous.is_file():
        rows = json.loads(previous.read_text())
        if ([row.get("temperature_K") for row in rows] == list(temperatures)
                and all({key: row.get(key) for key in wanted} == wanted for row in rows)):
            print(f"MD check: reusing {previous} (run on this model file)")
            return rows
    runs = [(model, atoms0, temperature, steps, limit, timestep, wanted)
            for temperature in temperatures]
    if jobs == 1:
        return [_stability_row(*run) for run in runs]
    # spawn, not fork: a forked child of a process that has run torch's thread pool can hang
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        rows = list(pool.map(_stability_row, *zip(*runs)))
    return [{**row, "processes": jobs} for row in rows]  # its ms/atom/step shared the cores


def _stability_row(model: Path, atoms0, temperature: float, steps: int, limit: float,
                   timestep: float, wanted: dict) -> dict:
    """One temperature's NVT run of ``stability``: its row of ``stability.json``."""
    atoms = atoms0.copy()
    with tempfile.TemporaryDirectory() as tmp:
        trajectory = Path(tmp) / "md.extxyz"
        start = time.perf_counter()
        try:
            result = md(atoms, nnpot.NNPCalculator(model, skin=0.5), ensemble="bussi",
                        temperature=temperature, timestep=timestep, steps=steps, interval=10,
                        seed=0, progress=False, output=trajectory)
            mean_t, finished = result.mean_temperature, True
        except MDInstabilityError as error:
            print(f"{temperature} K: {error}")
            mean_t, finished = float("nan"), False
        elapsed = time.perf_counter() - start
        frames = read(trajectory, ":")
    shortest = min(float(neighbor_list("d", frame, 3.0).min()) for frame in frames)
    reached_ps = (len(frames) - 1) * 10 * timestep * 1e-3   # a frame every 10 steps
    row = {"temperature_K": temperature, "atoms": len(atoms), "time_ps": reached_ps,
           "mean_T_K": mean_t, "shortest_A": shortest, "stable": finished and shortest > limit,
           "ms_per_atom_step": 1e3 * elapsed / steps / len(atoms), **wanted}
    print(row, flush=True)
    return row


def stability_section(rows: list[dict], steps: int, limit: float, timestep: float = 2.0
                      ) -> list[str]:
    """The model card's MD-stability section (markdown lines) for ``stability``'s rows."""
    lines = [
        f"## MD stability (NVT, Bussi, {timestep:g} fs, {steps * timestep * 1e-3:g} ps each)",
        "",
        f"Criterion: no two atoms closer than 0.7 × the shortest training distance "
        f"= {limit:.3f} Å (checked every 10 steps).",
        "",
        "| T (K) | atoms | ps run | mean T (K) | shortest distance (Å) | stable | ms/atom/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['temperature_K']:.0f} | {row['atoms']} | {row['time_ps']:.1f} | "
                     f"{row['mean_T_K']:.0f} | "
                     f"{row['shortest_A']:.3f} | {'yes' if row['stable'] else '**no**'} | "
                     f"{row['ms_per_atom_step']:.3f} |")
    processes = max(row.get("processes", 1) for row in rows)
    how = ("one process" if processes == 1 else
           f"{processes} processes at once (one thread each, sharing the cores)")
    return lines + [
        "", "A run that blew up (two atoms closer than 0.5 Å) stops there: \"ps run\" says "
        "when. ms/atom/step: ASE MD with NNPCalculator (float32, Verlet skin 0.5 Å), "
        f"{how} on the 2-core development machine.", ""]


def train_stages(folder: Path) -> None:
    """``nnpot train`` of every ``config_*.yaml`` (stages, committee members trained apart; in
    name order, so config_stage1 comes before config_stage2) and then ``config.yaml``, each
    resumed where its run directory holds a checkpoint."""
    for path in [*sorted(folder.glob("config_*.yaml")), folder / "config.yaml"]:
        config = load_config(path)
        fit(config, resume=(Path(config.output) / "checkpoint.pt").exists())


def rebuild_text(folder: Path, script: str) -> str:
    """The commands that rebuild ``folder``'s model and card, for the card."""
    return ("Rebuild: " + "".join(f"`nnpot train {path.as_posix()}`, then "
                                  for path in sorted(folder.glob("config_*.yaml")))
            + f"`nnpot train {folder.as_posix()}/config.yaml`, then "
              f"`python potentials/{script} {folder.as_posix()}` for this card.")


def _stages(provenance: dict, own: dict | None) -> tuple[list[str], float]:
    """"N min, E epochs" of a run (``own``: its training summary) and of the runs it started
    from (``model.init_from``), oldest first, with their total minutes."""
    def text(run: dict | None, name: str) -> str:
        return f"{run['time_min']:.0f} min, {run['epochs']} epochs" if run \
            else f"{name} (time not recorded)"

    stages, minutes = [text(own, "this run")], own["time_min"] if own else 0.0
    link = provenance.get("init_from")
    while link:
        run = link["provenance"].get("training")
        stages.insert(0, text(run, Path(link["file"]).name))
        minutes += run["time_min"] if run else 0.0
        link = link["provenance"].get("init_from")
    return stages, minutes


def _chain_text(stages: list[str]) -> str:
    if len(stages) == 1:
        return stages[0]
    return (f"{len(stages)} stages, each starting from the model of the one before "
            f"(`model.init_from`): " + "; then ".join(stages))


def training_time_text(folder: Path, last: dict[str, str]) -> str:
    """The training time of ``folder/model.pt``: its run (``last``: the last row of its log),
    the runs it started from (``model.init_from``) and the runs whose members it joined
    (``model.committee_with``), read from the model file's provenance."""
    provenance = nnpot.load(folder / "model.pt").provenance
    stages, minutes = _stages(provenance, {"time_min": float(last["time_s"]) / 60,
                                           "epochs": int(last["epoch"])})
    joined = provenance.get("committee_with", [])
    if not joined:
        return (stages[0] if len(stages) == 1
                else f"{minutes:.0f} min in " + _chain_text(stages) + ",")
    parts = []
    for link in joined:
        their_stages, their_minutes = _stages(link["provenance"],
                                              link["provenance"].get("training"))
        parts.append(f"{Path(link['file']).parent.name}: {_chain_text(their_stages)}")
        minutes += their_minutes
    return (f"{minutes:.0f} min in {len(joined) + 1} runs joined as one committee "
            f"(`model.committee_with`) — "
            + "; ".join(parts) + f"; run: {_chain_text(stages)} —")


def where_trained(folder: Path, config: TrainConfig) -> str:
    """" on a CUDA GPU", or per stretch of epochs where a run was resumed elsewhere (": 56 epochs
    on a CUDA GPU, then 4 epochs on 1 CPU thread(s) …"), from the model's provenance."""
    training = nnpot.load(folder / "model.pt").provenance.get("training", {})
    segments = training.get("segments") or [
        {"device": training.get("device", "cpu"), "threads": config.training.threads}]

    def where(segment: dict) -> str:
        isa = f" ({segment['cpu']})" if segment.get("cpu") else ""   # recorded since 2026-12-06
        return ("a CUDA GPU" if str(segment["device"]).startswith("cuda") else
                f"{segment['threads']} CPU thread(s){isa} of the 2-core development machine")

    if len(segments) == 1:
        return f" on {where(segments[0])}"
    return ": " + ", then ".join(f"{s['epochs'][1] - s['epochs'][0] + 1} epochs on {where(s)}"
                                 for s in segments)


def write_card(folder: Path, lines: list[str], config: TrainConfig, last: dict[str, str],
               md_rows: list[dict], steps: int, limit: float, timestep: float = 2.0) -> None:
    """Finish a model card (``lines``: its title and errors) with the training time and the MD
    check, and write ``model_card.md`` and ``stability.json``."""
    parity = ("; parity: `parity_validation.png`" if (folder / "parity_validation.png").exists()
              else "")   # a fit on every frame has no validation set
    lines = lines + [
        "",
        f"Training: {training_time_text(folder, last)}{where_trained(folder, config)}. "
        f"Learning curves (of the last stage): "
        f"`learning_curves.png`{parity}.",
        "",
    ] + stability_section(md_rows, steps, limit, timestep)
    (folder / "model_card.md").write_text("\n".join(lines))
    (folder / "stability.json").write_text(json.dumps(md_rows, indent=1))
    print("\n".join(lines))


def ship_run(folder: Path) -> tuple[TrainConfig, dict, dict[str, str]]:
    """Copy ``run/best.pt`` to ``model.pt`` with the run's plots; return the config, the run's
    metrics.json and the last row of its log.csv (column → text)."""
    config = load_config(folder / "config.yaml")
    run = folder / "run"
    shutil.copyfile(run / "best.pt", folder / "model.pt")
    for name in ("learning_curves.png", "parity_validation.png"):
        if (run / name).exists():
            shutil.copyfile(run / name, folder / name)
    metrics = json.loads((run / "metrics.json").read_text())
    log = (run / "log.csv").read_text().splitlines()
    return config, metrics, dict(zip(log[0].split(","), log[-1].split(",")))


def cv_errors_section(report: dict, element: str, config_paths: list[str],
                      parity: bool = False) -> list[str]:
    """The card's errors from ``nnpot cv`` (cv_report.json): mean ± standard error over folds,
    overall and by config type, beside GAP's and MTP's published test errors. ``config_paths``:
    the CV config, or the configs of a committee's members (``benchmarks/cv_committee.py``);
    ``parity``: the folder holds the run's out-of-fold parity plot (``cv_parity.png``)."""
    def cell(entry: dict | None) -> str:
        return "" if entry is None else mean_stderr_text(entry["mean"], entry["stderr"])

    mean, folds = report["mean"], report["folds"]
    names = " and ".join(f"`{path}`" for path in config_paths)
    recipe = (f"the recipe of {names}" if len(config_paths) == 1 else
              f"the recipes of {names}, one network each, and the fold's committee averaged them,")
    lines = [
        f"## Errors: {len(folds)}-fold cross-validation (meV/atom, meV/Å; force per component)",
        "",
        f"Each fold trained {recipe} on the other folds' frames (frames of "
        f"one `mlearn_description` in one fold, every config type in every fold) and was "
        f"evaluated on its own; mean ± standard error over the folds. The model itself is "
        f"fitted on every frame with the same recipe{'s' if len(config_paths) > 1 else ''} and "
        f"budget.",
        "",
        "| | energy MAE | force MAE | energy RMSE | force RMSE | set |",
        "|---|---|---|---|---|---|",
        f"| **nnpot (CV)** | **{cell(mean['energy_mae'])}** | **{cell(mean['forces_mae'])}** | "
        f"{cell(mean['energy_rmse'])} | {cell(mean['forces_rmse'])} | {len(folds)} folds |",
    ]
    for name, (e, f) in PUBLISHED[element].items():
        lines.append(f"| {name} (published) | {e} | {f} | | | mlearn test set |")
    lines += ["", "By config type:", "", "| config type | frames | energy MAE | force MAE |",
              "|---|---|---|---|"]
    for name, row in report["by_config_type"].items():
        lines.append(f"| {name} | {row['frames']} | {cell(row.get('energy_mae'))} | "
                     f"{cell(row.get('forces_mae'))} |")
    if parity:
        lines += ["", "Every frame as predicted by the fold model that did not train on it, by "
                      "config type: `cv_parity.png`."]
    return lines + [""]


def validation_errors_section(folder: Path, config: TrainConfig, metrics: dict,
                              element: str) -> list[str]:
    """The card's errors on the run's validation split (older potentials without CV)."""
    validation = metrics["validation"]["metrics"]
    lines = [
        "## Errors (meV/atom, meV/Å; force per component)",
        "",
        "| | energy MAE | force MAE | energy RMSE | force RMSE | set |",
        "|---|---|---|---|---|---|",
        f"| **nnpot** | **{validation['energy']['mae']:.2f}** | "
        f"**{validation['forces']['mae']:.1f}** | {validation['energy']['rmse']:.2f} | "
        f"{validation['forces']['rmse']:.1f} | validation ({metrics['validation']['frames']} "
        f"frames) |",
    ]
    for name, (e, f) in PUBLISHED[element].items():
        lines.append(f"| {name} (published) | {e} | {f} | | | mlearn test set |")
    lines += ["", "By config_type (validation frames):", "",
              "| config_type | frames | energy MAE | force MAE |", "|---|---|---|---|"]
    for name, row in errors_by_config_type(folder / "model.pt", config).items():
        lines.append(f"| {name or '(none)'} | {row['frames']} | {row['energy_mae']:.2f} | "
                     f"{row['forces_mae']:.1f} |")
    return lines + [
        "",
        "Validation frames come from the same AIMD runs as training frames (time-correlated), "
        "and chose the recipe: they flatter.",
        "",
    ]


def card(folder: Path, element: str, steps: int, jobs: int = 1) -> None:
    """The model card: errors (cross-validation when ``folder/cv_report.json`` exists, else
    the validation split), properties against the DFT data, training time, MD stability."""
    config, metrics, last = ship_run(folder)
    limit = 0.7 * shortest_training_distance(Path(config.data.train))
    md_rows = stability(folder / "model.pt", mlearn_cell(element), [300.0, *LIQUID_K[element]],
                        steps, limit, jobs=jobs)
    model = nnpot.load(folder / "model.pt")
    members = members_of(model)
    kinds = Counter(type(member.model).__name__ for member in members)
    if len(kinds) == 1:
        kind = next(iter(kinds)) + (f" committee of {len(members)}" if len(members) > 1 else "")
    else:   # members of different models: "committee of 3 (2 HDNNP, 1 MACE)"
        kind = (f"committee of {len(members)} ("
                + ", ".join(f"{count} {name}" for name, count in kinds.items()) + ")")
    cv_report = folder / "cv_report.json"
    if cv_report.is_file():
        report = json.loads(cv_report.read_text())
        held_out = "every frame used for the fit; errors from cross-validation."
        # one config, or a committee's: "A + B" (benchmarks/cv_committee.py)
        config_paths = [Path(name) for name in report["config"].split(" + ")]
        shown = [(path.relative_to(REPOSITORY) if path.is_relative_to(REPOSITORY) else path)
                 .as_posix() for path in config_paths]
        errors = cv_errors_section(report, element, shown,
                                   parity=(folder / "cv_parity.png").is_file())
    else:
        held_out = (f"{config.data.validation_fraction:.0%} of every config_type held out for "
                    f"validation.")
        errors = validation_errors_section(folder, config, metrics, element)
    lines = [
        f"# mlearn {element} — {kind} fitted to DFT (PBE)",
        "",
        f"`NNPCalculator(\"{folder.as_posix()}/model.pt\")`. Training data: the published mlearn "
        f"{element} training split (Zuo et al., J. Phys. Chem. A 124, 731 (2020); VASP PBE), "
        f"{held_out} " + rebuild_text(folder, "build_mlearn.py"),
        "",
        *errors,
    ]
    result = properties(folder / "model.pt", Path(config.data.train), CONVENTIONAL_ATOMS[element])
    (folder / "properties.json").write_text(json.dumps(result, indent=1))
    plot_energy_volume(read(config.data.train, ":"), result, folder / "energy_volume.png",
                       f"mlearn {element}")
    lines += properties_section(result) + ["E(V): `energy_volume.png`.", ""]
    write_card(folder, lines, config, last, md_rows, steps, limit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", action="store_true", help="run nnpot train first (resumes)")
    parser.add_argument("--steps", type=int, default=5000,
                        help="MD steps of 2 fs per temperature (default: 10 ps)")
    parser.add_argument("--jobs", type=int, default=1, choices=range(1, 4), metavar="1-3",
                        help="temperatures of the MD check run at once, one thread each "
                             "(default 1: one after another, on every thread)")
    args = parser.parse_args()
    element = args.folder.name.split("-")[1].capitalize()   # mlearn-<el>-<model>
    if args.train:
        train_stages(args.folder)
    card(args.folder, element, args.steps, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
