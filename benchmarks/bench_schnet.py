"""Benchmark: nnpot SchNet against SchNetPack 2.2's SchNet, same machine, same run.

ms per energy+forces call through each package's ASE calculator, fcc Cu of 108, 500 and 2048
atoms (rattled 0.05 Å), cutoff 5 Å, 128 features, 3 interactions, 50 Gaussians, float32, 2
threads. Positions are nudged before every call, so every call rebuilds the neighbour list
(no skin for either package). Also: neighbour-list time per backend.

    python benchmarks/bench_schnet.py [--peers DIR] [--repeats 10] [--json out.json]

SchNetPack runs in its own virtual environment (``../shared/peers/setup.sh DIR schnetpack``,
made on first use); it is not a dependency of nnpot. It is timed twice: as installed, and with
the same heap and huge-page settings nnpot applies to itself (``nnpot.core.allocator``), so
that the ratio shows what the model code does and not only the allocator.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list
from peers.peer_timing import (
    SIZES,
    bench_parser,
    copper,
    interleaved_rounds,
    peer_python,
    run_peer,
    time_sizes,
)

from nnpot import NNPCalculator, Potential
from nnpot.core.neighbors import neighbor_list
from nnpot.models import SchNet

CUTOFF = 5.0
SAME_HEAP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**30),
             "THP_MEM_ALLOC_ENABLE": "1"}


def time_nnpot(repeats: int) -> dict[int, list[float]]:
    torch.manual_seed(0)
    model = SchNet(species=["Cu"], cutoff=CUTOFF, n_features=128, n_interactions=3, n_rbf=50)
    return time_sizes(NNPCalculator(Potential(model), dtype="float32"), repeats)


def time_neighbor_lists(repeats: int) -> dict[str, dict[int, float]]:
    result: dict[str, dict[int, float]] = {}
    for n in SIZES:
        atoms = copper(n)
        args = (atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
        jobs = {f"nnpot/{b}": (lambda b=b, args=args: neighbor_list(*args, backend=b))
                for b in ("vesin", "matscipy", "torch")}
        jobs["ase (reference)"] = lambda atoms=atoms: ase_neighbor_list("ijS", atoms, CUTOFF)
        for name, job in jobs.items():
            job()
            times = []
            for _ in range(max(3, repeats // 2)):
                start = time.perf_counter()
                job()
                times.append((time.perf_counter() - start) * 1e3)
            result.setdefault(name, {})[len(atoms)] = statistics.median(times)
    return result


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], repeats=10, rounds=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    python = peer_python(args.peers, "schnetpack")

    columns, medians = interleaved_rounds(args.rounds, {
        "nnpot": lambda: time_nnpot(args.repeats),
        "schnetpack": lambda: run_peer(python, "schnetpack_schnet.py", args.repeats),
        "schnetpack_same_heap": lambda: run_peer(python, "schnetpack_schnet.py", args.repeats,
                                                 SAME_HEAP)})
    neighbor = time_neighbor_lists(args.repeats)

    print(f"\nSchNet energy+forces, ms per call (median of {args.rounds}×{args.repeats}), "
          f"fcc Cu, cutoff {CUTOFF} Å, float32, {torch.get_num_threads()} threads")
    print(f"{'atoms':>6} | {'nnpot':>8} | {'SchNetPack':>10} | {'ratio':>6} | "
          f"{'SchNetPack same heap':>20} | {'ratio':>6}")
    for n_atoms in medians["nnpot"]:
        ours, peer, peer_heap = (medians[k][n_atoms] for k in columns)
        print(f"{n_atoms:>6} | {ours:8.1f} | {peer:10.1f} | {ours / peer:6.2f} | "
              f"{peer_heap:20.1f} | {ours / peer_heap:6.2f}")
    print("\nneighbour list, ms per call (median)")
    print(f"{'backend':>18} | " + " | ".join(f"{n:>7}" for n in medians["nnpot"]))
    for name, row in neighbor.items():
        print(f"{name:>18} | " + " | ".join(f"{t:7.1f}" for t in row.values()))
    if args.json:
        args.json.write_text(json.dumps({"call_ms": columns, "median_ms": medians,
                                         "neighbor_list_ms": neighbor}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
