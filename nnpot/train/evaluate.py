"""Errors of a potential on labelled graphs: metrics and the values behind parity plots."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch

from ..core.graph import AtomicGraph, batch_graphs
from ..core.potential import Potential
from .config import KeysConfig
from .frames import DataError, attach_labels, frame_labels, label_arrays, read_frames
from .loss import ErrorMetrics


def labelled_graphs(path: str, cutoff: float, keys: KeysConfig,
                    backend: str = "auto") -> list[AtomicGraph]:
    """Every frame of an extxyz file as a graph carrying its labels (in memory)."""
    graphs = []
    for index, atoms in enumerate(read_frames(path)):
        where = f"{path}, frame {index}"
        labels = frame_labels(atoms, keys, where)
        try:
            graph = AtomicGraph.from_atoms(atoms, cutoff, backend)
        except ValueError as error:  # a structure no physics allows: name the frame
            raise DataError(f"{where}: {error}") from None
        graphs.append(attach_labels(graph, label_arrays(labels, len(atoms))))
    return graphs


def batches(dataset: Sequence, batch_size: int,
            order: Sequence[int] | None = None) -> Iterator[Batch]:
    """Consecutive batches of ``dataset`` items (in ``order`` when given)."""
    order = range(len(dataset)) if order is None else order
    order = list(order)
    for start in range(0, len(order), batch_size):
        yield batch_graphs([dataset[k] for k in order[start:start + batch_size]])


def evaluate(potential: Potential, dataset: Sequence, batch_size: int = 8,
             device: str | torch.device = "cpu", shard: tuple[int, int] = (0, 1),
             keep_values: bool = False) -> tuple[ErrorMetrics, dict[str, np.ndarray]]:
    """Metrics of ``potential`` on ``dataset`` (the items ``shard = (rank, world)`` owns).

    Stress is evaluated when some frame has a stress label. With ``keep_values``, also returns
    per-atom energies and force components (predicted and reference) for parity plots.
    """
    metrics = ErrorMetrics()
    values: dict[str, list] = {"energy_ref": [], "energy_pred": [], "forces_ref": [],
                               "forces_pred": [], "stress_ref": [], "stress_pred": []}
    rank, world = shard
    for batch in batches(dataset, batch_size, range(rank, len(dataset), world)):
        batch = batch.to(device)
        want_stress = bool(batch.has_stress.any())
        out = potential(batch, forces=True, stress=want_stress)
        metrics.add(out, batch)
        if keep_values:
            n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).double()
            values["energy_ref"].append((batch.energy / n_atoms).cpu().numpy())
            values["energy_pred"].append((out["energy"].detach().double() / n_atoms).cpu().numpy())
            mask = batch.has_forces[batch.batch]
            values["forces_ref"].append(batch.forces[mask].reshape(-1).cpu().numpy())
            values["forces_pred"].append(out["forces"].detach()[mask].reshape(-1).double().cpu().numpy())
            if want_stress:
                values["stress_ref"].append(batch.stress[batch.has_stress].reshape(-1).cpu().numpy())
                values["stress_pred"].append(
                    out["stress"].detach()[batch.has_stress].reshape(-1).double().cpu().numpy())
    arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in values.items()}
    return metrics, arrays
