"""Optimiser and learning-rate schedules."""

from __future__ import annotations

import math

import torch

from .config import SchedulerConfig, TrainingConfig


def make_optimizer(parameters, config: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


class EpochSchedule:
    """One interface over the schedules: ``step(validation_loss)`` once per epoch.

    * ``plateau``: ReduceLROnPlateau on the validation loss;
    * ``cosine``: linear warm-up for ``warmup_epochs``, then cosine decay to ``min_lr`` at
      ``max_epochs``;
    * ``none``: constant learning rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: SchedulerConfig,
                 max_epochs: int, base_lr: float):
        self.kind = config.type
        if self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=config.factor, patience=config.patience, min_lr=config.min_lr)
        elif self.kind == "cosine":
            warmup, floor = config.warmup_epochs, config.min_lr / base_lr

            def factor(epoch: int) -> float:
                if epoch < warmup:
                    return (epoch + 1) / (warmup + 1)
                progress = min(1.0, (epoch - warmup) / max(1, max_epochs - warmup))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        else:
            self.scheduler = None

    def step(self, validation_loss: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(validation_loss)
        elif self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)
