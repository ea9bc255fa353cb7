"""Checkpoints of a training run (atomic, every ``checkpoint_every`` epochs) and exact resume:
a resumed run refuses a config change that would alter the split, the epoch order or the
optimisation, naming the key."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..core.files import atomic_torch_save
from .config import ConfigError, TrainConfig

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


class Checkpointing:
    """The Trainer's checkpoint and resume policy: what a checkpoint holds, the keys a resumed
    run may change, and the kept (best or last) model written to best.pt."""

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
            "segments": self._segments(),
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
        if self.config.training.keep_epoch == "last" and self.best_epoch != self.epoch:
            # resumed with keep_epoch changed to last: the model kept is the latest epoch's
            self.best_epoch = self.epoch
            self.remember_best(write=False)
        self.history = list(state["history"])
        # where its epochs ran; a checkpoint from before segments were kept has its own config's
        # device (the device of the run that wrote it)
        self.segments_before = state.get("segments") or (
            [{"device": state["config"].get("device", "cpu"), "processes": state["world_size"],
              "threads": state["config"]["training"].get("threads"), "epochs": [1, self.epoch]}]
            if self.epoch else [])
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
