"""Benchmark: large systems — SchNet, HDNNP and NequIP on 16 384 and 131 072 atoms of fcc Cu, in
LAMMPS on 1 and 2 ranks and through NNPCalculator: ms per step or call and peak memory.

The models are those of bench_lammps.py (the shipped potentials/cu SchNet; an untrained HDNNP
and an untrained NequIP l_max 1, 32 features, 3 layers, cutoff 5 Å: timing and memory do not
depend on the weights), float32, exported once each (message steps compiled one by one where
the model declares them: halo exchange on 2 ranks).

* LAMMPS, 1 rank × 1 thread and 2 ranks × 1 thread: ms per velocity-Verlet step (``warmup``
  untimed steps, then the timed ones) and the peak resident memory of the largest rank, which
  the pair style reports at the end of a run (VmHWM: LAMMPS, torch and the model together).
* NNPCalculator (2 threads), each size in a fresh process: the median ms of ``--calls``
  energy+forces calls after a first one (as in MD: the heap has settled), and that process's
  peak resident memory over all of them (ru_maxrss), with the allocator policy it ended in
  (``nnpot.core.allocator``: heap kept, or large buffers released). The same process first
  evaluates 108 atoms; what the large cell adds over that baseline, per atom, is the memory per
  atom that must not grow with size.

A run that does not fit in memory is killed by the kernel; its row says so and the other runs
go on.

    python benchmarks/bench_scale.py [--models schnet hdnnp nequip] [--sizes 16384 131072]
                                     [--ranks 1 2] [--calls 4] [--json benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_lammps import ROOT, copper, hdnnp_file, lammps_step, nequip_file

from nnpot.lammps import export_for_lammps
from nnpot.lammps.build import build_plugin
from nnpot.lammps.run import LammpsRunError

CELLS = {2048: 8, 16384: 16, 62500: 25, 131072: 32}   # atoms (4 n³) → conventional cells per side
TIMED_STEPS = {2048: 5, 16384: 3, 62500: 1, 131072: 1}

# One process per size: the peak memory of a process is its own, never an earlier size's.
CALCULATOR_PROBE = r"""
import json, resource, sys
from nnpot import NNPCalculator   # first: nnpot asks PyTorch for huge pages before torch loads
from nnpot.core.allocator import policy
import torch
from ase.build import bulk
model, cells, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, sys.argv[4])
from bench_lammps import calculator_call_ms
torch.set_num_threads(2)
calc = NNPCalculator(model, dtype="float32")
def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
small = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
small.calc = calc
small.get_forces()
baseline = rss_mib()
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(cells)
atoms.rattle(0.05, seed=1)
call_ms = calculator_call_ms(calc, atoms, calls)   # a first call, then the timed ones
peak = rss_mib()
print(json.dumps({"call_ms": call_ms, "calls": calls, "peak_mib": peak,
                  "baseline_mib": baseline, "kib_per_atom": 1024 * (peak - baseline) / len(atoms),
                  "allocator": policy()}))
"""


def calculator_run(model: Path, cells: int, calls: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CALCULATOR_PROBE, str(model), str(cells), str(calls),
                           str(Path(__file__).resolve().parent)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        killed = done.returncode in (-9, 137)
        return {"failed": "killed (out of memory)" if killed else done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def lammps_run(plugin: Path, package: Path, n_atoms: int, ranks: int, folder: Path) -> dict:
    try:
        row = lammps_step(plugin, package, copper(CELLS[n_atoms]), TIMED_STEPS[n_atoms], ranks,
                          1, folder, warmup=1 if n_atoms > 16384 else 2)
    except LammpsRunError as error:
        text = str(error)   # "LAMMPS failed (exit N) in …": a rank killed by the kernel is -9
        # SIGKILL (the kernel's out-of-memory killer): -9, or 137 / 247 through a wrapper
        killed = any(code in text for code in ("(exit -9)", "(exit 137)", "(exit 247)", "Killed"))
        return {"failed": "killed (out of memory)" if killed else text[:200] + " … " + text[-300:]}
    row["kib_per_atom_rank"] = 1024 * row["peak_rank_mib"] * ranks / n_atoms
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 131072],
                        choices=sorted(CELLS))
    parser.add_argument("--models", nargs="+", default=["schnet", "hdnnp", "nequip"],
                        choices=["schnet", "hdnnp", "nequip"])
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 2],
                        help="LAMMPS rank counts (none: NNPCalculator only)")
    parser.add_argument("--calls", type=int, default=4,
                        help="NNPCalculator calls timed after the first (median; peak over all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    plugin = build_plugin(log=lambda line: None) if args.ranks else None
    work = Path(tempfile.mkdtemp(prefix="nnpot-bench-scale-"))
    makers = {"schnet": ("SchNet (potentials/cu)", lambda: ROOT / "potentials" / "cu" / "model.pt"),
              "hdnnp": ("HDNNP (untrained)", lambda: hdnnp_file(work)),
              "nequip": ("NequIP l_max 1 (untrained)", lambda: nequip_file(work))}
    results: dict[str, dict] = {}
    for key in args.models:
        name, make = makers[key]
        model = make()
        package = (export_for_lammps(model, work / f"{model.stem}.pt2", dtype="float32",
                                     log=lambda line: None) if args.ranks else None)
        for n_atoms in args.sizes:
            row = {f"lammps_{ranks}rank": lammps_run(plugin, package, n_atoms, ranks,
                                                     work / f"{key}-{n_atoms}-{ranks}")
                   for ranks in args.ranks}
            row["calculator"] = calculator_run(model, CELLS[n_atoms], args.calls)
            results[f"{name} @ {n_atoms}"] = row
            print(name, n_atoms, json.dumps(row), flush=True)
            if args.json:   # after every size: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps(results, indent=1))

    print("\nfcc Cu, float32. LAMMPS: ms/step and peak MiB of the largest rank, 1 thread per rank;"
          " NNPCalculator (2 threads): ms/call, peak MiB, KiB/atom over a 108-atom baseline")
    for label, row in results.items():
        cells = []
        for ranks in args.ranks:
            entry = row[f"lammps_{ranks}rank"]
            text = entry.get("failed") or (f"{entry['step_ms']:9.0f} ms "
                                           f"{entry['peak_rank_mib']:7.0f} MiB")
            cells.append(f"{ranks} rank: {text}")
        calc = row["calculator"]
        cells.append("calculator: " + (calc["failed"] if "failed" in calc else
                                       f"{calc['call_ms']:9.0f} ms {calc['peak_mib']:7.0f} MiB "
                                       f"{calc['kib_per_atom']:6.2f} KiB/atom"))
        print(f"{label:>36} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
