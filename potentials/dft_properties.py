"""Physical properties of an mlearn potential against the DFT training data itself, for the
model cards: lattice constant, the energy–volume curve, C11/C12/C44 fitted to the data's own
``Elastic`` frames (DFT) beside the same fit to the potential on the same frames, and the
the potential's relaxed vacancy formation energy.

    python potentials/dft_properties.py potentials/mlearn-si-hdnnp/model.pt \\
        ../shared/data/mlearn_Si_train.extxyz
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from ase.eos import EquationOfState
from ase.io import read

import nnpot
from nnpot.md.properties import cubic_elastic_constants_from_frames, lagrangian_strain

MAX_STRAIN = 0.05  # the linear-elastic window of the Elastic frames used for the fit


def elastic_frames(frames: list) -> tuple[list, np.ndarray]:
    """The Elastic frames of the data's main supercell and their reference (unstrained) cell:
    the edge length most of their cell vectors share (each frame strains one component)."""
    elastic = [f for f in frames if f.info.get("config_type") == "Elastic"]
    n_atoms = Counter(len(f) for f in elastic).most_common(1)[0][0]
    elastic = [f for f in elastic if len(f) == n_atoms]
    lengths = np.round(np.concatenate([f.cell.lengths() for f in elastic]), 3)
    values, counts = np.unique(lengths, return_counts=True)
    return elastic, np.eye(3) * values[np.argmax(counts)]


def energies_and_stresses(frames: list, calculator) -> tuple[np.ndarray, np.ndarray]:
    energies, stresses = [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calculator
        energies.append(atoms.get_potential_energy())
        stresses.append(atoms.get_stress())
    return np.array(energies), np.array(stresses)


def elastic_comparison(frames: list, calculator) -> dict:
    """C11, C12, C44 (GPa) of the DFT labels and of ``calculator`` on the same frames."""
    elastic, reference = elastic_frames(frames)
    strains = np.array([lagrangian_strain(f.cell.array, reference) for f in elastic])
    keep = np.abs(strains).max(axis=1) <= MAX_STRAIN
    chosen = [f for f, k in zip(elastic, keep) if k]
    volume = float(np.linalg.det(reference))
    dft = cubic_elastic_constants_from_frames(
        strains[keep], np.array([f.get_potential_energy() for f in chosen]),
        np.array([f.get_stress() for f in chosen]), volume)
    energies, stresses = energies_and_stresses(chosen, calculator)
    model = cubic_elastic_constants_from_frames(strains[keep], energies, stresses, volume)
    return {"dft": dft, "potential": model, "reference_cell_A": float(reference[0, 0]),
            "atoms": len(elastic[0])}


def lattice_and_eos(frames: list, calculator, conventional_atoms: int) -> dict:
    """The potential's E(V) of the Elastic reference cell scaled isotropically (±6 %), its
    Birch–Murnaghan minimum as a lattice constant, beside the DFT reference cell's."""
    elastic, reference = elastic_frames(frames)
    repeats = round((len(elastic[0]) / conventional_atoms) ** (1 / 3))
    template = elastic[0].copy()
    template.set_cell(reference, scale_atoms=True)
    volumes, energies = [], []
    for scale in np.linspace(0.94, 1.06, 13):
        atoms = template.copy()
        atoms.set_cell(reference * scale, scale_atoms=True)
        atoms.calc = calculator
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    v0, e0, _ = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return {"dft_lattice_A": float(reference[0, 0] / repeats),
            "potential_lattice_A": float((v0 * conventional_atoms) ** (1 / 3)),
            "potential_energy_per_atom_eV": float(e0),
            "curve": {"volume_A3_per_atom": volumes, "energy_eV_per_atom": energies}}


VACANCY_MIN_ATOMS = 54  # a vacancy in a smaller cell mostly meets its own periodic images


def vacancy_formation(frames: list, calculator, lattice: float,
                      conventional_atoms: int) -> tuple[float, int]:
    """The potential's relaxed vacancy formation energy (eV) in the Elastic frames' supercell
    scaled to its own lattice constant, repeated to at least VACANCY_MIN_ATOMS atoms:
    E(N−1, relaxed) − (N−1)/N · E(N); and N. The mlearn data have no DFT counterpart: their
    Vacancy frames are AIMD snapshots of varied volume (Si: 17.9–18.9 Å³/atom against 20.4 for
    the crystal), not relaxed defects."""
    elastic, reference = elastic_frames(frames)
    repeats = round((len(elastic[0]) / conventional_atoms) ** (1 / 3))
    crystal = elastic[0].copy()
    crystal.set_cell(reference, scale_atoms=True)
    crystal.set_cell(np.eye(3) * lattice * repeats, scale_atoms=True)
    crystal = crystal.repeat(math.ceil((VACANCY_MIN_ATOMS / len(crystal)) ** (1 / 3) - 1e-9))
    crystal.calc = calculator
    bulk_energy = crystal.get_potential_energy()
    vacancy = crystal.copy()
    del vacancy[0]
    result = nnpot.relax(vacancy, calculator, fmax=0.005, steps=500, log=None)
    n = len(crystal)
    return float(result.energy - (n - 1) / n * bulk_energy), n


def plot_energy_volume(frames: list, result: dict, path: Path, title: str) -> None:
    """PNG: the potential's E(V) curve (isotropic scaling) and the DFT energies of the Elastic
    frames at their volumes (each strained one way, so they lie on or above the curve)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    elastic, _ = elastic_frames(frames)
    curve = result["lattice"]["curve"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(curve["volume_A3_per_atom"], curve["energy_eV_per_atom"], "-", label="potential, isotropic")
    ax.plot([f.get_volume() / len(f) for f in elastic],
            [f.get_potential_energy() / len(f) for f in elastic], "o", ms=3,
            label="DFT Elastic frames")
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("energy (eV/atom)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def properties(model: Path, train_file: Path, conventional_atoms: int) -> dict:
    frames = read(train_file, ":")
    calculator = nnpot.NNPCalculator(model, dtype="float64")
    lattice = lattice_and_eos(frames, calculator, conventional_atoms)
    vacancy, atoms = vacancy_formation(frames, calculator, lattice["potential_lattice_A"],
                                       conventional_atoms)
    return {"elastic": elastic_comparison(frames, calculator), "lattice": lattice,
            "vacancy_eV": vacancy, "vacancy_cell_atoms": atoms}


def properties_section(result: dict) -> list[str]:
    """The model card's section (markdown lines) for ``properties``' result."""
    el, lat = result["elastic"], result["lattice"]
    dft, pot = el["dft"], el["potential"]

    def gpa(value: float) -> str:
        return "n/a" if np.isnan(value) else f"{value:.1f}"

    lines = [
        "## Properties against the DFT data",
        "",
        f"Fitted to the training set's own `Elastic` frames ({dft['frames']} of "
        f"{el['atoms']} atoms with |strain| ≤ {MAX_STRAIN}, reference cell "
        f"{el['reference_cell_A']:.3f} Å): C11 and C12 from the normal stresses, C44 from the "
        f"energies; the same fit to the potential on the same frames.",
        "",
        "| | lattice constant (Å) | C11 (GPa) | C12 (GPa) | C44 (GPa) |",
        "|---|---|---|---|---|",
        f"| DFT (PBE) | {lat['dft_lattice_A']:.4f} (reference cell) | {gpa(dft['c11'])} | "
        f"{gpa(dft['c12'])} | {gpa(dft['c44'])} |",
        f"| potential | {lat['potential_lattice_A']:.4f} (E(V) minimum) | {gpa(pot['c11'])} | "
        f"{gpa(pot['c12'])} | {gpa(pot['c44'])} |",
        "",
    ]
    lines += [
        f"Vacancy formation energy of the potential (relaxed, {result['vacancy_cell_atoms']}-atom "
        f"cell at its own "
        f"lattice constant): {result['vacancy_eV']:.2f} eV. The data hold no DFT value to set "
        f"beside it: their Vacancy frames are AIMD snapshots at varied volumes, not relaxed "
        f"defects.",
        ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("train_file", type=Path)
    parser.add_argument("--conventional-atoms", type=int, default=8,
                        help="atoms in the conventional cubic cell (diamond 8, bcc 2)")
    args = parser.parse_args()
    result = properties(args.model, args.train_file, args.conventional_atoms)
    print("\n".join(properties_section(result)))
    print(json.dumps({k: v for k, v in result.items() if k != "lattice"}, indent=1))


if __name__ == "__main__":
    main()
