"""Benchmark: nnpot's HDNNP against TorchANI 2.9, same machine, same run; and an MD step against
ASE's EMT.

ms per energy+forces call through each package's ASE calculator, fcc Cu of 108, 500 and 2048
atoms (rattled 0.05 Å), float32, 2 threads, positions nudged before every call so every call
rebuilds the neighbour list. Matched descriptor: 16 radial functions at 5.1 Å and 32 angular
ones at 3.5 Å (nnpot: G2 on TorchANI's radial grid, η = 19.7 Å⁻²; G9 with 4 η × ζ ∈ {1, 2, 4, 16}
× λ = ±1; TorchANI: its ANI-2x-style terms, 8 radial shifts × 4 angle sections), one network
48-160-128-96-1 each. TorchANI runs in its own virtual environment
(``../shared/peers/setup.sh DIR torchani``, made on first use); it is not a dependency of nnpot.

Also: ms per MD step (velocity Verlet, 2048 atoms) with nnpot's calculator (Verlet skin 0.5 Å,
as ``nnpot md`` uses it) and with ASE's EMT.

    python benchmarks/bench_hdnnp.py [--peers DIR] [--repeats 10] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from peers.peer_timing import bench_parser, copper, interleaved_rounds, peer_python, run_peer, time_sizes

from nnpot import NNPCalculator, Potential
from nnpot.models import HDNNP

RADIAL_CUTOFF, ANGULAR_CUTOFF = 5.1, 3.5
MATCHED = (
    [{"type": "G2", "eta": 19.7, "rs": 0.8 + k * (RADIAL_CUTOFF - 0.8) / 16, "cutoff": RADIAL_CUTOFF}
     for k in range(16)]
    + [{"type": "G9", "eta": eta, "zeta": zeta, "lambda": lam, "cutoff": ANGULAR_CUTOFF}
       for eta in (0.02, 0.08, 0.2, 0.5) for zeta in (1, 2, 4, 16) for lam in (1, -1)])


def hdnnp_potential() -> Potential:
    torch.manual_seed(0)
    return Potential(HDNNP(["Cu"], cutoff=RADIAL_CUTOFF, symmetry_functions=MATCHED,
                           hidden=(160, 128, 96), activation="tanh"))


def time_nnpot(repeats: int) -> dict[int, list[float]]:
    return time_sizes(NNPCalculator(hdnnp_potential(), dtype="float32"), repeats)


def md_step_ms(calc, steps: int = 20) -> float:
    """Median ms per velocity-Verlet step (2 fs) of 2048 atoms at 300 K."""
    atoms = copper(8)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, 2 * units.fs)
    dynamics.run(2)  # warm-up (the first step builds the Verlet list)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        dynamics.run(1)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], repeats=10, rounds=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    python = peer_python(args.peers, "torchani")

    columns, medians = interleaved_rounds(args.rounds, {
        "nnpot": lambda: time_nnpot(args.repeats),
        "torchani": lambda: run_peer(python, "torchani_ani.py", args.repeats)})
    md = {"nnpot HDNNP (skin 0.5 Å)": md_step_ms(NNPCalculator(hdnnp_potential(), skin=0.5,
                                                                 dtype="float32")),
          "ASE EMT": md_step_ms(EMT())}

    print(f"\nHDNNP energy+forces, ms per call (median of {args.rounds}×{args.repeats}), fcc Cu, "
          f"16 radial ({RADIAL_CUTOFF} Å) + 32 angular ({ANGULAR_CUTOFF} Å) functions, "
          f"48-160-128-96-1, float32, {torch.get_num_threads()} threads")
    print(f"{'atoms':>6} | {'nnpot':>8} | {'TorchANI':>8} | {'ratio':>6}")
    for n_atoms in medians["nnpot"]:
        ours, peer = medians["nnpot"][n_atoms], medians["torchani"][n_atoms]
        print(f"{n_atoms:>6} | {ours:8.1f} | {peer:8.1f} | {ours / peer:6.2f}")
    print("\nMD step, 2048 atoms, velocity Verlet, ms per step (median of 20)")
    for name, ms in md.items():
        print(f"{name:>26} | {ms:7.1f}")
    if args.json:
        args.json.write_text(json.dumps({"call_ms": columns, "median_ms": medians,
                                         "md_step_ms": md}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
