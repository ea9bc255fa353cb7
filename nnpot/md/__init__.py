"""Molecular dynamics and relaxation with an nnpot potential (``nnpot md``, ``nnpot relax``):
``dynamics`` (``md``: ASE integrators for every ensemble), ``observer`` (what a run records and
checks each step), ``relaxation`` (``relax``), ``inputs`` (the structures and potentials they
accept), ``trajectory`` (extxyz/HDF5 writers), ``properties`` (equation of state, radial
distribution) and ``plots``."""

from .dynamics import MDResult, md
from .observer import ExtrapolationError, MDInstabilityError
from .relaxation import RelaxResult, relax

__all__ = ["ExtrapolationError", "MDInstabilityError", "MDResult", "RelaxResult", "md", "relax"]
