"""Benchmark: what a committee costs against one member, same run.

ms per energy+forces call through NNPCalculator, fcc Cu of 108, 500 and 2048 atoms (rattled
0.05 Å), float32, 2 threads, every call rebuilding the neighbour list: one SchNet (128 features,
3 interactions, 50 Gaussians, 5 Å, as bench_schnet.py) against a committee of 4 such SchNets,
and the same for the HDNNP of bench_hdnnp.py. The committee shares the neighbour list, the pair
vectors and the strain; each member runs its own forward and backward pass.

    python benchmarks/bench_committee.py [--repeats 10] [--rounds 2] [--members 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from bench_hdnnp import hdnnp_potential
from peers.peer_timing import interleaved_rounds, time_sizes

from nnpot import Committee, NNPCalculator, Potential
from nnpot.models import SchNet


def schnet(seed: int) -> Potential:
    torch.manual_seed(seed)
    return Potential(SchNet(species=["Cu"], cutoff=5.0, n_features=128, n_interactions=3,
                            n_rbf=50))


def hdnnp(seed: int) -> Potential:
    torch.manual_seed(seed)
    return hdnnp_potential()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--json", help="write every timing here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    calculators = {}
    for name, make in (("SchNet", schnet), ("HDNNP", hdnnp)):
        calculators[f"{name} ×1"] = NNPCalculator(make(0), dtype="float32")
        calculators[f"{name} ×{args.members}"] = NNPCalculator(
            Committee([make(seed) for seed in range(args.members)]), dtype="float32")
    jobs = {name: (lambda calc=calc: time_sizes(calc, args.repeats))
            for name, calc in calculators.items()}
    columns, medians = interleaved_rounds(args.rounds, jobs)
    print(f"\nCommittee cost, ms per energy+forces call (median of {args.rounds}×{args.repeats}), "
          f"fcc Cu, float32, 2 threads")
    names = list(medians)
    print(" atoms | " + " | ".join(f"{n:>11}" for n in names) + " | SchNet ratio | HDNNP ratio")
    for n_atoms in medians[names[0]]:
        row = [medians[n][n_atoms] for n in names]
        print(f" {n_atoms:5d} | " + " | ".join(f"{v:11.1f}" for v in row)
              + f" | {row[1] / row[0]:12.2f} | {row[3] / row[2]:11.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"call_ms": columns, "medians": medians}, handle, indent=1)


if __name__ == "__main__":
    sys.exit(main())
