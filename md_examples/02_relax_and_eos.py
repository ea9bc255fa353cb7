"""Relax a strained Cu cell, then draw the potential's E–V curve against the reference (EMT).

Run: python md_examples/02_relax_and_eos.py  (under a minute)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

import nnpot
from nnpot.md.properties import equation_of_state

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("md_examples_output")
OUT.mkdir(exist_ok=True)
model = ROOT / "potentials" / "cu" / "model.pt"

# 1. A cell strained by 3 % relaxes back, positions and cell together (FrechetCellFilter).
strained = bulk("Cu", "fcc", a=3.59 * 1.03, cubic=True).repeat((2, 2, 2))
result = nnpot.relax(strained, model, cell=True, fmax=0.005, dtype="float64", log=None)
print(result.summary())
print(f"relaxed lattice constant: {np.cbrt(result.atoms.get_volume() / 8):.4f} Å")

# 2. Energy per atom against volume per atom, nnpot and EMT on the same grid.
calculators = {"nnpot": nnpot.NNPCalculator(model, dtype="float64"), "EMT (reference)": EMT()}
scales = np.linspace(0.94, 1.06, 25)
for name, calc in calculators.items():
    volumes, energies = [], []
    for s in scales:
        atoms = bulk("Cu", "fcc", a=3.59 * s, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume() / 4)
        energies.append(atoms.get_potential_energy() / 4)
    a0, _, b = equation_of_state(calc)
    plt.plot(volumes, energies, "o-" if name == "nnpot" else "k--", ms=3,
             label=f"{name}: a = {a0:.3f} Å, B = {b:.0f} GPa")
plt.xlabel("volume (Å³/atom)")
plt.ylabel("energy (eV/atom)")
plt.legend()
plt.grid(alpha=0.3)
plt.savefig(OUT / "eos.png", dpi=110)
print(f"plot: {OUT / 'eos.png'}")
