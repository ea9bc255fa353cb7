"""The main job (``make demo`` / ``nnpot demo``) and the EMT copper data it generates."""

from .workflow import DEMO_EPOCHS, run_demo

__all__ = ["DEMO_EPOCHS", "run_demo"]
