"""nnpot: machine-learning interatomic potentials with exact forces and stress, for ASE.

    from nnpot import NNPCalculator, Potential, load
    atoms.calc = NNPCalculator("potentials/cu/model.pt")
    nnpot.md(atoms, "potentials/cu/model.pt", ensemble="nvt", temperature=600, steps=1000)
"""

from .calculator import NNPCalculator
from .committee import Committee
from .drivers import md, relax
from .graph import AtomicGraph, batch_graphs
from .neighbors import neighbor_list
from .potential import Potential, load
from .version import __version__

__all__ = ["NNPCalculator", "Committee", "AtomicGraph", "batch_graphs", "neighbor_list", "Potential", "load",
           "md", "relax", "__version__"]
