"""Active learning (``nnpot learn``): train a committee, explore with MD, select the structures
the committee disagrees on, label them with a reference calculator, merge, repeat."""

from .loop import (
                   ActiveLearning,
                   LearnConfig,
                   learn,
                   learn_config_from_dict,
                   load_learn_config,
                   plot_learning_curve,
                   read_extxyz,
)

__all__ = ["ActiveLearning", "LearnConfig", "learn", "learn_config_from_dict", "load_learn_config",
           "plot_learning_curve", "read_extxyz"]
