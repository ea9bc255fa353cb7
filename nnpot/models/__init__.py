"""Models: each maps species and pair vectors to per-atom energies (see ``base.AtomisticModel``).

``MODELS`` names every model class that a model file may ask for; a new model registers here.
"""

from .base import AtomisticModel, HyperParameterError, StagedMessagePassing
from .cgcnn import CGCNN
from .dimenet import DimeNetPP
from .hdnnp.model import HDNNP
from .mace.model import MACE
from .mpnn import MPNN
from .nequip.model import NequIP
from .schnet import SchNet

MODELS: dict[str, type[AtomisticModel]] = {"SchNet": SchNet, "HDNNP": HDNNP, "NequIP": NequIP,
                                           "MACE": MACE, "CGCNN": CGCNN, "MPNN": MPNN,
                                           "DimeNetPP": DimeNetPP}

__all__ = ["AtomisticModel", "HyperParameterError", "StagedMessagePassing", "CGCNN", "DimeNetPP",
           "HDNNP", "MACE", "MPNN", "NequIP", "SchNet", "MODELS"]
