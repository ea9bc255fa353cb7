"""Molecular dynamics and relaxation with any ASE calculator: the drivers behind ``nnpot md``
and ``nnpot relax`` (``md``, ``relax``), their trajectories, properties (equation of state,
radial distribution) and plots."""

from .drivers import MDInstabilityError, MDResult, md, relax

__all__ = ["MDInstabilityError", "MDResult", "md", "relax"]
