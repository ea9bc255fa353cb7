"""Benchmark: nnpot's MACE against mace-torch 0.3.16's MACE of the same size, same machine, same run.

ms per energy+forces call through each package's ASE calculator, fcc Cu of 108, 500 and 2048
atoms (rattled 0.05 Å), cutoff 5 Å, float32, 2 threads, positions nudged before every call (every
call rebuilds the neighbour list). Both models untrained, the size ``mace_run_train`` builds by
default: 64 channels, hidden irreps 64x0e + 64x1o, spherical harmonics to l = 3, correlation 3,
2 layers, 8 Bessel functions, envelope p = 5, radial MLP 64-64-64, average neighbour count 40.
The peer runs in its own virtual environment (``../shared/peers/setup.sh DIR mace``), when
present. Also: the peak memory (max RSS of a fresh process) of one nnpot call at 2048 and 8192
atoms.

    python benchmarks/bench_mace.py [--peers DIR] [--repeats 5] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from peers.peer_timing import bench_parser, interleaved_rounds, peak_rss_mb, run_peer, time_sizes

from nnpot import NNPCalculator, Potential
from nnpot.models import MACE


def mace_potential() -> Potential:
    """nnpot's MACE at mace_run_train's default size, for Cu."""
    torch.manual_seed(0)
    model = MACE(["Cu"], cutoff=5.0)  # the defaults are that size
    model.avg_num_neighbors.fill_(40.0)
    return Potential(model)


def peak_memory_mb(n_atoms: int) -> float:
    """Peak RSS (MB) of a fresh process that makes one float32 energy+forces call on
    ``n_atoms`` atoms of fcc Cu; NaN when the process dies (killed for memory)."""
    return peak_rss_mb(sys.executable, (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"torch.set_num_threads(2); from bench_mace import mace_potential; "
        f"from nnpot import NNPCalculator; from ase.build import bulk; "
        f"a = bulk('Cu', 'fcc', a=3.61, cubic=True).repeat({_repeats(n_atoms)}); "
        f"a.rattle(0.05, seed=0); "
        f"a.calc = NNPCalculator(mace_potential(), dtype='float32'); a.get_forces()"))


def _repeats(n_atoms: int) -> tuple[int, int, int]:
    """Repetitions of the 4-atom conventional cell giving ``n_atoms`` (2048: 8³; 8192: 16×16×8)."""
    return {2048: (8, 8, 8), 8192: (16, 16, 8)}[n_atoms]


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], repeats=5, rounds=1)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    calc = NNPCalculator(mace_potential(), dtype="float32")
    jobs = {"nnpot MACE": lambda: time_sizes(calc, args.repeats)}
    python = args.peers / "mace" / "bin" / "python"
    if python.exists():
        jobs["mace-torch"] = lambda: run_peer(python, "mace_model.py", args.repeats,
                                              env={"PEER_MACE_DEFAULTS": "1"})
    else:
        print(f"no mace-torch environment at {python}: timing nnpot alone")
    columns, medians = interleaved_rounds(args.rounds, jobs)
    print(f"\nMACE, ms per energy+forces call (median of {args.rounds}×{args.repeats}), fcc Cu, "
          f"64 channels, max_L 1, l_max 3, correlation 3, 2 layers, float32, 2 threads")
    names = list(medians)
    print(" atoms | " + " | ".join(f"{n:>12}" for n in names))
    for n_atoms in medians[names[0]]:
        print(f" {n_atoms:5d} | " + " | ".join(f"{medians[n].get(n_atoms, float('nan')):12.1f}"
                                              for n in names))
    for n_atoms, ms in medians["nnpot MACE"].items():
        if n_atoms in medians.get("mace-torch", {}):
            print(f" {n_atoms} atoms: nnpot / mace-torch = {ms / medians['mace-torch'][n_atoms]:.2f}")
    memory = {} if args.no_memory else {n: peak_memory_mb(n) for n in (2048, 8192)}
    for n_atoms, mb in memory.items():
        print(f" peak memory of one call, {n_atoms} atoms: "
              + (f"{mb:.0f} MB" if mb == mb else "killed (out of memory)"))
    if args.json:
        args.json.write_text(json.dumps({"call_ms": columns, "median_ms": medians,
                                         "peak_rss_mb": {str(k): v for k, v in memory.items()}},
                                        indent=1))


if __name__ == "__main__":
    sys.exit(main())
