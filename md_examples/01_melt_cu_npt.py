"""Melt fcc Cu in NPT and watch the volume jump.

Heats 256 atoms of Cu at zero pressure (isotropic MTK barostat) in steps of 150 K, averages the
volume per atom at each temperature and plots V(T). The crystal melts — usually superheated a
little above the potential's melting point, as a small perfect crystal does — and the volume
jumps by a few per cent.   Run: python md_examples/01_melt_cu_npt.py  (about 10 min on 2 cores)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.build import bulk

import nnpot

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("md_examples_output")
OUT.mkdir(exist_ok=True)

calc = nnpot.NNPCalculator(ROOT / "potentials" / "cu" / "model.pt", skin=0.5)
atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((4, 4, 4))

temperatures = np.arange(900, 2101, 150)
volumes = []
for k, temperature in enumerate(temperatures):
    # Each stage continues from the last one (same atoms, velocities kept after the first).
    result = nnpot.md(atoms, calc, ensemble="npt", temperature=temperature, pressure=0.0,
                      timestep=2.0, steps=1500, interval=10, seed=k, init_velocities=(k == 0),
                      progress=False)
    second_half = result.log["volume_A3"][len(result.log["volume_A3"]) // 2:]
    volumes.append(np.mean(second_half) / len(atoms))
    print(f"T = {temperature:5.0f} K   V = {volumes[-1]:.3f} Å³/atom   "
          f"mean T = {result.mean_temperature:.0f} K")

jump = np.argmax(np.diff(volumes))
print(f"largest volume jump between {temperatures[jump]} K and {temperatures[jump + 1]} K: "
      f"{100 * (volumes[jump + 1] / volumes[jump] - 1):.1f} %")
plt.plot(temperatures, volumes, "o-")
plt.xlabel("temperature (K)")
plt.ylabel("volume (Å³/atom)")
plt.title("Cu heated at 0 GPa (NPT): melting shows as a volume jump")
plt.grid(alpha=0.3)
plt.savefig(OUT / "melt_volume.png", dpi=110)
print(f"plot: {OUT / 'melt_volume.png'}")
