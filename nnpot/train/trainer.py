"""Fit a Potential to extxyz data: ``nnpot.train.fit(config)`` and ``nnpot train config.yaml``.

A run directory holds: ``config.yaml`` (as resolved), ``checkpoint.pt`` (everything needed to
resume, written atomically every ``checkpoint_every`` epochs and at the end), ``best.pt`` (the
EMA weights of the best validation epoch: a model file ``NNPCalculator`` loads), ``log.csv``,
``learning_curves.png``, ``parity_validation.png`` (and ``parity_test.png``), ``metrics.json``
and ``model_card.md``.

Resuming restores model, optimiser, scheduler, EMA, RNG state, epoch and the best model so far
(its weights travel in the checkpoint, so ``best.pt`` is rewritten from them and always belongs
to the resumed history); the order of the training frames in an epoch depends only on
(seed, epoch), so a run limited by epochs, killed and resumed, ends with the same weights as one
never interrupted. With ``max_time_min`` the budget is wall-clock time: the time of the epochs
kept in the checkpoint counts, epochs lost to a kill are run again and not counted twice, but
where the run stops (and the cosine schedule, which follows the time spent) depends on how fast
the epochs run, so such a run is resumed consistently, not bitwise. Resume refuses a config that
would change the data split, the epoch order or the optimisation (naming the key); only the
budget and run-time keys may change.

Under ``torchrun`` the run is data-parallel (DistributedDataParallel, gloo on CPU, nccl on GPU):
every process trains on its share of each epoch's batches; only rank 0 writes files. A failure on
one rank (a data error while rank 0 builds the cache, a non-finite loss) stops every rank.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..core.allocator import keep_buffers_in_heap
from ..core.committee import Committee
from ..core.devices import resolve_device
from ..core.files import atomic_torch_save, atomic_write_text
from ..core.model_file import load
from ..core.potential import Potential
from ..models import MODELS
from . import report
from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .data import DataError, GraphDataset, build_cache, split_indices
from .ema import ExponentialMovingAverage
from .evaluate import batches, evaluate
from .loss import ErrorMetrics, WeightedLoss
from .optim import EpochSchedule, make_optimizer
from .statistics import fit_e0, isolated_atom_e0, scan_dataset

CHECKPOINT_FORMAT = "nnpot-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the best model's weights, the seed and the world size

# Keys a resumed run may change: the budget and how the run is executed. Anything else would
# change the data split, the epoch order or the optimisation, and is refused (named).
# (data.cache_dir is only where the graphs are kept; every neighbour backend gives the same pairs.)
RESUMABLE_CHANGES = {"device", "training.max_epochs", "training.max_time_min",
                     "training.early_stopping_patience", "training.keep_epoch",
                     "model.snapshot_committee", "model.committee_with",
                     "training.checkpoint_every", "training.threads",
                     "training.progress", "data.cache_dir", "data.neighbor_backend"}


def _differences(saved: dict, current: dict, where: str = "",
                 defaults: dict | None = None) -> list[tuple[str, object, object]]:
    """Key paths where two config dicts differ, with both values. A key the saved config lacks
    (written before the key existed) counts as its default."""
    if defaults is None:
        defaults = TrainConfig().to_dict()
    found = []
    for key in sorted(set(saved) | set(current)):
        path = f"{where}.{key}" if where else key
        default = defaults.get(key) if isinstance(defaults, dict) else None
        a, b = saved.get(key, default), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and not path.endswith(("params", "e0")):
            found += _differences(a, b, path, default if isinstance(default, dict) else {})
        elif a != b:
            found.append((path, a, b))
    return found


class OtherRankFailed(ValueError):
    """Raised on the other ranks when rank 0 fails: the cause is rank 0's (quoted), and rank 0
    reports it itself (as a bug or a user error, whichever it is)."""


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collective operations run

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, for every rank (all must stop at the same epoch)."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (in place)."""
        if self.world > 1:
            for tensor in module.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def sum_flags(self, *flags: bool) -> list[int]:
        """For each flag, on how many ranks it is set (every rank gets the same answer)."""
        values = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(values)
        return values.tolist()

    def run_on_main(self, work):
        """``work()`` on rank 0 while the others wait; its exception is raised on every rank
        (on the others as a RuntimeError quoting it), so no rank hangs waiting for a failed one.
        Returns rank 0's result on rank 0 and None elsewhere."""
        result, message = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as error:
                if self.world == 1:
                    raise
                message = f"{type(error).__name__}: {error}"
                failure = error
        if self.world > 1:
            box = [message]
            torch.distributed.broadcast_object_list(box, src=0)
            if box[0] is not None:
                if self.is_main:
                    raise failure
                raise OtherRankFailed(f"rank 0 failed, so rank {self.rank} stops too: {box[0]}")
        return result

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world


def _setup_distributed(device: str) -> tuple[Distributed, torch.device]:
    resolve_device(device)  # a missing GPU: one clear line, before any process group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), torch.device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        return Distributed(rank, world, local_rank, device), device
    return Distributed(rank, world, local_rank), torch.device("cpu")


class Trainer:
    """One training run; ``run()`` trains and reports, returning the best model's path."""

    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        self.resume = resume
        self.dist, self.device = _setup_distributed(config.device)
        self.out = Path(config.output)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.best_path = self.out / "best.pt"
        self._segment_start = time.perf_counter()  # run() restarts it; set here for `elapsed`
        t = config.training
        threads = t.threads or (max(1, (os.cpu_count() or 1) // self.dist.world)
                                if self.dist.world > 1 else None)
        if threads:
            torch.set_num_threads(threads)
        if self.device.type == "cpu":
            keep_buffers_in_heap()
        self._check_run_directory()

    # ---------------------------------------------------------------------------------------
    def _check_run_directory(self) -> None:
        if self.resume and not self.checkpoint_path.is_file():
            if not (self.out / "config.yaml").is_file():
                raise ConfigError(f"--resume: {self.out} holds no training run to resume "
                                  f"(no checkpoint.pt, no config.yaml)")
            # Killed before the first checkpoint (e.g. while building the graph cache):
            # nothing was trained yet, so resuming is starting again.
            self._log(f"--resume: {self.out} has no checkpoint yet (the run was stopped before "
                      f"its first one); starting from the beginning")
            self.resume = False
        if self.resume and self.dist.is_main:
            for stale in self.out.glob(".*.tmp"):  # temp files of writes a kill interrupted
                stale.unlink(missing_ok=True)
        if not self.resume and self.checkpoint_path.is_file():
            raise ConfigError(f"{self.out} already holds a training run ({self.checkpoint_path}); "
                              f"continue it with --resume or choose another output directory")

    def _log(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    # ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        cfg = self.config.data
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else \
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nnpot" / "graphs"
        files = {"train": cfg.train, "validation": cfg.validation, "test": cfg.test}

        def build_all() -> dict:
            return {role: build_cache(path, self.config.model.cutoff, cfg.keys, cache_dir,
                                      cfg.neighbor_backend, self.config.training.progress)
                    for role, path in files.items() if path}

        # One process builds the caches; the others wait and read them (or stop with its error).
        caches = self.dist.run_on_main(build_all)
        if not self.dist.is_main:
            from .data import cache_path_for
            caches = {role: cache_path_for(path, self.config.model.cutoff, cfg.keys, cache_dir)
                      for role, path in files.items() if path}

        self.full_train = full = GraphDataset(caches["train"])
        if cfg.validation:
            self.train_set, self.val_set = full, GraphDataset(caches["validation"])
        elif cfg.validation_frames is not None:
            val_idx = np.unique(np.asarray(cfg.validation_frames, dtype=np.int64))
            if len(val_idx) != len(cfg.validation_frames) or val_idx[-1] >= len(full):
                raise ConfigError(f"data.validation_frames: {cfg.train} has {len(full)} frames "
                                  f"(0 … {len(full) - 1}); the list has repeats or indices "
                                  f"beyond that")
            if len(val_idx) == len(full):
                raise ConfigError("data.validation_frames names every frame of the training "
                                  "file: none is left to train on")
            self.train_set = full.subset(np.setdiff1d(np.arange(len(full)), val_idx))
            self.val_set = full.subset(val_idx)
        elif cfg.validation_fraction > 0:
            groups = list(full.arrays("group")) if cfg.stratify else None
            split_seed = self.config.seed if cfg.split_seed is None else cfg.split_seed
            train_idx, val_idx = split_indices(len(full), cfg.validation_fraction, split_seed,
                                               groups)
            self.train_set, self.val_set = full.subset(train_idx), full.subset(val_idx)
            if groups is not None:
                taken = {}
                for k in val_idx:
                    taken[groups[k]] = taken.get(groups[k], 0) + 1
                sizes = {g: groups.count(g) for g in dict.fromkeys(groups)}
                self._log("stratified validation split (group: validation/frames): " + ", ".join(
                    f"{g or '(none)'}: {taken.get(g, 0)}/{n}" for g, n in sizes.items()))
        else:
            self.train_set, self.val_set = full, None
        self.test_set = GraphDataset(caches["test"]) if cfg.test else None
        self._check_labels()

    def _check_labels(self) -> None:
        loss = self.config.training.loss
        keys = self.config.data.keys
        has_forces = self.train_set.arrays("has_forces")[self.train_set.indices]
        if loss.forces > 0 and not has_forces.any():
            raise DataError(f"{self.train_set.source}: no training frame has forces under the key "
                            f"{keys.forces!r}; keys of frame 0: {self.train_set.frame0_keys} "
                            f"(set data.keys.forces, or training.loss.forces: 0)")

    def compute_statistics(self) -> None:
        """Species, E0 and the force scale, streamed over the cache (see ``scan_dataset``)."""
        scan = scan_dataset(self.train_set)
        self.species = scan.species
        for other in (self.val_set, self.test_set):
            if other is None:
                continue
            extra = sorted(set(scan_dataset(other).species) - set(self.species))
            if extra:
                raise DataError(f"{other.source}: element(s) {extra} do not occur in the training "
                                f"frames (training species: {self.species})")
        energies = self.train_set.arrays("energy")
        e0_setting = self.config.data.e0
        if isinstance(e0_setting, dict):
            missing = [s for s in self.species if s not in e0_setting]
            if missing:
                raise ConfigError(f"data.e0 gives no value for {missing}")
            self.e0 = {s: float(e0_setting[s]) for s in self.species}
        elif e0_setting == "isolated_atoms":  # single-atom frames may sit on either side of a split
            try:
                self.e0 = isolated_atom_e0(scan_dataset(self.full_train), energies, self.species)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        else:
            self.e0 = fit_e0(scan.counts, energies[scan.frames], self.species)
        if (self.config.training.loss.forces > 0 and scan.force_components > 0
                and scan.max_abs_force == 0.0):
            raise DataError(f"{self.train_set.source}: every force label under the key "
                            f"{self.config.data.keys.forces!r} is exactly 0 in the training frames "
                            f"— nothing to learn from them (a wrong key, or forces not written?); "
                            f"fix the data or set training.loss.forces: 0")
        self.scale = scan.force_rms
        self.shift = 0.0

    def build(self) -> None:
        cfg, t = self.config, self.config.training
        model_class = MODELS[cfg.model.type]
        self.start_provenance: dict | None = None
        start = self._initial_potential() if cfg.model.init_from else None
        members = []
        for k in range(cfg.model.committee):  # member k from seed + k (one model: the seed)
            torch.manual_seed(cfg.seed + k)
            try:
                model = model_class(species=self.species, cutoff=cfg.model.cutoff,
                                    **cfg.model.params)
            except TypeError as error:
                raise ConfigError(f"model.params do not fit {cfg.model.type}: {error}") from None
            member = Potential(model, e0=self.e0, scale=self.scale, shift=self.shift,
                               pair_repulsion=cfg.model.pair_repulsion)
            if start is not None:  # its weights and data statistics, not those of this data
                self._check_same_model(model, start)
                member.load_state_dict(start.state_dict())
            elif model.needs_statistics:  # the model-statistics hook: once, before training
                if k == 0:
                    self._log(f"{cfg.model.type}: statistics of the {len(self.train_set)} "
                              f"training frames")
                model.fit_statistics(self._model_inputs(member))
            members.append(member)
        self.committee = len(members) > 1
        self.potential = Committee(members) if self.committee else members[0]
        self._members_to_join()  # checked now, not after hours of training
        self.frame_counts = self._bootstrap_counts() if cfg.model.bootstrap else None
        self.term_scales = self._group_scales() if t.loss.group_weights else None
        self.potential.to(device=self.device, dtype=getattr(torch, cfg.model.dtype))
        self.optimizer = make_optimizer(self.potential.parameters(), t)
        self.schedule = EpochSchedule(self.optimizer, t.scheduler, t.lr)
        self.ema = ExponentialMovingAverage(self.potential, t.ema_decay) if t.ema_decay else None
        self.loss = WeightedLoss(t.loss)
        self.want_stress = t.loss.stress > 0 and bool(self.train_set.arrays("has_stress").any())
        self.net = self.potential
        if self.dist.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.potential, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.epoch, self.elapsed_before = 0, 0.0
        self.best_loss, self.best_epoch, self.since_best = math.inf, 0, 0
        self._best_written = True  # best.pt holds best_state (keep_epoch: last writes it late)
        self.best_state: dict | None = None  # weights (EMA applied) of the best epoch, on CPU
        self.history: list[dict] = []
        self.stop_reason = ""
        self.last_epoch_time = 0.0  # s; the time-limit test asks whether one more epoch fits
        self.joined_provenance: list[dict] = []  # of the model.committee_with files

    def _initial_potential(self) -> Potential:
        """The model file of ``model.init_from``, checked against the config and the data; its
        species, E0 and force scale replace those computed from the training data."""
        path = self.config.model.init_from
        try:
            start = load(path)
        except (ValueError, OSError) as error:
            raise ConfigError(f"model.init_from: {error}") from None
        if isinstance(start, Committee):
            raise ConfigError(f"model.init_from: {path} is a committee of {len(start.members)}; "
                              f"start from one model file (a member saved alone)")
        m = self.config.model
        for key, in_file, in_config in (
                ("type", type(start.model).__name__, m.type),
                ("cutoff", start.cutoff, m.cutoff),
                ("pair_repulsion", start.pair_repulsion, m.pair_repulsion)):
            if in_file != in_config:
                raise ConfigError(f"model.init_from: {path} has {key} {in_file!r}, the config "
                                  f"model.{key} {in_config!r}; they must be the same")
        missing = sorted(set(self.species) - set(start.species))
        if missing:
            raise ConfigError(f"model.init_from: {path} knows the elements {start.species}, but "
                              f"the training data also has {missing}")
        self.species, self.e0, self.scale = start.species, start.e0_dict(), float(start.scale)
        self.start_provenance = dict(start.provenance)
        self.shift = float(start.shift)
        self._log(f"starting from the weights of {path} (its E0 and force scale, not the data's)")
        return start

    def _check_same_model(self, model, start: Potential) -> None:
        """``model`` (built from the config) must be ``start``'s architecture, key by key."""
        for key in sorted(set(model.hparams) | set(start.model.hparams)):
            in_config, in_file = model.hparams.get(key), start.model.hparams.get(key)
            if in_config != in_file:
                raise ConfigError(f"model.init_from: {self.config.model.init_from} was built "
                                  f"with {key} = {in_file!r}, the config gives {in_config!r} "
                                  f"(model.params.{key}); they must be the same")

    def _model_inputs(self, potential: Potential):
        """The training set as the models' inputs (species, pair_index, pair_vec), float64 on
        the CPU, batch by batch (streamed from the cache)."""
        for batch in batches(self.train_set, 16):
            with torch.no_grad():
                yield potential.model_inputs(batch, torch.float64)

    # ---------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
            "epoch": self.epoch, "world_size": self.dist.world, "best_state": self.best_state,
            "config": self.config.to_dict(),
            "statistics": {"species": self.species, "e0": self.e0, "scale": self.scale,
                           "shift": self.shift},
            "model": self.potential.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": torch.get_rng_state(), "elapsed": self.elapsed,
            "best": {"loss": self.best_loss, "epoch": self.best_epoch, "since": self.since_best},
            "history": self.history, "stop_reason": self.stop_reason,
            "last_epoch_s": self.last_epoch_time,
            "loss_weights": dict(self.loss.weights),
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            atomic_torch_save(self._state(), self.checkpoint_path)
            if self.best_state is not None and not self._best_written:
                self._write_best()  # keep_epoch: last writes best.pt with each checkpoint
                self._best_written = True

    def load_checkpoint(self) -> None:
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        except Exception as error:  # truncated or damaged outside nnpot (writes are atomic)
            raise ConfigError(f"--resume: {self.checkpoint_path} cannot be read ({type(error).__name__}: "
                              f"{str(error)[:200]}); it was damaged after it was written. "
                              f"Start a new run in another output directory") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.checkpoint_path} is not an nnpot training checkpoint")
        if state.get("format_version") != CHECKPOINT_VERSION:
            raise ConfigError(f"--resume: {self.checkpoint_path} has checkpoint format "
                              f"{state.get('format_version')}, this nnpot writes "
                              f"{CHECKPOINT_VERSION}; resume it with the nnpot that wrote it")
        changed = [(key, a, b) for key, a, b in _differences(state["config"], self.config.to_dict())
                   if key not in RESUMABLE_CHANGES and key != "output"]
        if changed:
            key, a, b = changed[0]
            raise ConfigError(
                f"--resume: {key} is {b!r} in the config but {a!r} in the run in {self.out}; "
                f"resuming with it changed would alter the data split, the epoch order or the "
                f"optimisation (only {', '.join(sorted(RESUMABLE_CHANGES))} may change). "
                f"Restore it, or start a new run in another output directory")
        if state["world_size"] != self.dist.world:
            raise ConfigError(f"--resume: the run in {self.out} used {state['world_size']} "
                              f"process(es), this one {self.dist.world}; the epoch order depends "
                              f"on it, so resume with the same number")
        self.potential.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"].cpu())
        self.epoch, self.elapsed_before = state["epoch"], state["elapsed"]
        best = state["best"]
        self.best_loss, self.best_epoch, self.since_best = best["loss"], best["epoch"], best["since"]
        self.best_state = state["best_state"]
        self.history = list(state["history"])
        # the stop test then gives what it gave when this checkpoint was written: a finished
        # time-limited run resumes into finish(), not into one more epoch
        self.last_epoch_time = state.get("last_epoch_s", 0.0)
        self.loss.weights.update(state["loss_weights"])
        # best.pt may have been written after this checkpoint by epochs now lost: make it the
        # resumed history's best again (or remove it when that history has none yet).
        if self.dist.is_main:
            if self.best_state is not None:
                self._write_best()
            elif self.best_path.is_file():
                self.best_path.unlink()
        self._log(f"resumed {self.out} after epoch {self.epoch} (best so far: epoch "
                  f"{self.best_epoch})")

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._segment_start)

    # ---------------------------------------------------------------------------------------
    def train_epoch(self) -> tuple[float, dict]:
        t = self.config.training
        self.potential.train()
        order = torch.randperm(len(self.train_set),
                               generator=torch.Generator().manual_seed(self.config.seed * 100003
                                                                       + self.epoch)).tolist()
        per_rank = len(order) // self.dist.world  # every rank takes the same number of steps
        mine = order[self.dist.rank::self.dist.world][:per_rank]
        n_batches = math.ceil(len(mine) / t.batch_size)
        metrics, total, skipped = ErrorMetrics(), 0.0, 0
        bar = tqdm(batches(self.train_set, t.batch_size, mine), total=n_batches, leave=False,
                   desc=f"epoch {self.epoch + 1}/{t.max_epochs}",
                   disable=not (t.progress and self.dist.is_main), dynamic_ncols=True,
                   mininterval=1.0)
        for start, batch in zip(range(0, len(mine), t.batch_size), bar):
            batch = batch.to(self.device)
            out = self.net(batch, forces=True, stress=self.want_stress, create_graph=True,
                           **({"members": True} if self.committee else {}))
            loss = self._loss(out, batch, mine[start:start + t.batch_size])
            # Every rank learns what every other rank found, so all stop or skip together.
            no_term, not_finite = self.dist.sum_flags(
                loss is None, loss is not None and not bool(torch.isfinite(loss)))
            if not_finite:
                value = float(loss) if loss is not None and not torch.isfinite(loss) else "NaN/inf"
                raise FloatingPointError(
                    f"the training loss became {value} in epoch {self.epoch + 1} (on {not_finite} "
                    f"of {self.dist.world} process(es)); lower training.lr or check the data")
            if no_term == self.dist.world:
                skipped += 1
                continue
            if loss is None:  # this rank's batch has no labelled term; the others' still count
                loss = 0.0 * out["energy"].sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:  # per member: members stay independent
                for member in (self.potential.members if self.committee else [self.potential]):
                    torch.nn.utils.clip_grad_norm_(member.parameters(), t.grad_clip)
            self.optimizer.step()
            if self.ema:
                self.ema.update(self.potential)
            metrics.add(out, batch)
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3e}")
        if skipped and self.dist.is_main:
            warnings.warn(f"epoch {self.epoch + 1}: skipped {skipped} of {n_batches} batches "
                          f"with no labelled term of non-zero weight (e.g. energy weight 0 and "
                          f"frames without forces)", stacklevel=2)
        metrics.all_reduce(self.dist.device)
        return self.dist.mean(total / max(1, n_batches - skipped)), metrics.summary()

    def _loss(self, out: dict, batch, frames: list[int]) -> torch.Tensor | None:
        """The training loss of a batch of the training ``frames``; a committee's is the sum of
        its members' own losses, so each member learns as if alone (Adam, EMA and per-member
        clipping act per parameter), each on its own resample with ``model.bootstrap``."""
        scaled = ({} if self.term_scales is None else {"term_scales": {
            term: values[frames] for term, values in self.term_scales.items()}})
        if not self.committee:
            return self.loss(out, batch, **scaled)
        each = Committee.member_results(out)
        if self.frame_counts is None:
            terms = [self.loss(member, batch, **scaled) for member in each]
        else:
            terms = [self.loss(member, batch, frame_weights=counts[frames], **scaled)
                     for member, counts in zip(each, self.frame_counts)]
        terms = [term for term in terms if term is not None]  # a member may draw none of them
        return torch.stack(terms).sum() if terms else None

    def _group_scales(self) -> dict[str, torch.Tensor]:
        """{term: [training frames]}: the factor ``training.loss.group_weights`` puts on each
        frame's energy, forces and stress terms, from the frame's group (data.keys.group)."""
        weights = self.config.training.loss.group_weights
        groups = [str(g) for g in self.train_set.arrays("group")[self.train_set.indices]]
        unknown = sorted(set(weights) - set(groups))
        if unknown:
            raise ConfigError(f"training.loss.group_weights names {unknown}, but no training "
                              f"frame has that {self.config.data.keys.group!r} (the training "
                              f"frames' groups: {sorted(set(groups))})")

        def factor(group: str, term: str) -> float:
            value = weights.get(group, 1.0)
            return float(value.get(term, 1.0) if isinstance(value, dict) else value)

        self._log("group weights (energy/forces/stress): " + ", ".join(
            f"{g}: {factor(g, 'energy'):g}/{factor(g, 'forces'):g}/{factor(g, 'stress'):g}"
            for g in sorted(weights)))
        return {term: torch.tensor([factor(g, term) for g in groups], dtype=torch.float64)
                for term in ("energy", "forces", "stress")}

    def _bootstrap_counts(self) -> torch.Tensor:
        """[members, training frames]: how often each member's resample holds each frame
        (n draws with replacement from the n frames, seed + member: the same on resume)."""
        n_frames = len(self.train_set)
        counts = []
        for k in range(self.config.model.committee):
            draws = torch.randint(n_frames, (n_frames,),
                                  generator=torch.Generator().manual_seed(self.config.seed + k))
            counts.append(torch.bincount(draws, minlength=n_frames).to(torch.float64))
        counts = torch.stack(counts)
        self._log(f"bootstrap: each member fits a resample of the {n_frames} training frames "
                  f"({float((counts > 0).float().mean()):.0%} of them distinct on average)")
        return counts

    def validate(self) -> tuple[float, dict]:
        if self.val_set is None:
            return math.nan, {}
        context = self.ema.applied(self.potential) if self.ema else nullcontext(self.potential)
        self.potential.eval()
        with context:
            metrics, _ = evaluate(self.potential, self.val_set, self.config.training.batch_size,
                                  self.device, shard=(self.dist.rank, self.dist.world))
        metrics.all_reduce(self.dist.device)
        summary = metrics.summary()
        return self._loss_from_metrics(summary), summary

    def _loss_from_metrics(self, summary: dict) -> float:
        """The MSE loss of the whole set, from the RMSEs (units as in the training loss)."""
        weights = self.loss.weights
        return sum(weights[name] * (m["rmse"] / 1e3) ** 2 for name, m in summary.items()
                   if weights[name] > 0)

    def remember_best(self, write: bool = True) -> None:
        """Keep the current (EMA) weights as the model to save; ``write``: to best.pt now."""
        context = self.ema.applied(self.potential) if self.ema else nullcontext(self.potential)
        with context:
            self.best_state = {k: v.detach().cpu().clone()
                               for k, v in self.potential.state_dict().items()}
        self._best_written = write
        if write and self.dist.is_main:
            self._write_best()

    def _write_best(self) -> None:
        current = {k: v.clone() for k, v in self.potential.state_dict().items()}
        self.potential.load_state_dict(self.best_state)
        try:
            self.potential.save(self.best_path, provenance=self._provenance())
        finally:
            self.potential.load_state_dict(current)

    def _provenance(self) -> dict:
        provenance = {"config": self.config.to_dict(), "train_sha256": self.train_set.sha256,
                      "train_file": self.train_set.source, "best_epoch": self.best_epoch,
                      "n_train_frames": len(self.train_set),
                      "n_validation_frames": len(self.val_set) if self.val_set else 0,
                      "training": self._training_summary()}
        if self.start_provenance is not None:  # the chain of runs that made this model
            provenance["init_from"] = {"file": self.config.model.init_from,
                                       "provenance": self.start_provenance}
        if self.joined_provenance:  # the runs whose members join this one's
            provenance["committee_with"] = self.joined_provenance
        return provenance

    def _training_summary(self) -> dict:
        return {"epochs": self.epoch, "time_min": self.elapsed / 60,
                "threads": self.config.training.threads, "processes": self.dist.world,
                "device": str(self.device)}

    # ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        self._segment_start = time.perf_counter()
        if self.dist.is_main and not self.resume:  # first, so a run killed early can be resumed
            atomic_write_text(self.out / "config.yaml",
                              yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self.prepare_data()
        self.compute_statistics()
        self.build()
        if self.resume:
            self.load_checkpoint()
            if self.dist.is_main:  # the budget keys may have changed: record what runs now
                atomic_write_text(self.out / "config.yaml",
                                  yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self._segment_start = time.perf_counter()
        t = self.config.training
        n_params = sum(p.numel() for p in self.potential.parameters())
        self._log(f"{self.config.model.type}: {n_params:,} parameters, species {self.species}; "
                  f"{len(self.train_set)} training / {len(self.val_set) if self.val_set else 0} "
                  f"validation frames; {self.dist.world} process(es) on {self.device}")
        self._log(report.table_header())
        while True:
            stop = self._stop_reason(self.last_epoch_time)
            if self.dist.broadcast_flag(bool(stop)):
                self.stop_reason = stop or self.stop_reason or "stopped by rank 0"
                break
            start = time.perf_counter()
            if self.loss.set_progress(self._progress()):
                self._start_final_stage()
            train_loss, train_metrics = self.train_epoch()
            val_loss, val_metrics = self.validate()
            self.epoch += 1
            monitored = val_loss if self.val_set is not None else train_loss
            self.schedule.step(monitored, self._progress())
            improved = monitored < self.best_loss
            if improved:
                self.best_loss, self.since_best = monitored, 0
            else:
                self.since_best += 1
            if improved or t.keep_epoch == "last":
                self.best_epoch = self.epoch
                # keep_epoch: last keeps every epoch in memory; best.pt follows each checkpoint
                self.remember_best(write=t.keep_epoch == "best")
            row = report.history_row(self.epoch, self.elapsed, self.optimizer.param_groups[0]["lr"],
                                     train_loss, val_loss, train_metrics, val_metrics,
                                     energy_weight=self.loss.weights["energy"])
            self.history.append(row)
            self._log(report.table_row(row) + (" *" if improved else ""))
            if self.dist.is_main:
                report.write_csv(self.history, self.out / "log.csv")
            self.last_epoch_time = time.perf_counter() - start
            if self.epoch % t.checkpoint_every == 0:
                self.save_checkpoint()
        self.save_checkpoint()
        self.dist.run_on_main(self.finish)  # the others wait, or stop with rank 0's error
        return self.best_path

    def _start_final_stage(self) -> None:
        """Refine the energies of the best model so far (not of the latest, over-fitted one;
        with keep_epoch: last, of the latest).

        The final stage weighs energy differently, so its validation losses are not comparable
        with the first stage's: the best model is chosen among final-stage epochs.
        """
        if self.best_state is not None:  # in memory (and in the checkpoint): never a stale file
            self.potential.load_state_dict(self.best_state)
        self.dist.broadcast_module(self.potential)  # every rank starts from rank 0's weights
        if self.ema:
            self.ema = ExponentialMovingAverage(self.potential, self.ema.decay)
        self.best_loss, self.since_best = math.inf, 0
        self._log(f"final stage from the {self.config.training.keep_epoch} epoch "
                  f"({self.best_epoch}): energy weight "
                  f"{self.config.training.loss.final_energy:g}")

    def _members_to_join(self) -> list[Potential]:
        """The members that join this run's in best.pt: those of the ``model.committee_with``
        files (a committee file gives all its members), then, with ``model.snapshot_committee``,
        the model this run started from. Each must agree with this run's model."""
        m = self.config.model
        members, self.joined_provenance = [], []
        for path in m.committee_with:
            try:
                model = load(path, device=self.device)
            except (ValueError, OSError) as error:
                raise ConfigError(f"model.committee_with: {error}") from None
            self.joined_provenance.append({"file": path, "provenance": dict(model.provenance)})
            for member in (model.members if isinstance(model, Committee) else [model]):
                if (member.species, member.cutoff) != (self.species, m.cutoff):
                    raise ConfigError(
                        f"model.committee_with: {path} has species {member.species} and cutoff "
                        f"{member.cutoff:g} Å, this run {self.species} and {m.cutoff:g} Å; "
                        f"committee members must agree")
                members.append(member)
        if m.snapshot_committee:
            members.append(load(m.init_from, device=self.device))
        return [member.to(dtype=getattr(torch, m.dtype)) for member in members]

    def _save_joined_committee(self) -> None:
        """best.pt ← the committee of ``_members_to_join()`` and this run's kept weights (a
        snapshot ensemble of two training stages, and/or members trained in separate runs).
        Built from the in-memory weights, so a finish run twice writes the same."""
        kept = copy.deepcopy(self.potential)  # not the training model itself: it stays as is
        kept.load_state_dict(self.best_state)
        joined = self._members_to_join()
        own = list(kept.members) if isinstance(kept, Committee) else [kept]
        Committee(joined + own).save(self.best_path, provenance=self._provenance())
        self._log(f"saved a committee of {len(joined)} joined member(s) and this run's kept "
                  f"epoch ({self.best_epoch}) in {self.best_path}")

    def _progress(self) -> float:
        """Share of the run's budget spent: epochs, or wall time when that runs out first."""
        t = self.config.training
        progress = self.epoch / t.max_epochs
        if t.max_time_min:
            progress = max(progress, self.elapsed / (60 * t.max_time_min))
        return min(1.0, progress)

    def _stop_reason(self, last_epoch_time: float) -> str:
        t = self.config.training
        if self.epoch >= t.max_epochs:
            return f"reached max_epochs = {t.max_epochs}"
        if t.max_time_min is not None and self.elapsed + last_epoch_time > 60 * t.max_time_min:
            return f"time limit of {t.max_time_min:g} min"
        if t.early_stopping_patience is not None and self.since_best >= t.early_stopping_patience:
            return f"early stopping: no better validation loss in {self.since_best} epochs"
        return ""

    def finish(self) -> None:
        """Evaluate the best model; write plots, metrics.json and the model card."""
        self._log(f"stopped: {self.stop_reason}; kept the {self.config.training.keep_epoch} "
                  f"epoch, {self.best_epoch}")
        if self.best_state is None:  # no epoch ran (a budget already spent)
            raise ConfigError(f"{self.out}: the run stopped ({self.stop_reason}) before any "
                              f"epoch was trained, so there is no model to save; raise "
                              f"training.max_epochs or training.max_time_min")
        if self.config.model.snapshot_committee or self.config.model.committee_with:
            self._save_joined_committee()
        best = load(self.best_path, device=self.device)
        results = {}
        for name, dataset in (("validation", self.val_set), ("test", self.test_set)):
            if dataset is None:
                continue
            metrics, values = evaluate(best, dataset, self.config.training.batch_size, self.device,
                                       keep_values=True)
            summary = metrics.summary()
            results[name] = {"frames": len(dataset), "metrics": summary}
            report.plot_parity(values, summary, self.out / f"parity_{name}.png",
                               f"{self.config.model.type} — {name} set")
        if self.history:
            report.plot_learning_curves(self.history, self.out / "learning_curves.png")
        atomic_write_text(self.out / "metrics.json", json.dumps(results, indent=1, ensure_ascii=False))
        best.provenance["metrics"] = {k: v["metrics"] for k, v in results.items()}
        best.provenance["training"] = self._training_summary()  # the whole run, not to best
        best.save(self.best_path)
        data = {}
        for role, dataset in (("train", self.train_set), ("validation", self.val_set),
                              ("test", self.test_set)):
            if dataset is not None:
                ptr = dataset.atom_ptr
                data[role] = {"file": dataset.source, "sha256": dataset.sha256,
                              "frames": len(dataset),
                              "atoms": int(sum(ptr[k + 1] - ptr[k] for k in dataset.indices))}
        report.write_model_card(
            self.out / "model_card.md", config=self.config.to_dict(), data=data,
            statistics={"species": self.species, "e0": self.e0, "scale": self.scale,
                        "shift": self.shift,
                        "n_parameters": sum(p.numel() for p in best.parameters()),
                        "members": len(best) if isinstance(best, Committee) else 1},
            results=results,
            training={"epochs": self.epoch, "time_min": self.elapsed / 60,
                      "stop_reason": self.stop_reason, "best_epoch": self.best_epoch})
        self._log(report.metrics_table(results))
        self._log(f"wrote {self.best_path}, {self.out / 'model_card.md'} and plots in {self.out}")


def fit(config: TrainConfig | dict | str | os.PathLike, resume: bool = False) -> Path:
    """Train a potential as the config says; returns the path of the best model file.

    ``config`` is a ``TrainConfig``, a mapping with the same keys, or a YAML file path.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = config_from_dict(config)
    return Trainer(config, resume=resume).run()
