"""Fit a Potential to extxyz data: ``nnpot.train.fit(config)`` and ``nnpot train config.yaml``.

A run directory holds: ``config.yaml`` (as resolved), ``checkpoint.pt`` (everything needed to
resume, written atomically every ``checkpoint_every`` epochs and at the end), ``best.pt`` (the
EMA weights of the best validation epoch: a model file ``NNPCalculator`` loads), ``log.csv``,
``learning_curves.png``, ``parity_validation.png`` (and ``parity_test.png``), ``metrics.json``
and ``model_card.md``.

Resuming restores model, optimiser, scheduler, EMA, RNG state and epoch; the order of the
training frames in an epoch depends only on (seed, epoch), so a run killed and resumed ends with
the same weights as one never interrupted. Under ``torchrun`` the run is data-parallel
(DistributedDataParallel, gloo on CPU, nccl on GPU): every process trains on its share of each
epoch's batches; only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..allocator import keep_buffers_in_heap
from ..models import MODELS
from ..potential import Potential, atomic_torch_save, load
from . import report
from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .data import DataError, GraphDataset, build_cache, split_indices
from .ema import ExponentialMovingAverage
from .evaluate import batches, evaluate
from .loss import ErrorMetrics, WeightedLoss
from .optim import EpochSchedule, make_optimizer
from .statistics import element_counts, fit_e0, force_scale, isolated_atom_e0

CHECKPOINT_FORMAT = "nnpot-checkpoint"


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collective operations run

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

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

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world


def _setup_distributed(device: str) -> tuple[Distributed, torch.device]:
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
            raise ConfigError(f"--resume: no checkpoint at {self.checkpoint_path}")
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
        caches = {}
        if self.dist.is_main:  # one process builds the caches, the others wait and read them
            for role, path in files.items():
                if path:
                    caches[role] = build_cache(path, self.config.model.cutoff, cfg.keys, cache_dir,
                                               cfg.neighbor_backend, self.config.training.progress)
        self.dist.barrier()
        if not self.dist.is_main:
            from .data import cache_path_for
            caches = {role: cache_path_for(path, self.config.model.cutoff, cfg.keys, cache_dir)
                      for role, path in files.items() if path}

        full = GraphDataset(caches["train"])
        if cfg.validation:
            self.train_set, self.val_set = full, GraphDataset(caches["validation"])
        elif cfg.validation_fraction > 0:
            groups = list(full.arrays("group")) if cfg.stratify else None
            train_idx, val_idx = split_indices(len(full), cfg.validation_fraction, self.config.seed,
                                               groups)
            self.train_set, self.val_set = full.subset(train_idx), full.subset(val_idx)
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
        ds = self.train_set
        numbers, atom_ptr = ds.arrays("numbers"), ds.atom_ptr
        frames = ds.indices
        atom_rows = np.concatenate([np.arange(atom_ptr[k], atom_ptr[k + 1]) for k in frames])
        from ase.data import chemical_symbols
        self.species = [chemical_symbols[z] for z in np.unique(numbers[atom_rows])]
        for other in (self.val_set, self.test_set):
            if other is None:
                continue
            extra = sorted(set(chemical_symbols[z] for z in np.unique(other.arrays("numbers")))
                           - set(self.species))
            if extra:
                raise DataError(f"{other.source}: element(s) {extra} do not occur in the training "
                                f"frames (training species: {self.species})")
        energies = ds.arrays("energy")
        e0_setting = self.config.data.e0
        if isinstance(e0_setting, dict):
            missing = [s for s in self.species if s not in e0_setting]
            if missing:
                raise ConfigError(f"data.e0 gives no value for {missing}")
            self.e0 = {s: float(e0_setting[s]) for s in self.species}
        elif e0_setting == "isolated_atoms":
            self.e0 = isolated_atom_e0(numbers, atom_ptr, energies, self.species)
        else:
            counts = element_counts(numbers, atom_ptr, frames, self.species)
            self.e0 = fit_e0(counts, energies[frames], self.species)
        has_forces = ds.arrays("has_forces")
        forces = ds.arrays("forces")
        rows = np.concatenate([np.arange(atom_ptr[k], atom_ptr[k + 1]) for k in frames
                               if has_forces[k]] or [np.zeros(0, dtype=np.int64)])
        self.scale = force_scale(forces[rows]) if len(rows) else 1.0
        self.shift = 0.0

    def build(self) -> None:
        cfg, t = self.config, self.config.training
        torch.manual_seed(cfg.seed)
        model_class = MODELS[cfg.model.type]
        try:
            model = model_class(species=self.species, cutoff=cfg.model.cutoff, **cfg.model.params)
        except TypeError as error:
            raise ConfigError(f"model.params do not fit {cfg.model.type}: {error}") from None
        self.potential = Potential(model, e0=self.e0, scale=self.scale, shift=self.shift)
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
        self.history: list[dict] = []
        self.stop_reason = ""

    # ---------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "format_version": 1, "epoch": self.epoch,
            "config": self.config.to_dict(),
            "statistics": {"species": self.species, "e0": self.e0, "scale": self.scale,
                           "shift": self.shift},
            "model": self.potential.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": torch.get_rng_state(), "elapsed": self.elapsed,
            "best": {"loss": self.best_loss, "epoch": self.best_epoch, "since": self.since_best},
            "history": self.history, "stop_reason": self.stop_reason,
            "loss_weights": dict(self.loss.weights),
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            atomic_torch_save(self._state(), self.checkpoint_path)

    def load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.checkpoint_path} is not an nnpot training checkpoint")
        saved, current = state["config"], self.config.to_dict()
        for section in ("model", "data"):
            if saved[section] != current[section]:
                raise ConfigError(f"--resume: the '{section}' section of the config differs from "
                                  f"the run in {self.out}; resume needs the same model and data")
        self.potential.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"].cpu())
        self.epoch, self.elapsed_before = state["epoch"], state["elapsed"]
        best = state["best"]
        self.best_loss, self.best_epoch, self.since_best = best["loss"], best["epoch"], best["since"]
        self.history = list(state["history"])
        self.loss.weights.update(state["loss_weights"])
        self._log(f"resumed {self.out} after epoch {self.epoch}")

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
        metrics, total = ErrorMetrics(), 0.0
        bar = tqdm(batches(self.train_set, t.batch_size, mine), total=n_batches, leave=False,
                   desc=f"epoch {self.epoch + 1}/{t.max_epochs}",
                   disable=not (t.progress and self.dist.is_main), dynamic_ncols=True,
                   mininterval=1.0)
        for batch in bar:
            batch = batch.to(self.device)
            out = self.net(batch, forces=True, stress=self.want_stress, create_graph=True)
            loss = self.loss(out, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {float(loss)} in epoch "
                                         f"{self.epoch + 1}; lower training.lr or check the data")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.potential.parameters(), t.grad_clip)
            self.optimizer.step()
            if self.ema:
                self.ema.update(self.potential)
            metrics.add(out, batch)
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3e}")
        metrics.all_reduce(self.dist.device)
        return self.dist.mean(total / max(1, n_batches)), metrics.summary()

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

    def save_best(self) -> None:
        if not self.dist.is_main:
            return
        context = self.ema.applied(self.potential) if self.ema else nullcontext(self.potential)
        with context:
            self.potential.save(self.best_path, provenance=self._provenance())

    def _provenance(self) -> dict:
        return {"config": self.config.to_dict(), "train_sha256": self.train_set.sha256,
                "train_file": self.train_set.source, "best_epoch": self.best_epoch,
                "n_train_frames": len(self.train_set),
                "n_validation_frames": len(self.val_set) if self.val_set else 0}

    # ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        self._segment_start = time.perf_counter()
        self.prepare_data()
        self.compute_statistics()
        self.build()
        if self.resume:
            self.load_checkpoint()
        elif self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self._segment_start = time.perf_counter()
        t = self.config.training
        n_params = sum(p.numel() for p in self.potential.parameters())
        self._log(f"{self.config.model.type}: {n_params:,} parameters, species {self.species}; "
                  f"{len(self.train_set)} training / {len(self.val_set) if self.val_set else 0} "
                  f"validation frames; {self.dist.world} process(es) on {self.device}")
        self._log(report.table_header())
        last_epoch_time = 0.0
        while True:
            stop = self._stop_reason(last_epoch_time)
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
                self.best_loss, self.best_epoch, self.since_best = monitored, self.epoch, 0
                self.save_best()
            else:
                self.since_best += 1
            row = report.history_row(self.epoch, self.elapsed, self.optimizer.param_groups[0]["lr"],
                                     train_loss, val_loss, train_metrics, val_metrics,
                                     energy_weight=self.loss.weights["energy"])
            self.history.append(row)
            self._log(report.table_row(row) + (" *" if improved else ""))
            if self.dist.is_main:
                report.write_csv(self.history, self.out / "log.csv")
            if self.epoch % t.checkpoint_every == 0:
                self.save_checkpoint()
            last_epoch_time = time.perf_counter() - start
        self.save_checkpoint()
        if self.dist.is_main:
            self.finish()
        self.dist.barrier()
        return self.best_path

    def _start_final_stage(self) -> None:
        """Refine the energies of the best model so far (not of the latest, over-fitted one).

        The final stage weighs energy differently, so its validation losses are not comparable
        with the first stage's: the best model is chosen among final-stage epochs.
        """
        if self.dist.is_main and self.best_path.is_file():
            best = torch.load(self.best_path, map_location=self.device, weights_only=True)
            self.potential.load_state_dict(best["state_dict"])
        self.dist.broadcast_module(self.potential)  # other ranks need not see rank 0's disk
        if self.ema:
            self.ema = ExponentialMovingAverage(self.potential, self.ema.decay)
        self.best_loss, self.since_best = math.inf, 0
        self._log(f"final stage from the best epoch ({self.best_epoch}): energy weight "
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

    def finish(self) -> None:
        """Evaluate the best model; write plots, metrics.json and the model card."""
        self._log(f"stopped: {self.stop_reason}; best epoch {self.best_epoch}")
        if not self.best_path.is_file():  # no epoch ran in this directory's history
            self.save_best()
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
        (self.out / "metrics.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        best.provenance["metrics"] = {k: v["metrics"] for k, v in results.items()}
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
                        "n_parameters": sum(p.numel() for p in best.parameters())},
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
