"""Active learning (``nnpot learn``): train a committee, explore with MD, select the structures
the committee disagrees on, label them with a reference calculator, merge, repeat.

``config`` (the learn config), ``selection`` (distances, fingerprints, farthest-point
sampling), ``labelling`` (the reference calculator, durable appends), ``loop`` (the phases and
their state), ``report`` (the learning curve).
"""

from .config import LearnConfig, learn_config_from_dict, load_learn_config
from .labelling import read_extxyz
from .loop import ActiveLearning, learn
from .report import plot_learning_curve

__all__ = ["ActiveLearning", "LearnConfig", "learn", "learn_config_from_dict", "load_learn_config",
           "plot_learning_curve", "read_extxyz"]
