"""nnpot: machine-learning interatomic potentials with exact forces and stress, for ASE.

    from nnpot import NNPCalculator, Potential, load
    atoms.calc = NNPCalculator("potentials/cu/model.pt")
"""

from .calculator import NNPCalculator
from .graph import AtomicGraph, batch_graphs
from .neighbors import neighbor_list
from .potential import Potential, load
from .version import __version__

__all__ = ["NNPCalculator", "AtomicGraph", "batch_graphs", "neighbor_list", "Potential", "load",
           "__version__"]
