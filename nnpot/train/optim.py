"""Optimiser and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import SchedulerConfig, TrainingConfig


def make_optimizer(parameters: Iterable[torch.nn.Parameter],
                   config: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


class EpochSchedule:
    """One interface over the schedules: ``step(validation_loss, progress)`` once per epoch.

    * ``plateau``: ReduceLROnPlateau on the validation loss;
    * ``cosine``: linear warm-up over ``warmup_epochs``, then cosine decay to ``min_lr`` as the
      run's progress goes from 0 to 1. Progress is the larger of epochs/max_epochs and
      elapsed/max_time, so a run limited by wall time is annealed within its budget too;
    * ``none``: constant learning rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: SchedulerConfig, base_lr: float):
        self.kind, self.config, self.base_lr = config.type, config, base_lr
        self.optimizer = optimizer
        self.epochs = 0
        self.plateau = None
        if self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=config.factor, patience=config.patience, min_lr=config.min_lr)
        elif self.kind == "cosine":
            self._set_lr(self.cosine_lr(0.0))

    def cosine_lr(self, progress: float) -> float:
        warmup, floor = self.config.warmup_epochs, self.config.min_lr
        if self.epochs < warmup:
            return self.base_lr * (self.epochs + 1) / (warmup + 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
        return floor + (self.base_lr - floor) * cosine

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, validation_loss: float, progress: float) -> None:
        """After an epoch: ``progress`` ∈ [0, 1] is how much of the run's budget is spent."""
        self.epochs += 1
        if self.plateau is not None:
            self.plateau.step(validation_loss)
        elif self.kind == "cosine":
            self._set_lr(self.cosine_lr(progress))

    def state_dict(self) -> dict:
        return {"epochs": self.epochs,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = state["epochs"]
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
