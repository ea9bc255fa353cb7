"""Benchmark: every nnpot model on a GPU — ms per energy+forces call and peak GPU memory.

Each model at the size of its own CPU benchmark (SchNet 128×3, HDNNP as bench_hdnnp, NequIP
l_max 1 and 2 as bench_nequip, MACE as bench_mace, CGCNN, MPNN and DimeNetPP at their defaults),
untrained, float32, through ``NNPCalculator(device=...)`` on fcc Cu (rattled 0.05 Å, cutoff 5 Å),
the positions nudged before every call, so each call builds its neighbour list (on the GPU: the
``auto`` backend keeps a GPU run there) and copies positions in and forces out, as MD does.
A model stops at the first size that runs out of memory or takes over ``--max-seconds`` a call.

    python benchmarks/bench_gpu.py [--device cuda] [--sizes 3 5 8 16 32] [--repeats 10]
                                   [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from bench_hdnnp import hdnnp_potential
from bench_mace import mace_potential
from bench_nequip import nequip_potential
from peers.peer_timing import copper

from nnpot import NNPCalculator, Potential
from nnpot.models import CGCNN, MPNN, DimeNetPP, SchNet


def seeded(model_class, **hparams) -> Potential:
    torch.manual_seed(0)
    return Potential(model_class(["Cu"], cutoff=5.0, **hparams))


MODELS = {
    "SchNet": lambda: seeded(SchNet, n_features=128, n_interactions=3, n_rbf=50),
    "HDNNP": hdnnp_potential,
    "NequIP l_max 1": lambda: nequip_potential(1),
    "NequIP l_max 2": lambda: nequip_potential(2),
    "MACE": mace_potential,
    "CGCNN": lambda: seeded(CGCNN),
    "MPNN": lambda: seeded(MPNN),
    "DimeNetPP": lambda: seeded(DimeNetPP),
}


def time_model(potential: Potential, device: str, sizes: list[int], repeats: int,
               max_seconds: float) -> dict[int, dict[str, float]]:
    """{n_atoms: {"ms": median ms per call, "peak_mb": peak GPU memory of a call}}; a size
    that runs out of memory is recorded with ``"oom": True`` and ends the model's run."""
    calc = NNPCalculator(potential, device=device, dtype="float32")
    result: dict[int, dict[str, float]] = {}
    for n in sizes:
        atoms = copper(n)
        atoms.calc = calc
        try:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            atoms.get_forces()  # warm-up, and the first-call time
            first = time.perf_counter() - start
            times = []
            for _ in range(repeats if first < max_seconds / 4 else 2):
                atoms.positions += 1e-4
                start = time.perf_counter()
                atoms.get_potential_energy()
                atoms.get_forces()
                times.append(1e3 * (time.perf_counter() - start))
        except torch.OutOfMemoryError:
            result[len(atoms)] = {"oom": True}
            print(f"  {len(atoms):>7} atoms: out of GPU memory", flush=True)
            break
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") \
            else float("nan")
        result[len(atoms)] = {"ms": statistics.median(times), "peak_mb": peak}
        print(f"  {len(atoms):>7} atoms: {result[len(atoms)]['ms']:9.1f} ms, "
              f"peak {peak:8.0f} MB", flush=True)
        if statistics.median(times) > 1e3 * max_seconds:
            break
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 8, 16, 32],
                        help="conventional fcc cells per side (4·n³ atoms)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=5.0,
                        help="stop a model at the first size slower than this per call")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}, float32, fcc Cu, cutoff 5 Å", flush=True)
    results = {}
    for model in args.models:
        print(model, flush=True)
        results[model] = time_model(MODELS[model](), args.device, args.sizes, args.repeats,
                                    args.max_seconds)
        if args.json:  # after every model, so a run stopped early keeps what it measured
            with open(args.json, "w") as handle:
                json.dump({"device": name, "torch": torch.__version__, "results": results},
                          handle, indent=1)
    sizes = sorted({n for r in results.values() for n in r})
    print("\n| model | " + " | ".join(f"{n} atoms: ms (peak MB)" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for model, row in results.items():
        cells = []
        for n in sizes:
            entry = row.get(n)
            cells.append("–" if entry is None else "out of memory" if entry.get("oom")
                         else f"{entry['ms']:.1f} ({entry['peak_mb']:.0f})")
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
