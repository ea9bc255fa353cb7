"""Weighted loss on energy per atom, forces and stress, and the error metrics of a data set.

Frames without forces or stress contribute only what they have: masks select the labelled
entries with ``torch.where`` (never a product with the mask, which would let a NaN prediction
of an unlabelled frame poison the gradient).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torch_geometric.data import Batch

from .config import HUBER_DELTA, LossConfig


def _atoms_per_graph(batch) -> torch.Tensor:
    return torch.bincount(batch.batch, minlength=batch.num_graphs).to(torch.float64)


def residuals(out: dict, batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-entry prediction − label and the mask of labelled entries, per property.

    energy: eV/atom [B]; forces: eV/Å [N, 3]; stress: eV/Å³ [B, 6].
    """
    n_atoms = _atoms_per_graph(batch)
    result = {"energy": ((out["energy"].double() - batch.energy) / n_atoms,
                         torch.ones_like(n_atoms, dtype=torch.bool))}
    if "forces" in out:
        mask = batch.has_forces[batch.batch][:, None].expand(-1, 3)
        result["forces"] = (out["forces"] - batch.forces.to(out["forces"].dtype), mask)
    if "stress" in out:
        mask = batch.has_stress[:, None].expand(-1, 6)
        result["stress"] = (out["stress"] - batch.stress.to(out["stress"].dtype), mask)
    return result


class WeightedLoss:
    """w_E·⟨(ΔE/N)²⟩ + w_F·⟨ΔF²⟩ + w_σ·⟨Δσ²⟩ (or Huber in place of the squares).

    With ``final_energy`` set, the energy weight switches to it for the last
    ``final_fraction`` of the run (``set_progress``): forces are learnt first, and energies are
    sharpened at the end with a small learning rate (the two-stage recipe MACE uses).
    """

    def __init__(self, config: LossConfig):
        self.config = config
        self.weights = {"energy": config.energy, "forces": config.forces, "stress": config.stress}

    def set_progress(self, progress: float) -> bool:
        """``progress`` ∈ [0, 1]: share of the run's budget spent. True when the stage changes."""
        final = self.config.final_energy is not None and progress >= 1 - self.config.final_fraction
        weight = self.config.final_energy if final else self.config.energy
        changed = weight != self.weights["energy"]
        self.weights["energy"] = weight
        return changed

    def penalty(self, diff: torch.Tensor, name: str) -> torch.Tensor:
        """diff² (mse), or Huber with the term's δ: ½ diff² within δ, δ·(|diff| − ½δ) beyond
        (linear, like an absolute error: large errors pull less than with squares)."""
        if self.config.type == "huber":
            delta = self.config.huber_delta
            delta = delta.get(name, HUBER_DELTA) if isinstance(delta, dict) else delta
            return F.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=delta)
        return diff.pow(2)

    def __call__(self, out: dict, batch, frame_weights: torch.Tensor | None = None,
                 term_scales: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """The weighted loss of a batch; None when the batch has no labelled, weighted term
        (e.g. energy weight 0 and no frame with forces), which the trainer skips.

        ``frame_weights`` [B] (a bootstrap's counts) weigh each frame's entries: a frame of
        weight 2 counts as if it were in the batch twice, one of weight 0 not at all.
        ``term_scales`` {"energy"|"forces"|"stress": [B]} multiply one term of each frame (the
        group weights of ``loss.group_weights``) without renormalising: a batch of frames all
        scaled by 2 has twice the loss, so the scale acts across batches too."""
        total = None
        for name, (diff, mask) in residuals(out, batch).items():
            weight = self.weights[name]
            counts = self._per_entry(frame_weights, name, batch, diff)
            scales = self._per_entry((term_scales or {}).get(name), name, batch, diff)
            if counts is not None:
                mask = mask & (counts > 0)
            if weight == 0 or not bool(mask.any()):
                continue
            safe = torch.where(mask, diff, torch.zeros_like(diff))
            penalty = self.penalty(safe, name)
            if scales is not None:
                penalty = scales * penalty
            if counts is None:
                term = weight * penalty.sum() / mask.sum()
            else:
                counts = torch.where(mask, counts, torch.zeros_like(counts))
                term = weight * (counts * penalty).sum() / counts.sum()
            total = term if total is None else total + term
        if total is None:  # every weighted label is missing from this batch: nothing to learn
            return None
        return total.float() if total.dtype == torch.float64 else total

    @staticmethod
    def _per_entry(per_frame: torch.Tensor | None, name: str, batch, diff: torch.Tensor
                   ) -> torch.Tensor | None:
        """A per-frame value [B] spread over the entries of the ``name`` residual (like diff)."""
        if per_frame is None:
            return None
        values = per_frame.to(diff.device, torch.float64)
        if name == "forces":
            values = values[batch.batch]
        return values.view(-1, *([1] * (diff.dim() - 1))).expand_as(diff)


class ErrorMetrics:
    """Running MAE and RMSE of energy (meV/atom), forces (meV/Å) and stress (meV/Å³)."""

    UNITS = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}

    def __init__(self):
        # per property: [Σ|e|, Σe², count], float64
        self.sums = torch.zeros(3, 3, dtype=torch.float64)

    def add(self, out: dict, batch: Batch) -> None:
        for name, (diff, mask) in residuals(out, batch).items():
            d = diff.detach().double()[mask].cpu()
            row = list(self.UNITS).index(name)
            self.sums[row] += torch.tensor([float(d.abs().sum()), float(d.pow(2).sum()),
                                            float(d.numel())], dtype=torch.float64)

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum over the processes of a distributed run (``device``: where the backend works)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sums = self.sums.to(device)
            torch.distributed.all_reduce(sums)
            self.sums = sums.cpu()

    def summary(self) -> dict[str, dict[str, float]]:
        result = {}
        for row, (name, unit) in enumerate(self.UNITS.items()):
            abs_sum, sq_sum, count = self.sums[row].tolist()
            if count > 0:
                result[name] = {"mae": 1e3 * abs_sum / count,
                                "rmse": 1e3 * math.sqrt(sq_sum / count),
                                "count": int(count), "unit": unit}
        return result
