"""Fitting potentials to extxyz data (``nnpot train``); see ``trainer`` for the run layout."""

from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .frames import DataError
from .trainer import fit

__all__ = ["fit", "TrainConfig", "ConfigError", "DataError", "config_from_dict", "load_config"]
