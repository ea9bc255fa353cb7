"""Rebuild the shipped Cu potential from nothing: data → training → model card.

    python potentials/cu/build.py             # ~20 minutes on 2 cores
    python potentials/cu/build.py --card-only # re-measure the card of the committed model.pt

1. EMT reference data for fcc Cu (``nnpot.demo.reference_data``, seed 0, twice the default frames);
2. ``nnpot train potentials/cu/config.yaml``;
3. ``model.pt`` ← the run's best model; the card compares the potential with EMT itself:
   test errors, lattice constant, bulk modulus, elastic constants, NVE energy drift.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ase.build import bulk
from ase.calculators.emt import EMT

import nnpot
from nnpot.demo.reference_data import write_emt_copper
from nnpot.md import md
from nnpot.md.properties import cubic_properties
from nnpot.train import fit, load_config
from nnpot.train.config import KeysConfig
from nnpot.train.evaluate import evaluate, labelled_graphs
from nnpot.train.report import metrics_table, plot_parity

HERE = Path(__file__).resolve().parent


def build_data() -> None:
    start = time.perf_counter()
    train, test = write_emt_copper(HERE / "data", seed=0, scale=2.0, progress=True)
    print(f"data: {train}, {test} ({time.perf_counter() - start:.0f} s)")


def train() -> None:
    run = HERE / "run"
    if run.exists():
        shutil.rmtree(run)
    best = fit(load_config(HERE / "config.yaml"))
    shutil.copy(best, HERE / "model.pt")
    for name in ("learning_curves.png",):
        shutil.copy(run / name, HERE / name)


def nve_drift(model: Path) -> tuple[float, float]:
    """meV/atom/ps of the total energy, float64, 256 atoms, 300 K, 1 fs, 2 ps; and ns/day."""
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((4, 4, 4))
    result = md(atoms, nnpot.NNPCalculator(model, dtype="float64", skin=0.5), ensemble="nve",
                temperature=300, timestep=1.0, steps=2000, interval=10, seed=0, progress=False)
    return result.drift_mev_per_atom_ps, result.ns_per_day


def card() -> None:
    model = HERE / "model.pt"
    potential = nnpot.load(model)
    config = load_config(HERE / "config.yaml")
    graphs = labelled_graphs(config.data.test, potential.cutoff, KeysConfig())
    metrics, values = evaluate(potential, graphs, keep_values=True)
    summary = metrics.summary()
    plot_parity(values, summary, HERE / "parity_test.png", "Cu SchNet on EMT test frames")
    results = {"test (generated, held out)": {"frames": len(graphs), "metrics": summary}}

    independent = HERE.parents[2] / "shared" / "data" / "emt_cu_test.extxyz"
    if independent.is_file():  # a separately generated EMT set, where the repository has one
        other = labelled_graphs(str(independent), potential.cutoff, KeysConfig())
        results["independent EMT test (shared/data/emt_cu_test.extxyz)"] = {
            "frames": len(other), "metrics": evaluate(potential, other)[0].summary()}

    ours = cubic_properties(nnpot.NNPCalculator(model, dtype="float64"))
    reference = cubic_properties(EMT())
    drift, ns_day = nve_drift(model)
    rows = [("lattice constant a (Å)", "lattice_constant", "{:.4f}"),
            ("bulk modulus B (GPa)", "bulk_modulus", "{:.1f}"),
            ("C11 (GPa)", "c11", "{:.1f}"), ("C12 (GPa)", "c12", "{:.1f}"),
            ("C44 (GPa)", "c44", "{:.1f}")]
    table = ["| property | nnpot | EMT (reference) | difference |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        a, b = getattr(ours, key), getattr(reference, key)
        table.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {100 * (a / b - 1):+.2f} % |")

    training_card = (HERE / "run" / "model_card.md").read_text() if (HERE / "run").exists() else ""
    training_card = training_card.replace(str(HERE.parents[1]) + "/", "")  # paths from the repo root
    text = [
        "# Cu — SchNet fitted to EMT",
        "",
        "A ready-to-use fcc Cu potential: `NNPCalculator(\"potentials/cu/model.pt\")`. The reference",
        "is ASE's EMT calculator (effective-medium theory, **not DFT**): the potential is as good as",
        "EMT is for Cu, and its purpose is to be a reproducible, fully checked example. Rebuild it",
        "with `python potentials/cu/build.py` (the data are generated, seeded, by",
        "`nnpot.demo.reference_data`: bulk MD 300–1400 K, liquid, isotropic and random strains, a",
        "vacancy, a (111) slab).",
        "",
        "## Test errors",
        "",
        "The generated test set is every 5th frame of each configuration type, held out of training;",
        "the independent set was generated separately (other seeds and recipe, 54–108 atoms).",
        "",
        metrics_table(results),
        "",
        "## Crystal properties against EMT (float64; E(V) Birch–Murnaghan fit; C_ij from ±0.5 % strains)",
        "",
        *table,
        "",
        f"NVE, 256 atoms, 300 K, 1 fs, 2 ps, float64, skin 0.5 Å: energy drift {drift:+.4f} "
        f"meV/atom/ps ({ns_day:.2f} ns/day on this machine).",
        "",
        "Plots: `parity_test.png`, `learning_curves.png`. Training config: `config.yaml`.",
        "",
    ]
    if training_card:
        text += ["---", "", "## Training run (as written by `nnpot train`)", "",
                 training_card.split("\n", 1)[1]]
    (HERE / "model_card.md").write_text("\n".join(text))
    print("\n".join(text[:40]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card-only", action="store_true")
    args = parser.parse_args()
    if not args.card_only:
        build_data()
        train()
    elif not (HERE / "data" / "cu_emt_test.extxyz").exists():
        build_data()
    card()
    return 0


if __name__ == "__main__":
    sys.exit(main())
