"""Fit a Potential to extxyz data: ``nnpot.train.fit(config)`` and ``nnpot train config.yaml``.

A run directory holds: ``config.yaml`` (as resolved), ``checkpoint.pt`` (everything needed to
resume, written atomically every ``checkpoint_every`` epochs and at the end), ``best.pt`` (the
EMA weights of the best validation epoch: a model file ``NNPCalculator`` loads), ``log.csv``,
``learning_curves.png``, ``parity_validation.png`` (and ``parity_test.png``; ``parity_train.png``
for a fit without validation or test frames), ``metrics.json`` and ``model_card.md``.

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

import math
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from ..core.allocator import keep_buffers_in_heap
from ..core.committee import Committee
from ..core.files import atomic_write_text
from ..core.model_file import load
from ..core.potential import Potential
from ..models import MODELS
from . import report
from .checkpoint import Checkpointing
from .committee_members import CommitteeJoining
from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .distributed import _setup_distributed
from .ema import ExponentialMovingAverage
from .evaluate import batches, evaluate
from .loss import ErrorMetrics, WeightedLoss
from .optim import EpochSchedule, make_optimizer
from .preparation import DataPreparation
from .run_report import Reporting


class Trainer(DataPreparation, Checkpointing, CommitteeJoining, Reporting):
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
                               pair_repulsion=cfg.model.pair_repulsion,
                               pair_repulsion_radius=cfg.model.pair_repulsion_radius)
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
        # read and checked now, not after hours of training; joined in best.pt at the end
        self.joined_members = self._members_to_join()  # sets joined_provenance
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
        self.segments_before: list[dict] = []  # where the epochs before a resume ran
        self.segment_first_epoch = 1
        self.best_loss, self.best_epoch, self.since_best = math.inf, 0, 0
        self._best_written = True  # best.pt holds best_state (keep_epoch: last writes it late)
        self.best_state: dict | None = None  # weights (EMA applied) of the best epoch, on CPU
        self.history: list[dict] = []
        self.stop_reason = ""
        self.last_epoch_time = 0.0  # s; the time-limit test asks whether one more epoch fits

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
                ("pair_repulsion", start.pair_repulsion, m.pair_repulsion),
                ("pair_repulsion_radius", start.pair_repulsion_radius,
                 m.pair_repulsion_radius)):
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
            self.segment_first_epoch = self.epoch + 1
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


def fit(config: TrainConfig | dict | str | os.PathLike, resume: bool = False) -> Path:
    """Train a potential as the config says; returns the path of the best model file.

    ``config`` is a ``TrainConfig``, a mapping with the same keys, or a YAML file path.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = config_from_dict(config)
    return Trainer(config, resume=resume).run()
