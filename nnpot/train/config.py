"""Training configuration: a YAML file checked against typed dataclasses.

An unknown key, a value of the wrong type or a data file that does not exist is a
``ConfigError`` that names the key (``training.lr``) or the file. The README documents every
key with one complete example; ``TrainConfig`` here is the reference.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..core.devices import resolve_device
from ..core.neighbors import BACKENDS
from ..models import MODELS, HyperParameterError
from ..models.zbl import PAIR_REPULSIONS
from .config_files import ConfigError, existing_file, folder, read_yaml, resolve_path


@dataclass
class ModelConfig:
    type: str = "SchNet"                      # a name in nnpot.models.MODELS
    cutoff: float = 5.0                       # Å
    params: dict = field(default_factory=dict)  # the model's own hyper-parameters
    dtype: str = "float32"                    # float32 | float64
    committee: int = 1                        # ≥ 2: that many members (seeds seed, seed+1, …)
                                              # trained together, saved as one Committee file
    bootstrap: bool = False                   # committee: member k fits a resample (with
                                              # replacement, seed + k) of the training frames
    pair_repulsion: str | None = None      # zbl: ZBL repulsion under the network, for
                                              # pairs closer than their covalent-radius sum
    pair_repulsion_radius: float | None = None  # Å: switch the repulsion off at this distance
                                              # for every pair instead of at the covalent-
                                              # radius sums
    init_from: str | None = None           # a model file to start from (fine-tuning, or a
                                              # longer run): its weights, E0, scale, statistics
    snapshot_committee: bool = False          # with init_from: save a committee of the model
                                              # started from and this run's (a snapshot
                                              # ensemble of two training stages: their mean,
                                              # and their spread as an uncertainty)
    committee_with: list = field(default_factory=list)  # model files (models or committees)
                                              # whose members join this run's in best.pt:
                                              # members trained in separate runs, one file


@dataclass
class KeysConfig:
    """Names of the labels in the extxyz files (info, arrays or the stored calculator results)."""
    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"                    # used when a frame has no stress: σ = −W/V
    group: str = "config_type"                # info key naming each frame's kind (for stratify)


@dataclass
class DataConfig:
    train: str = ""                           # extxyz file (required)
    validation: str | None = None          # separate validation file, or
    validation_fraction: float = 0.1          # a seeded random share of the training file
    split_seed: int | None = None          # seed of that share and of `nnpot cv`'s folds
                                              # (default: the run's seed): runs with different
                                              # seeds, one validation set (one set of folds)
    stratify: bool = False                    # take that share from every group (keys.group)
    validation_frames: list | None = None  # or these frames of the training file (0-based
                                              # indices; `nnpot cv` sets them per fold)
    group_key: str | None = None           # nnpot cv: an info key; frames that share its
                                              # value (one trajectory snapshot) share a fold
    test: str | None = None                # evaluated once at the end (model card)
    keys: KeysConfig = field(default_factory=KeysConfig)
    e0: str | dict = "fit"              # fit (least squares) | isolated_atoms | {El: eV}
    cache_dir: str | None = None           # graph cache (HDF5); default ~/.cache/nnpot/graphs
    neighbor_backend: str = "auto"            # auto | vesin | matscipy | torch (same pairs)


HUBER_DELTA = 0.01  # the Huber δ of a loss term that the config does not name


@dataclass
class LossConfig:
    energy: float = 1.0                       # weight of (ΔE / N)², (eV/atom)²
    forces: float = 10.0                      # weight of ΔF², (eV/Å)²
    stress: float = 100.0                     # weight of Δσ², (eV/Å³)²
    type: str = "mse"                         # mse | huber
    huber_delta: float | dict = HUBER_DELTA  # for huber: one δ in the units of each
                                              # term, or {energy: eV/atom, forces: eV/Å,
                                              # stress: eV/Å³} (terms not named: HUBER_DELTA)
    final_energy: float | None = None      # energy weight for the final stage (None: no stage)
    final_fraction: float = 0.25              # share of the budget (epochs or time) in that stage
    group_weights: dict = field(default_factory=dict)  # {group: w} or {group: {energy: w, …}}:
                                              # multiply the loss terms of that group's frames
                                              # (data.keys.group, e.g. config_type)


@dataclass
class SchedulerConfig:
    type: str = "plateau"                     # plateau | cosine | none
    factor: float = 0.5                       # plateau: lr ← factor·lr
    patience: int = 10                        # plateau: epochs without improvement
    warmup_epochs: int = 5                    # cosine: linear warm-up
    min_lr: float = 1e-6                      # cosine: the lr it anneals to


@dataclass
class TrainingConfig:
    batch_size: int = 4                       # structures per optimiser step
    max_epochs: int = 1000                    # epoch budget (progress of schedule and stages)
    max_time_min: float | None = None      # stop after this wall time (minutes)
    lr: float = 1e-3                          # Adam(W) learning rate
    weight_decay: float = 0.0                 # AdamW decoupled weight decay
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    grad_clip: float | None = 10.0         # max global gradient norm
    ema_decay: float | None = 0.99         # None: no EMA
    early_stopping_patience: int | None = 100  # epochs without a better validation loss
    keep_epoch: str = "best"                  # the model saved: best (lowest validation loss)
                                              # or last (the latest epoch; for a cosine schedule
                                              # that anneals to its end, where the loss ranks
                                              # by one term that the other barely moves)
    checkpoint_every: int = 5                 # epochs
    threads: int | None = None             # torch threads per process
    progress: bool = True                     # progress bar


@dataclass
class TrainConfig:
    output: str = "runs/train"                # run directory (relative: to the config file)
    seed: int = 0                             # seeds weights, split and epoch order
    device: str = "cpu"                       # cpu, cuda, cuda:1, …
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -------------------------------------------------------------------------------------------
def _build(cls, values: Any, where: str):
    """Instantiate dataclass ``cls`` from a mapping, checking keys and types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key {_join(where, unknown[0])!r} in the config "
                          f"(allowed in {where or 'the top level'}: {sorted(names)})")
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in values.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (Union, types.UnionType):  # Optional[X] and X | None
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
        raise ConfigError(f"{where} must be {names}, got {value!r}")
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string: take it as the number it spells.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if value != value:
            raise ConfigError(f"{where} must be a number, got NaN")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return value
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = (typing.get_args(hint) or [None])[0]
        return [v if item is None else _coerce(item, v, f"{where}[{k}]")
                for k, v in enumerate(value)]
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover - schema bug


def require(condition: bool, message: str) -> None:
    """A ConfigError with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def positive(key: str, value: float | int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    require(value is not None and value > 0, f"{key} must be > 0{' (or null)' if optional else ''}, "
            f"got {value}")


def non_negative(key: str, value: float | int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    require(value is not None and value >= 0, f"{key} must be ≥ 0, got {value}")


def _check_values(config: TrainConfig) -> None:
    """Every value in range, checked before any work starts; messages name the key path."""
    try:
        resolve_device(config.device)
    except ValueError as error:
        raise ConfigError(f"device: {error}") from None
    _check_model(config.model)
    _check_data(config.data)
    _check_training(config.training)


def _check_model(m: ModelConfig) -> None:
    require(m.type in MODELS, f"model.type {m.type!r} is not a known model (known: {sorted(MODELS)})")
    require(0 < m.cutoff < float("inf"), f"model.cutoff must be > 0 Å, got {m.cutoff}")
    require(m.dtype in ("float32", "float64"),
            f"model.dtype must be float32 or float64, got {m.dtype!r}")
    require(isinstance(m.committee, int) and not isinstance(m.committee, bool)
            and m.committee >= 1, f"model.committee must be a whole number ≥ 1 (members), "
                                  f"got {m.committee!r}")
    require(isinstance(m.bootstrap, bool), f"model.bootstrap must be true or false, got "
                                           f"{m.bootstrap!r}")
    require(not m.bootstrap or m.committee >= 2,
            "model.bootstrap resamples the training frames per committee member: it needs "
            f"model.committee ≥ 2, got {m.committee}")
    require(m.pair_repulsion is None or m.pair_repulsion in PAIR_REPULSIONS,
            f"model.pair_repulsion must be null or one of {list(PAIR_REPULSIONS)}, got "
            f"{m.pair_repulsion!r}")
    require(m.pair_repulsion_radius is None or (
        isinstance(m.pair_repulsion_radius, (int, float))
        and not isinstance(m.pair_repulsion_radius, bool) and 0 < m.pair_repulsion_radius
        < float("inf")), f"model.pair_repulsion_radius must be a distance > 0 in Å, got "
                         f"{m.pair_repulsion_radius!r}")
    require(m.pair_repulsion_radius is None or m.pair_repulsion is not None,
            "model.pair_repulsion_radius is where the pair repulsion is switched off: it needs "
            "model.pair_repulsion")
    require(isinstance(m.snapshot_committee, bool), f"model.snapshot_committee must be true or "
                                                    f"false, got {m.snapshot_committee!r}")
    require(not m.snapshot_committee or m.init_from is not None,
            "model.snapshot_committee saves a committee of the model.init_from model and this "
            "run's: it needs model.init_from")
    require(isinstance(m.committee_with, list)
            and all(isinstance(p, str) and p for p in m.committee_with),
            f"model.committee_with must be a list of model files, got {m.committee_with!r}")
    require(m.init_from is None or m.committee == 1,
            "model.init_from starts one model from a file: it needs model.committee: 1 (members "
            f"that start from the same weights would not differ), got {m.committee}")
    try:  # a degenerate model (0 features, a string for a width) fails here, before any work
        MODELS[m.type].check_hyperparameters(m.cutoff, **m.params)
    except HyperParameterError as error:
        raise ConfigError(f"model.params.{error.name}: {error}") from None
    except TypeError as error:
        raise ConfigError(f"model.params do not fit {m.type}: {error}") from None


def _check_data(d: DataConfig) -> None:
    require(bool(d.train), "data.train (the training extxyz file) is required")
    require(d.validation_frames is None or (
        isinstance(d.validation_frames, list) and d.validation_frames
        and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0
                for k in d.validation_frames)),
        f"data.validation_frames must be a non-empty list of frame indices ≥ 0, got "
        f"{d.validation_frames!r}")
    require(d.validation_frames is None or not d.validation,
            "data.validation_frames and data.validation both name validation data: keep one")
    require(d.group_key is None or (isinstance(d.group_key, str) and d.group_key),
            f"data.group_key must be the name of an info key, got {d.group_key!r}")
    require(0.0 <= d.validation_fraction < 1.0,
            f"data.validation_fraction must be in [0, 1), got {d.validation_fraction}")
    require(d.neighbor_backend in BACKENDS,
            f"data.neighbor_backend must be one of {BACKENDS}, got {d.neighbor_backend!r}")
    if isinstance(d.e0, str):
        require(d.e0 in ("fit", "isolated_atoms"),
                f"data.e0 must be 'fit', 'isolated_atoms' or a mapping element → eV, got {d.e0!r}")
    else:
        for element, value in d.e0.items():
            require(isinstance(value, (int, float)) and not isinstance(value, bool),
                    f"data.e0.{element} must be a number of eV, got {value!r}")


def _check_training(t: TrainingConfig) -> None:
    require(t.batch_size >= 1, f"training.batch_size must be ≥ 1, got {t.batch_size}")
    require(t.max_epochs >= 1, f"training.max_epochs must be ≥ 1, got {t.max_epochs}")
    positive("training.max_time_min", t.max_time_min, optional=True)
    positive("training.lr", t.lr)
    non_negative("training.weight_decay", t.weight_decay)
    positive("training.grad_clip", t.grad_clip, optional=True)
    positive("training.early_stopping_patience", t.early_stopping_patience, optional=True)
    require(t.keep_epoch in ("best", "last"),
            f"training.keep_epoch must be best or last, got {t.keep_epoch!r}")
    require(t.checkpoint_every >= 1, f"training.checkpoint_every must be ≥ 1, got {t.checkpoint_every}")
    positive("training.threads", t.threads, optional=True)
    require(t.ema_decay is None or 0.0 < t.ema_decay < 1.0,
            f"training.ema_decay must be in (0, 1) (or null), got {t.ema_decay}")
    _check_scheduler(t.scheduler, t.lr)
    _check_loss(t.loss)


def _check_scheduler(s: SchedulerConfig, lr: float) -> None:
    require(s.type in ("plateau", "cosine", "none"),
            f"training.scheduler.type must be plateau, cosine or none, got {s.type!r}")
    require(0.0 < s.factor < 1.0, f"training.scheduler.factor must be in (0, 1), got {s.factor}")
    non_negative("training.scheduler.patience", s.patience)
    non_negative("training.scheduler.warmup_epochs", s.warmup_epochs)
    non_negative("training.scheduler.min_lr", s.min_lr)
    require(s.min_lr <= lr, f"training.scheduler.min_lr ({s.min_lr}) must not exceed "
                            f"training.lr ({lr})")


def _check_loss(loss: LossConfig) -> None:
    for name in ("energy", "forces", "stress"):
        non_negative(f"training.loss.{name}", getattr(loss, name))
    require(loss.energy + loss.forces + loss.stress > 0,
            "training.loss: at least one of energy, forces, stress must have a weight > 0")
    non_negative("training.loss.final_energy", loss.final_energy, optional=True)
    require(loss.type in ("mse", "huber"), f"training.loss.type must be mse or huber, got {loss.type!r}")
    for key, delta in _per_term("training.loss.huber_delta", loss.huber_delta):
        require(_is_number(delta), f"{key} must be a number, got {delta!r}")
        positive(key, delta)
    for group, value in loss.group_weights.items():
        for key, weight in _per_term(f"training.loss.group_weights.{group}", value):
            require(_is_number(weight) and weight >= 0,
                    f"{key} must be a number ≥ 0, got {weight!r}")
    require(0.0 < loss.final_fraction <= 1.0,
            f"training.loss.final_fraction must be in (0, 1], got {loss.final_fraction}")


LOSS_TERMS = ("energy", "forces", "stress")


def _per_term(key: str, value):
    """(key, number) of a loss setting given as one number or as {term: number}: the
    term's key is ``key.term``; a term that is not a loss term is a ConfigError."""
    if not isinstance(value, dict):
        return [(key, value)]
    for term in value:
        if term not in LOSS_TERMS:
            raise ConfigError(f"{key}.{term}: unknown term {term!r} (energy, forces or stress)")
    return [(f"{key}.{term}", number) for term, number in value.items()]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def config_from_dict(values: dict, base_dir: str | Path = ".") -> TrainConfig:
    """Checked config from a mapping; relative paths (data, output) are taken from ``base_dir``."""
    config = _build(TrainConfig, values, "")
    base = Path(base_dir)
    model_class = MODELS.get(config.model.type)  # an unknown type: _check_values says so
    for name in model_class.path_hyperparameters if model_class else ():
        value = config.model.params.get(name)
        if isinstance(value, str):  # a file (an n2p2 input.nn), named relative to the config
            config.model.params[name] = str(resolve_path(value, base))
    _check_values(config)
    config.output = folder("output", config.output, base)
    if config.model.init_from:
        config.model.init_from = existing_file("model.init_from", config.model.init_from, base)
    config.model.committee_with = [existing_file("model.committee_with", name, base)
                                   for name in config.model.committee_with]
    if config.data.cache_dir:
        config.data.cache_dir = folder("data.cache_dir", config.data.cache_dir, base)
    for name in ("train", "validation", "test"):
        value = getattr(config.data, name)
        if value:
            setattr(config.data, name, existing_file(f"data.{name}", value, base))
    return config


def load_config(path: str | Path) -> TrainConfig:
    """Read and check a YAML config; its relative paths are taken from the file's folder."""
    return config_from_dict(read_yaml(path), base_dir=Path(path).parent)
