"""nnpot: machine-learning interatomic potentials with exact forces and stress, for ASE.

    from nnpot import NNPCalculator, Potential, load
    atoms.calc = NNPCalculator("potentials/cu/model.pt")
    nnpot.md(atoms, "potentials/cu/model.pt", ensemble="nvt", temperature=600, steps=1000)
"""

import os as _os

# Transparent huge pages for PyTorch's CPU buffers of 2 MB and more: their page faults are
# 512× fewer (nnpot.core.allocator). PyTorch reads this once, at its first allocation, so it is
# set before torch is imported; an explicit THP_MEM_ALLOC_ENABLE=0 is kept.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .core.calculator import NNPCalculator
from .core.committee import Committee
from .core.graph import AtomicGraph, batch_graphs
from .core.model_file import load
from .core.neighbors import neighbor_list
from .core.potential import Potential
from .md import md, relax  # the functions: they shadow the subpackage's name on nnpot
from .version import __version__

__all__ = ["NNPCalculator", "Committee", "AtomicGraph", "batch_graphs", "neighbor_list", "Potential", "load",
           "md", "relax", "__version__"]
