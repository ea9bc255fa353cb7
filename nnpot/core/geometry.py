"""The derivative machinery: forces and stress of per-atom energies, by autograd, for every model.

Forces F = −∂E/∂R; stress σ = (1/V)·∂E/∂ε for a symmetric strain ε applied to positions and
cell. A ``Geometry`` is set up once per graph or batch and shared by a committee's members.

Per-atom stresses split σ over the atoms through the pair gradients g_p = ∂E/∂r_p of the pair
vectors r_p (the energy depends on positions only through them): each pair's share
sym(g_p ⊗ r_p)/V goes half to each of its two atoms, so they sum to σ exactly. For a many-body
model the split of the virial over atoms is a choice, not a physical observable; this one is
the virial of the pair forces ±g_p, the same that ``pair_style nnpot`` gives LAMMPS's
``compute stress/atom``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from .graph import pair_vectors


def voigt(tensor: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] symmetric → [B, 6] in ASE's Voigt order xx, yy, zz, yz, xz, xy."""
    return tensor[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


@dataclass
class PairGeometry:
    """What ``Potential.atom_energies`` and ``energies_from_model`` read of a geometry: the
    species index [N] and the pairs (``pair_index`` [2, P], ``pair_vec`` [P, 3] Å), no cell."""

    species: torch.Tensor
    pair_index: torch.Tensor
    pair_vec: torch.Tensor

    def within(self, cutoff: float) -> PairGeometry:
        """The same atoms with only the pairs shorter than ``cutoff`` (Å), in list order: what
        a neighbour list built at ``cutoff`` gives a committee member with a shorter cutoff
        than the committee's. The kept vectors stay differentiable views of these."""
        inside = (self.pair_vec.detach() ** 2).sum(dim=1) < cutoff * cutoff
        return PairGeometry(self.species, self.pair_index[:, inside], self.pair_vec[inside])


class Geometry:
    """What every member of a potential sees of a graph or batch, set up once: positions that
    require grad (for forces), a zero strain applied to positions and cell (for stress), the
    species index and the pair vectors [P, 3] Å. ``results`` turns per-atom energies into
    energies, forces and stress; a committee calls it once per member on the same geometry."""

    def __init__(self, graph: Data, dtype: torch.dtype, species: torch.Tensor, forces: bool,
                 stress: bool, stresses: bool = False):
        self.graph, self.forces, self.stress, self.species = graph, forces, stress, species
        self.stresses = stresses
        pos = graph.pos.to(dtype)
        self.cell = graph.cell.to(dtype).reshape(-1, 3, 3)
        self.n_graphs = self.cell.shape[0]
        batch = getattr(graph, "batch", None)
        self.batch = (torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
                      if batch is None else batch)
        self.wrt = []
        if forces or stress or stresses:
            pos = pos.detach().requires_grad_(True)
            self.wrt.append(pos)
        if stress:
            strain = torch.zeros_like(self.cell, requires_grad=True)
            self.wrt.append(strain)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            # Positions and cell deformed by (1 + ε); at ε = 0 nothing changes but the graph.
            if self.n_graphs == 1:
                strained_pos = pos + pos @ symmetric[0]
            else:
                strained_pos = pos + torch.einsum("ni,nij->nj", pos, symmetric[self.batch])
            strained_cell = self.cell + self.cell @ symmetric
        else:
            strained_pos, strained_cell = pos, self.cell
        self.pair_index = graph.pair_index
        self.pair_vec = pair_vectors(strained_pos, strained_cell, graph.pair_index,
                                     graph.pair_shifts, self.batch)
        if stresses:
            self.wrt.append(self.pair_vec)

    def results(self, energies: torch.Tensor, create_graph: bool,
                retain_graph: bool | None = None) -> dict[str, torch.Tensor]:
        """Per-atom energies [N] → ``energy`` [B], ``energies`` [N] and, as asked, ``forces``
        [N, 3] and ``stress`` [B, 6] (see ``Potential.forward``). ``retain_graph`` keeps the
        shared part of the graph for the next member's derivatives."""
        energy = torch.zeros(self.n_graphs, dtype=energies.dtype,
                             device=energies.device).index_add(0, self.batch, energies)
        results = {"energy": energy, "energies": energies}
        if not self.wrt:
            return results
        grads = gradients(energy.sum(), self.wrt, create_graph, retain_graph)
        if self.forces:
            results["forces"] = -grads[0]
        if self.stress or self.stresses:
            # Stress exists only for 3D-periodic cells; other structures get NaN rows (a
            # volume of 1 in the division keeps their gradient finite: it is never used).
            periodic = self.graph.pbc.reshape(-1, 3).all(dim=1).to(energy.device)
            volume = torch.where(periodic, torch.linalg.det(self.cell).abs(),
                                 torch.ones_like(energy))
        if self.stress:
            sigma = voigt(grads[1] / volume[:, None, None])
            results["stress"] = torch.where(periodic[:, None], sigma,
                                            torch.full_like(sigma, float("nan")))
        if self.stresses:
            per_atom = voigt(self.pair_split(grads[-1]) / volume[self.batch, None, None])
            results["stresses"] = torch.where(periodic[self.batch, None], per_atom,
                                              torch.full_like(per_atom, float("nan")))
        return results

    def pair_split(self, pair_gradient: torch.Tensor) -> torch.Tensor:
        """[P, 3] ∂E/∂r_p → [N, 3, 3] eV: Σ over the pairs of each atom of ½·sym(g_p ⊗ r_p)."""
        share = pair_gradient[:, :, None] * self.pair_vec[:, None, :]
        share = 0.25 * (share + share.transpose(1, 2))
        split = torch.zeros(self.batch.shape[0], 3, 3, dtype=share.dtype, device=share.device)
        return split.index_add(0, self.pair_index[0], share).index_add(0, self.pair_index[1], share)


def gradients(output: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool,
               retain_graph: bool | None = None) -> list[torch.Tensor]:
    """∂output/∂inputs, with zeros where the output does not depend on an input (no pairs)."""
    if not output.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(output, inputs, create_graph=create_graph,
                                retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
