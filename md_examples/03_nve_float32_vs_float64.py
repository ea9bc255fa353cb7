"""Energy conservation in NVE: float32 against float64.

The same 256-atom Cu crystal at 300 K, 1 fs steps, 4 ps, once per precision. Forces are exact
derivatives of the energy in both, so the total energy is conserved up to the integrator's
fluctuation; float32 adds rounding noise. Prints the drift (meV/atom/ps) and plots E_total(t).
Run: python md_examples/03_nve_float32_vs_float64.py  (a few minutes)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from ase.build import bulk

import nnpot

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("md_examples_output")
OUT.mkdir(exist_ok=True)

for dtype in ("float32", "float64"):
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((4, 4, 4))
    calc = nnpot.NNPCalculator(ROOT / "potentials" / "cu" / "model.pt", dtype=dtype, skin=0.5)
    result = nnpot.md(atoms, calc, ensemble="nve", temperature=300, timestep=1.0, steps=4000,
                      interval=10, seed=0, progress=False)
    etot = result.log["etot_eV"] / len(atoms) * 1000
    plt.plot(result.log["time_ps"], etot - etot[0], label=f"{dtype}: drift "
             f"{result.drift_mev_per_atom_ps:+.4f} meV/atom/ps")
    print(f"{dtype}: drift {result.drift_mev_per_atom_ps:+.4f} meV/atom/ps, "
          f"{result.ns_per_day:.2f} ns/day")
plt.xlabel("time (ps)")
plt.ylabel("E_total − E_total(0) (meV/atom)")
plt.legend()
plt.grid(alpha=0.3)
plt.savefig(OUT / "nve_precision.png", dpi=110)
print(f"plot: {OUT / 'nve_precision.png'}")
