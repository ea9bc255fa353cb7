"""MACE (Batatia et al. 2022): NequIP's convolution gives the atomic basis, a symmetric
contraction (``symmetric_contraction``) its many-body products."""

from .model import MACE

__all__ = ["MACE"]
