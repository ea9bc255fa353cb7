"""Benchmark: nnpot's DimeNetPP against PyG's own DimeNetPlusPlus of the same size, fed the same
graph, same machine, same run.

ms per energy + forces call on fcc Cu of 108, 500 and 2048 atoms (rattled 0.05 Å), cutoff 5 Å,
float32, 2 threads, untrained models of the paper's size (128 features, 4 blocks, 7 spherical
and 6 radial functions, int/basis/out embeddings 64/8/256). Both are fed the same neighbour list
(nnpot's, built once per size and not timed, the periodic pair vectors made differentiable in
the positions): nnpot's model through ``Potential`` (forces by autograd), PyG's through the body
of ``DimeNetPlusPlus.forward`` (its triplet rule on the directed edge list, angles by atan2,
its blocks) with forces by the same autograd call — PyG's own ``forward`` builds a radius
graph without periodic images and needs torch-cluster, so it cannot take a periodic cell.

    python benchmarks/bench_dimenet.py [--repeats 5] [--rounds 2] [--device cpu] [--json out.json]

On a GPU (``--device cuda``) both run there and every call ends with a synchronisation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from peers.peer_timing import SIZES, copper
from torch_geometric.nn.models import DimeNetPlusPlus

from nnpot import AtomicGraph, Potential
from nnpot.core.graph import pair_vectors
from nnpot.models import DimeNetPP

SIZE = dict(hidden_channels=128, num_blocks=4, int_emb_size=64, basis_emb_size=8,
            out_emb_channels=256, num_spherical=7, num_radial=6)


def pyg_triplets(edge_index: torch.Tensor, n_atoms: int):
    """PyG's ``dimenet.triplets`` without torch-sparse (which it needs and nnpot does not
    install): for each edge j → i every edge k → j with k ≠ i by atom index; the same outputs
    (i, j, idx_kj, idx_ji)."""
    row, col = edge_index  # j → i
    order = torch.argsort(col, stable=True)                   # edges grouped by target
    counts = torch.bincount(col, minlength=n_atoms)
    starts = torch.cumsum(counts, 0) - counts
    per_edge = counts[row]                                    # edges arriving at each j
    idx_ji = torch.repeat_interleave(torch.arange(row.numel(), device=row.device), per_edge)
    offset = torch.arange(idx_ji.numel(), device=row.device) - torch.repeat_interleave(
        torch.cumsum(per_edge, 0) - per_edge, per_edge)
    idx_kj = order[starts[row[idx_ji]] + offset]
    keep = row[idx_kj] != col[idx_ji]
    return col, row, idx_kj[keep], idx_ji[keep]


def pyg_energy_and_forces(model: DimeNetPlusPlus, z, pos, cell, pair_index, pair_shifts):
    """PyG's DimeNet++ forward on a given directed edge list (both directions of each pair)."""
    pos = pos.detach().requires_grad_(True)
    vec = pair_vectors(pos, cell, pair_index, pair_shifts, None)
    edge_index = torch.cat([pair_index, pair_index.flip(0)], dim=1)      # j → i rows: source
    vectors = torch.cat([vec, -vec])                                        # source → target
    n = z.shape[0]
    i, j, idx_kj, idx_ji = pyg_triplets(edge_index, n)
    dist = vectors.norm(dim=-1)
    pos_ij, pos_jk = vectors[idx_ji], vectors[idx_kj]  # as PyG's forward for DimeNet++
    a = (pos_ij * pos_jk).sum(dim=-1)
    b = torch.cross(pos_ij, pos_jk, dim=1).norm(dim=-1)
    angle = torch.atan2(b, a)
    rbf = model.rbf(dist)
    sbf = model.sbf(dist, angle, idx_kj)
    x = model.emb(z, rbf, i, j)
    P = model.output_blocks[0](x, rbf, i, num_nodes=n)
    for interaction, output in zip(model.interaction_blocks, model.output_blocks[1:]):
        x = interaction(x, rbf, sbf, idx_kj, idx_ji)
        P = P + output(x, rbf, i, num_nodes=n)
    energy = P.sum()
    return energy, -torch.autograd.grad(energy, pos)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help="conventional fcc cells per side (3, 5, 8: 108, 500, 2048 atoms)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    ours = Potential(DimeNetPP(["Cu"], cutoff=5.0)).to(torch.float32)
    for block in ours.model.output_blocks:  # non-zero outputs: forces are real work
        torch.nn.init.normal_(block.lin.weight, std=0.1)
    theirs = DimeNetPlusPlus(out_channels=1, cutoff=5.0, **SIZE)
    for block in theirs.output_blocks:
        torch.nn.init.normal_(block.lin.weight, std=0.1)
    ours, theirs = ours.to(device), theirs.to(device)

    def synchronised(job):
        result = job()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    times = {"nnpot": {}, "PyG": {}}
    for n in args.sizes:
        atoms = copper(n)
        graph = AtomicGraph.from_atoms(atoms, 5.0).to(device)
        z = torch.full((len(atoms),), 29, device=device)
        pos, cell = graph.pos.float(), graph.cell.float().reshape(1, 3, 3)
        jobs = {"nnpot": lambda g=graph: ours(g, forces=True),
                "PyG": lambda z=z, pos=pos, cell=cell, g=graph: pyg_energy_and_forces(
                    theirs, z, pos, cell, g.pair_index, g.pair_shifts)}
        for name in jobs:
            synchronised(jobs[name])  # warm-up
        for _ in range(args.rounds):
            for name, job in jobs.items():
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    synchronised(job)
                    times[name].setdefault(len(atoms), []).append(1e3 * (time.perf_counter() - start))
    print("| fcc Cu atoms | nnpot DimeNetPP (ms) | PyG DimeNetPlusPlus (ms) | ratio |")
    print("|---|---|---|---|")
    medians = {k: {m: statistics.median(v) for m, v in col.items()} for k, col in times.items()}
    for m in medians["nnpot"]:
        print(f"| {m} | {medians['nnpot'][m]:.1f} | {medians['PyG'][m]:.1f} | "
              f"{medians['nnpot'][m] / medians['PyG'][m]:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ms": times, "median_ms": medians, "threads": args.threads,
                       "device": args.device}, f, indent=1)


if __name__ == "__main__":
    main()
