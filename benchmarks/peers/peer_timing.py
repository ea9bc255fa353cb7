"""Timing helpers shared by nnpot's benchmarks and the peer scripts beside this file.

Plain ASE and the standard library only: the peer scripts import it from their own virtual
environments, where nnpot is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ase.build import bulk

SIZES = [3, 5, 8]  # conventional fcc cells per side: 108, 500, 2048 atoms
HERE = Path(__file__).resolve().parent
# Where the peers' virtual environments live: $NNPOT_PEERS, else ``peers`` beside the checkout.
PEERS = Path(os.environ.get("NNPOT_PEERS", HERE.parents[2] / "peers"))


def copper(n: int):
    """fcc Cu, n×n×n conventional cells (4n³ atoms), a = 3.61 Å, rattled 0.05 Å (seeded)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.rattle(0.05, seed=1)
    return atoms


def peak_rss_mb(python: str, code: str) -> float:
    """Peak RSS (MB, VmHWM) of a fresh ``python`` process running ``code`` (which makes the
    call to measure); NaN when the process dies (killed for memory). (Not getrusage's
    ru_maxrss: on Linux it survives exec, so a child started by a large parent reports the
    parent's size.)"""
    code += ("\nprint([int(line.split()[1]) / 1024 for line in open('/proc/self/status') "
             "if line.startswith('VmHWM:')][0])")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


def time_calls(atoms, repeats: int, call: Callable[[], object] | None = None) -> list[float]:
    """ms per call (default: energy, then forces), the positions nudged before each so that
    every call is a full calculation, neighbour list included; one warm-up call first."""
    call = call or (lambda: (atoms.get_potential_energy(), atoms.get_forces()))
    atoms.get_forces()
    times = []
    for _ in range(repeats):
        atoms.positions += 1e-4
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def time_sizes(calc, repeats: int, sizes=SIZES, call_of=None) -> dict[int, list[float]]:
    """{n_atoms: ms per call} over fcc Cu of each size, one calculator."""
    result = {}
    for n in sizes:
        atoms = copper(n)
        atoms.calc = calc
        result[len(atoms)] = time_calls(atoms, repeats, call_of(atoms) if call_of else None)
    return result


def peer_python(peers: Path, name: str) -> Path:
    """The python of a peer's virtual environment, made by ../shared/peers/setup.sh if missing."""
    python = peers / name / "bin" / "python"
    if not python.exists():
        setup = HERE.parents[2] / "shared" / "peers" / "setup.sh"
        print(f"making the {name} environment in {peers} (once) ...", flush=True)
        subprocess.run(["bash", str(setup), str(peers), name], check=True)
    return python


def run_peer(python: Path, script: str, repeats: int, env: dict | None = None,
             sizes=SIZES) -> dict[int, list[float]]:
    """Run a peer script of this folder in its venv; it prints {"n_atoms", "ms"} as JSON.
    The peer runs as installed: without the huge-page variable importing nnpot sets here
    (``nnpot.core.allocator``) unless ``env`` asks for it."""
    base = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([str(python), str(HERE / script), "--repeats", str(repeats), "--sizes",
                          *map(str, sizes)], env=dict(base, **(env or {})), check=True,
                         capture_output=True, text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(zip(data["n_atoms"], data["ms"]))


def interleaved_rounds(rounds: int, jobs: dict[str, Callable[[], dict[int, list[float]]]]
                       ) -> tuple[dict[str, dict[int, list[float]]], dict[str, dict[int, float]]]:
    """Run every timing job once per round, alternating, so machine noise hits all alike.

    Returns every call's ms ({job: {n_atoms: [...]}}) and their medians."""
    columns: dict[str, dict[int, list[float]]] = {name: {} for name in jobs}
    for round_ in range(rounds):
        print(f"round {round_ + 1}/{rounds} ...", flush=True)
        for name, job in jobs.items():
            for n_atoms, values in job().items():
                columns[name].setdefault(n_atoms, []).extend(values)
    medians = {k: {n: statistics.median(v) for n, v in col.items()} for k, col in columns.items()}
    return columns, medians


def bench_parser(description: str, repeats: int, rounds: int) -> argparse.ArgumentParser:
    """The command line of nnpot's same-run benchmarks against a peer (``make bench``): where
    the peers live, calls per size, rounds alternating the packages, and a JSON file to write;
    a benchmark adds its own options before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--peers", type=Path, default=PEERS)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--rounds", type=int, default=rounds,
                        help="alternate the packages this often")
    parser.add_argument("--json", type=Path)
    return parser


def peer_parser(repeats: int = 10) -> argparse.ArgumentParser:
    """The command line every peer script takes (``run_peer`` passes --repeats and --sizes);
    a script adds its own options before parsing."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def print_json(result: dict[int, list[float]]) -> None:
    """What a peer script prints: one JSON line."""
    print(json.dumps({"n_atoms": list(result), "ms": list(result.values())}))
