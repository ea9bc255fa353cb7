"""Benchmark: nnpot's NequIP against nequip 0.19 and MACE 0.3.16, same machine, same run.

ms per energy+forces call through each package's ASE calculator, fcc Cu of 108, 500 and 2048
atoms (rattled 0.05 Å), cutoff 5 Å, float32, 2 threads, positions nudged before every call (every
call rebuilds the neighbour list). Models of matched size, untrained: 32 features, 4 layers,
l_max = 1 and 2, 8 Bessel functions, radial MLP 64-64. The peers run in their own virtual
environments (``../shared/peers/setup.sh DIR nequip mace``), when present. Also: the peak memory
(max RSS of a fresh process) of one nnpot call at 2048 and 8788 atoms (13³ cells).

    python benchmarks/bench_nequip.py [--peers DIR] [--repeats 5] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from peers.peer_timing import bench_parser, interleaved_rounds, peak_rss_mb, run_peer, time_sizes

from nnpot import NNPCalculator, Potential
from nnpot.models import NequIP

CUTOFF = 5.0


def nequip_potential(l_max: int) -> Potential:
    torch.manual_seed(0)
    return Potential(NequIP(["Cu"], cutoff=CUTOFF, l_max=l_max, n_features=32, n_layers=4,
                            n_bessel=8, radial_mlp=(64, 64)))


def peak_memory_mb(l_max: int, cells: int) -> float:
    """Peak RSS (MB) of a fresh process that makes one energy+forces call on 4·cells³ atoms;
    NaN when the process dies (killed for memory)."""
    return peak_rss_mb(sys.executable, (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"torch.set_num_threads(2); from bench_nequip import nequip_potential; "
        f"from nnpot import NNPCalculator; from peers.peer_timing import copper; "
        f"a = copper({cells}); a.calc = NNPCalculator(nequip_potential({l_max}), "
        f"dtype='float32'); a.get_forces()"))


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], repeats=5, rounds=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    jobs = {}
    for l_max in (1, 2):
        calc = NNPCalculator(nequip_potential(l_max), dtype="float32")
        jobs[f"nnpot l={l_max}"] = lambda calc=calc: time_sizes(calc, args.repeats)
        for peer, script in (("nequip", "nequip_model.py"), ("mace", "mace_model.py")):
            python = args.peers / peer / "bin" / "python"
            if python.exists() and (Path(__file__).parent / "peers" / script).exists():
                jobs[f"{peer} l={l_max}"] = (
                    lambda python=python, script=script, l_max=l_max: run_peer(
                        python, script, args.repeats, env={"PEER_L_MAX": str(l_max)}))
    columns, medians = interleaved_rounds(args.rounds, {} if args.memory_only else jobs)
    names = list(medians)
    print(f"\nNequIP-style models, ms per energy+forces call (median of {args.rounds}×"
          f"{args.repeats}), fcc Cu, 32 features, 4 layers, float32, 2 threads")
    print(" atoms | " + " | ".join(f"{n:>12}" for n in names))
    for n_atoms in (medians[names[0]] if names else []):
        print(f" {n_atoms:5d} | " + " | ".join(f"{medians[n].get(n_atoms, float('nan')):12.1f}"
                                              for n in names))
    for l_max in (1, 2):
        ours = medians.get(f"nnpot l={l_max}", {})
        peers = [medians[n] for n in names if n.endswith(f"l={l_max}") and n.startswith(
            ("nequip", "mace"))]
        for n_atoms, ms in ours.items():
            faster = min((p[n_atoms] for p in peers if n_atoms in p), default=None)
            if faster:
                print(f" l={l_max}, {n_atoms} atoms: nnpot / faster peer = {ms / faster:.2f}")
    memory = {}
    if not args.no_memory:
        for l_max in (1, 2):
            for cells in (8, 13):  # 2048 and 8788 atoms
                memory[f"l={l_max}, {4 * cells**3} atoms"] = peak_memory_mb(l_max, cells)
        print("\nPeak memory of one call (max RSS of a fresh process, MB)")
        for name, mb in memory.items():
            print(f"  {name}: " + (f"{mb:.0f}" if mb == mb else "killed (out of memory)"))
    if args.json:
        args.json.write_text(json.dumps({"call_ms": columns, "median_ms": medians,
                                         "peak_rss_mb": memory}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
