"""Behler–Parrinello high-dimensional neural network potential: atom-centred symmetry
functions (``symmetry_functions``, their fused kernels in ``symmetry_kernels``), one network
per element (``model``), and n2p2 compatibility (``n2p2``)."""

from .model import HDNNP

__all__ = ["HDNNP"]
