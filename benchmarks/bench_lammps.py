"""Benchmark: pair_style nnpot in LAMMPS — ms per MD step against the model call alone and
against ``nnpot md`` (ASE); 2 MPI ranks against 1.

fcc Cu of 2048 and 16384 atoms (a = 3.61 Å, 300 K, velocity Verlet, 1 fs), float32:
* the shipped potentials/cu/model.pt (SchNet, 3 interactions, cutoff 5 Å: energy reach 15 Å),
  exported with its message steps: 2 ranks exchange ghost features after each step (halo
  exchange); also 2 ranks with the one-program package (ghost graph 15 Å deep), for contrast;
* an untrained HDNNP for Cu (default symmetry functions, cutoff 5 Å: reach 5 Å), timing only
  (the cost does not depend on the weights);
* an untrained NequIP for Cu (l_max 1, 32 features, 3 layers, cutoff 5 Å: reach 15 Å),
  exported with its message steps (halo exchange on 2 ranks), timing only.

Per size and model: LAMMPS on 1 rank (``fix nve``, neighbour skin 1 Å, a warm-up run then a
timed run: Loop time / steps), and the pair style's own split of each step into the model call
and the rest (graph, copies, forces); the same model through ``NNPCalculator`` (energy+forces,
neighbour list included: what ``nnpot bench`` times); ``nnpot md``'s integrator (ASE velocity
Verlet, Verlet skin 0.5 Å). At 16384 atoms also 2 ranks × 1 thread against 1 rank × 1 thread
(medians of 2 alternating runs each).

    python benchmarks/bench_lammps.py [--threads 2] [--models schnet hdnnp nequip]
                                      [--sizes 2048 16384] [--json benchmarks/results/lammps.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from nnpot import NNPCalculator, Potential
from nnpot.lammps import export_for_lammps
from nnpot.lammps.build import build_plugin
from nnpot.lammps.run import nnpot_preamble, run_lammps, write_data
from nnpot.models import HDNNP, NequIP

ROOT = Path(__file__).resolve().parents[1]
SIZES = {2048: 8, 16384: 16}        # atoms → conventional cells per side
STEPS = {2048: 20, 16384: 10}       # timed MD steps
ROUNDS = 2                          # 1-rank and 2-rank runs alternate, this many times each


def copper(n: int):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)
    atoms.rattle(0.05, seed=1)
    return atoms


def lammps_step(plugin: Path, package: Path, atoms, steps: int, ranks: int, threads: int,
                folder: Path, warmup: int = 2) -> dict[str, float]:
    """ms per MD step in LAMMPS, the pair style's model / around-model ms per call and the peak
    resident memory of the largest rank (MiB). ``warmup`` steps run first, untimed; the timed run
    then starts without recomputing forces (``pre no``), which saves a call on large systems."""
    write_data(atoms, folder / "data.lmp", ["Cu"])
    script = nnpot_preamble(plugin, package, "Cu") + f"""neighbor 1.0 bin
timestep 0.001
velocity all create 600 4928 mom yes rot yes dist gaussian
fix nve all nve
thermo {steps}
run {warmup}
run {steps} pre no
"""
    out = run_lammps(script, folder, ranks=ranks, threads=threads).stdout
    loop = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", out)[-1]
    split = re.findall(r"pair nnpot: \d+ calls, ([0-9.]+) ms/call in the model, ([0-9.]+) ms/call",
                       out)[-1]
    result = {"step_ms": 1e3 * float(loop[0]) / int(loop[1]), "model_ms": float(split[0]),
              "around_model_ms": float(split[1])}
    peak = re.findall(r"pair nnpot: peak memory per rank ([0-9.]+) MiB", out)
    if peak:
        result["peak_rank_mib"] = float(peak[-1])
    exchange = re.findall(r"of which ([0-9.]+) ms/call in halo exchanges", out)
    if exchange:
        result["halo_exchange_ms"] = float(exchange[-1])
    return result


def calculator_call_ms(calc: NNPCalculator, atoms, repeats: int) -> float:
    """Median ms per energy+forces call, positions nudged before each (a full calculation)."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()
    times = []
    for _ in range(repeats):
        atoms.positions += 1e-4
        start = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def ase_md_step_ms(calc: NNPCalculator, atoms, steps: int) -> float:
    """Median ms per velocity-Verlet step as ``nnpot md`` runs it (Verlet skin 0.5 Å)."""
    atoms = atoms.copy()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, 1 * units.fs)
    dynamics.run(2)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        dynamics.run(1)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def hdnnp_file(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "hdnnp-cu.pt"
    Potential(HDNNP(["Cu"], cutoff=5.0, hidden=(64, 64))).save(path)
    return path


def nequip_file(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "nequip-cu.pt"
    model = NequIP(["Cu"], cutoff=5.0, l_max=1, n_features=32, n_layers=3)
    model.avg_num_neighbors.fill_(42.0)   # fcc Cu within 5 Å
    Potential(model).save(path)
    return path


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each timing's median over repeated runs."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def ghost_graph_package(model: Path, work: Path) -> Path:
    """The model as one program only (no message steps): ranks use the deep ghost graph."""
    package = work / f"{model.stem}-one-program.pt2"
    if not package.exists():
        export_for_lammps(model, package, dtype="float32", halo_exchange=False,
                          log=lambda line: None)
    return package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the 1-rank runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--models", nargs="+", default=["schnet", "hdnnp", "nequip"],
                        choices=["schnet", "hdnnp", "nequip"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plugin = build_plugin(log=lambda line: None)
    work = Path(tempfile.mkdtemp(prefix="nnpot-bench-lammps-"))
    makers = {"schnet": ("SchNet (potentials/cu)", lambda: ROOT / "potentials" / "cu" / "model.pt"),
              "hdnnp": ("HDNNP (untrained)", lambda: hdnnp_file(work)),
              "nequip": ("NequIP l_max 1 (untrained)", lambda: nequip_file(work))}
    models = {makers[key][0]: makers[key][1]() for key in args.models}
    results: dict[str, dict] = {}
    for name, model in models.items():
        package = export_for_lammps(model, work / f"{model.stem}.pt2", dtype="float32",
                                    log=lambda line: None)
        calc = NNPCalculator(model, dtype="float32", skin=0.5)
        for n_atoms in args.sizes:
            atoms, steps = copper(SIZES[n_atoms]), STEPS[n_atoms]
            row = {"lammps": lammps_step(plugin, package, atoms, steps, 1, args.threads,
                                         work / f"{name[:5]}-{n_atoms}-1"),
                   "calculator_ms": calculator_call_ms(NNPCalculator(model, dtype="float32"),
                                                       atoms, max(3, steps // 2)),
                   "ase_md_step_ms": ase_md_step_ms(calc, atoms, steps)}
            if n_atoms == 16384:
                # Alternating rounds, so that a machine's drift in speed hits both alike.
                rounds = {1: [], 2: []}
                for _ in range(ROUNDS):
                    for ranks in (1, 2):
                        rounds[ranks].append(lammps_step(plugin, package, atoms, steps, ranks, 1,
                                                         work / f"{name[:5]}-{n_atoms}-{ranks}r"))
                row["lammps_1rank_1thread"] = median_run(rounds[1])
                row["lammps_2ranks_1thread"] = median_run(rounds[2])
                if name.startswith("SchNet"):   # the one-program package, for contrast
                    row["lammps_2ranks_1thread_ghost_graph"] = lammps_step(
                        plugin, ghost_graph_package(model, work), atoms, steps, 2, 1,
                        work / f"{name[:5]}-{n_atoms}-2g")
            results[f"{name} @ {n_atoms}"] = row
            print(name, n_atoms, json.dumps(row), flush=True)

    print(f"\npair_style nnpot, fcc Cu, float32, ms per MD step ({args.threads} threads unless "
          f"said; medians of the timed steps)")
    print(f"{'model @ atoms':>30} | {'LAMMPS':>8} | {'model':>8} | {'overhead':>8} | "
          f"{'NNPCalc':>8} | {'nnpot md':>8} | {'md/LAMMPS':>9}")
    for key, row in results.items():
        lmp = row["lammps"]
        overhead = lmp["step_ms"] / lmp["model_ms"] - 1
        print(f"{key:>30} | {lmp['step_ms']:8.1f} | {lmp['model_ms']:8.1f} | {overhead:8.1%} | "
              f"{row['calculator_ms']:8.1f} | {row['ase_md_step_ms']:8.1f} | "
              f"{row['ase_md_step_ms'] / lmp['step_ms']:9.2f}")
    print("\n16384 atoms, 1 thread per rank: ms per step and speed-up of 2 ranks")
    for key, row in results.items():
        if "lammps_2ranks_1thread" in row:
            one, two = row["lammps_1rank_1thread"]["step_ms"], row["lammps_2ranks_1thread"]["step_ms"]
            print(f"{key:>30} | 1 rank {one:8.1f} | 2 ranks {two:8.1f} | {one / two:5.2f}×")
            if "lammps_2ranks_1thread_ghost_graph" in row:
                ghost = row["lammps_2ranks_1thread_ghost_graph"]["step_ms"]
                print(f"{'(one program, ghost graph)':>30} | {'':15} | 2 ranks {ghost:8.1f} | "
                      f"{one / ghost:5.2f}×")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
