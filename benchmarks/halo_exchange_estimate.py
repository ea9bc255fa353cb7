"""Estimate: what per-layer halo exchange would give a message-passing model on 2 LAMMPS ranks.

The LAMMPS pair style evaluates a message-passing model on several ranks over a ghost graph out
to its receptive field (interactions × cutoff), which at 16384 atoms is about the whole system
per rank (2 ranks: 0.40× the speed of 1). The alternative is to exchange node features after
every interaction, so that each rank needs ghosts one cutoff deep only. This script measures,
in eager PyTorch on one thread, the work of one rank of such a scheme against the fused
evaluation of the whole box, without building it:

* rank: the atoms with x < L/2 of a 16384-atom fcc Cu box, plus every atom (or periodic image)
  within one cutoff of them as a ghost; pairs with at least one owned atom, each once;
* staged, recomputed: a forward pass per interaction (the halo exchange would follow each),
  then per interaction a vector-Jacobian product that recomputes its forward pass;
* staged, kept: the same, keeping each interaction's autograd graph for the backward pass
  (what forward stages returning their saved tensors would give);
* the communication itself is not counted, so both are upper bounds of the speed-up.

    python benchmarks/halo_exchange_estimate.py [--model potentials/cu/model.pt] [--cells 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk
from matscipy.neighbours import neighbour_list

from nnpot import load
from nnpot.allocator import keep_buffers_in_heap

ROOT = Path(__file__).resolve().parents[1]


def median_ms(function, repeats: int = 3) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "potentials" / "cu" / "model.pt")
    parser.add_argument("--cells", type=int, default=16, help="fcc cells per side (4n³ atoms)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_buffers_in_heap()
    model = load(args.model).float().model
    if not hasattr(model, "interactions"):
        raise SystemExit(f"{args.model}: this estimate is written for SchNet models")
    cutoff = model.cutoff
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((args.cells,) * 3)
    atoms.rattle(0.05, seed=1)
    i, j, shifts, vectors = neighbour_list("ijSD", atoms, cutoff)

    # The whole box, nnpot's half pair list.
    half = i < j
    whole_index = torch.tensor(np.stack([i[half], j[half]]))
    whole_vec = torch.tensor(vectors[half], dtype=torch.float32)
    whole_species = torch.zeros(len(atoms), dtype=torch.long)

    def fused_whole():
        vec = whole_vec.clone().requires_grad_(True)
        torch.autograd.grad(model(whole_species, whole_index, vec).sum(), vec)

    # One rank: owned atoms, then ghosts (an atom ID with a periodic shift) as they appear.
    owned = atoms.positions[:, 0] < atoms.cell[0, 0] / 2
    node = {int(a): k for k, a in enumerate(np.nonzero(owned)[0])}
    n_owned = len(node)
    first, second, pair_vec = [], [], []
    for a, b, shift, vector in zip(i, j, shifts, vectors):
        if not owned[a]:
            continue
        key = int(b) if owned[b] and not shift.any() else (int(b), *map(int, shift))
        k = node.setdefault(key, len(node))
        if k < n_owned and k <= node[int(a)]:  # an owned pair: once
            continue
        first.append(node[int(a)])
        second.append(k)
        pair_vec.append(vector)
    rank_index = torch.tensor([first, second])
    rank_vec = torch.tensor(np.array(pair_vec), dtype=torch.float32)
    rank_species = torch.zeros(len(node), dtype=torch.long)

    def interaction(t, h, vec):
        distances = torch.linalg.vector_norm(vec, dim=-1)
        return h + model.interactions[t](h, model.radial_basis(distances),
                                         model.envelope(distances), rank_index)

    def readout_adjoint(h):
        h = h.detach().requires_grad_(True)
        (adjoint,) = torch.autograd.grad(model.readout(h).squeeze(-1)[:n_owned].sum(), h)
        return adjoint

    def staged(keep: bool):
        features, graphs = [model.embedding(rank_species).detach()], []
        for t in range(len(model.interactions)):
            with torch.set_grad_enabled(keep):
                h = features[-1].detach().requires_grad_(keep)
                vec = rank_vec.clone().requires_grad_(keep)
                out = interaction(t, h, vec)
            graphs.append((h, vec, out))
            features.append(out.detach())  # ← the halo exchange of the new features
        adjoint = readout_adjoint(features[-1])
        gradient = torch.zeros_like(rank_vec)
        for t in reversed(range(len(model.interactions))):
            adjoint = adjoint.clone()
            adjoint[n_owned:] = 0  # ← ghost adjoints summed onto their owners
            if keep:
                h, vec, out = graphs[t]
            else:
                h = features[t].requires_grad_(True)
                vec = rank_vec.clone().requires_grad_(True)
                out = interaction(t, h, vec)
            adjoint, pair_gradient = torch.autograd.grad(out, (h, vec), adjoint)
            gradient += pair_gradient
        return gradient

    print(f"whole box: {len(atoms)} atoms, {whole_index.shape[1]} pairs; one of 2 ranks: "
          f"{n_owned} owned, {len(node) - n_owned} ghosts, {rank_index.shape[1]} pairs")
    whole = median_ms(fused_whole)
    for name, function in (("staged, recomputed", lambda: staged(False)),
                           ("staged, kept", lambda: staged(True))):
        rank = median_ms(function)
        print(f"{name:>20}: one rank {rank:7.0f} ms, whole box fused {whole:7.0f} ms → "
              f"2-rank speed-up ≤ {whole / rank:.2f}×")


if __name__ == "__main__":
    main()
