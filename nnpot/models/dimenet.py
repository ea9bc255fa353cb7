"""DimeNet++ (Gasteiger et al., "Fast and uncertainty-aware directional message passing for
non-equilibrium molecules", 2020) as a potential, on PyG's DimeNet++ blocks.

Messages live on directed edges j → i. Each edge is embedded from its two atoms and the radial
Bessel basis of its length; each interaction block updates m_ji from the messages m_kj of the
edges arriving at j, weighted by a basis of the distance d_kj and the angle α at j between
j → k and j → i (spherical Bessel functions × spherical harmonics); each block's output block
sums its edges into their target atoms, and the per-atom energies are the sum over blocks.

PyG's ``EmbeddingBlock``, ``InteractionPPBlock``, ``OutputPPBlock`` and ``BesselBasisLayer`` hold
the layers and weights (a model is PyG's of the same size, parameter for parameter). Where they
did not fit the contract or the speed:

- PyG's ``DimeNetPlusPlus.forward`` builds its own radius graph from positions and its triplets
  from atom indices (k ≠ i); here the edges come from the half pair list with periodic shifts,
  and a triplet's partner edge is any other edge leaving its centre, so a triplet whose k is a
  periodic image of i (a cell smaller than the cutoff) is kept — only the edge back along
  j → i itself is excluded;
- the interaction's sum over triplets is done without forming them (``PartnerSums``): the
  spherical basis is an edge part (Bessel functions of d_kj) times Y_l^0 of the angle, the
  projection lin_sbf2 ∘ lin_sbf1 is linear, and by the addition theorem the angular sum becomes
  per-atom sums of spherical harmonics — the same numbers (tested against PyG's block on
  explicit triplets to 1e-13 in float64) at a cost per edge instead of per triplet. A traced
  export (LAMMPS) keeps explicit triplets and PyG's block (their count is data-dependent);
- the angular basis on triplets is evaluated from cos α (Legendre polynomials: Y_l^0 =
  √((2l+1)/4π) P_l(cos α)), not from α = atan2(|a × b|, a · b), whose derivative is undefined
  for collinear triplets; here collinear atoms give finite forces;
- the spherical Bessel functions are PyG's (its roots and normalisers) but evaluated by
  recurrence instead of sympy-generated expressions (``CosineSphericalBasis``);
- swish is PyTorch's fused ``silu`` (the same function, one kernel instead of three).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers
from e3nn import o3
from torch import nn
from torch_geometric.nn.models.dimenet import (
    BesselBasisLayer,
    EmbeddingBlock,
    Envelope,
    InteractionPPBlock,
    OutputPPBlock,
)

from .base import AtomisticModel, check_int
from .blocks import Float64Constants
from .hdnnp.symmetry_functions import triplets
from .hdnnp.symmetry_kernels import BlockLayout


@functools.cache
def bessel_roots_and_norms(n_spherical: int, n_radial: int) -> tuple[np.ndarray, np.ndarray]:
    """PyG's roots z_ln of the spherical Bessel functions j_l (l < ``n_spherical``, the first
    ``n_radial`` of each; float32-rounded, as PyG keeps them) and its normalisers
    1 / √(½ j_{l+1}(z_ln)²), both [n_spherical, n_radial] float64."""
    from torch_geometric.nn.models.dimenet_utils import Jn, Jn_zeros

    zeros = Jn_zeros(n_spherical, n_radial).astype(np.float64)
    orders = np.arange(n_spherical)[:, None]
    return zeros, 1.0 / np.sqrt(0.5 * Jn(zeros, orders + 1) ** 2)


def spherical_bessel(order: int, z: torch.Tensor) -> torch.Tensor:
    """j_order(z) elementwise by upward recurrence from j_0 = sin z / z and j_1 (the closed
    forms PyG's sympy expressions spell out, evaluated with one sin and one cos)."""
    sin, cos = torch.sin(z), torch.cos(z)
    previous, current = sin / z, sin / z**2 - cos / z
    if order == 0:
        return previous
    for m in range(1, order):
        previous, current = current, (2 * m + 1) / z * current - previous
    return current


class CosineSphericalBasis(Float64Constants):
    """DimeNet++'s 2D spherical basis with PyG's functions: the normalised spherical Bessel
    functions of d_kj (PyG's roots and normalisers) times Y_l^0 of the angle, given as cos α.
    ``forward(dist [E], cos_angle [T], idx_kj [T]) → [T, n_spherical · n_radial]`` in PyG's
    column order, equal to PyG's ``SphericalBasisLayer`` on the angle (tested). PyG derives
    the functions with sympy at every construction (tens of seconds at the default size) and
    evaluates one generated expression per function; here the roots come from scipy once per
    size and j_l by recurrence, one sin and one cos per degree."""

    def __init__(self, num_spherical: int, num_radial: int, cutoff: float = 5.0,
                 envelope_exponent: int = 5):
        super().__init__()
        if num_radial > 64:
            raise ValueError(f"n_radial must be ≤ 64 (PyG's Bessel roots), got {num_radial}")
        self.num_spherical, self.num_radial, self.cutoff = num_spherical, num_radial, cutoff
        self.envelope = Envelope(envelope_exponent)
        zeros, norms = bessel_roots_and_norms(num_spherical, num_radial)
        self.float64_constant("zeros", torch.from_numpy(zeros))
        self.float64_constant("norms", torch.from_numpy(norms))

    def radial(self, dist: torch.Tensor) -> torch.Tensor:
        """The edge part: dist [E] Å → envelope × normalised j_l(z_ln d / c) [E, n_spherical,
        n_radial]."""
        dist = dist / self.cutoff
        zeros, norms = self.constant("zeros", dist), self.constant("norms", dist)
        rbf = torch.stack([norms[l] * spherical_bessel(l, zeros[l] * dist[:, None])
                           for l in range(self.num_spherical)], dim=1)
        return self.envelope(dist)[:, None, None] * rbf

    def forward(self, dist: torch.Tensor, cos_angle: torch.Tensor,
                idx_kj: torch.Tensor) -> torch.Tensor:
        rbf = self.radial(dist).flatten(1)
        legendre = [torch.ones_like(cos_angle), cos_angle]
        for degree in range(1, self.num_spherical - 1):
            legendre.append(((2 * degree + 1) * cos_angle * legendre[degree]
                             - degree * legendre[degree - 1]) / (degree + 1))
        cbf = torch.stack([math.sqrt((2 * degree + 1) / (4 * math.pi)) * legendre[degree]
                           for degree in range(self.num_spherical)], dim=1)
        n, k = self.num_spherical, self.num_radial
        return (rbf[idx_kj].view(-1, n, k) * cbf.view(-1, n, 1)).view(-1, n * k)


class DimeNetPP(AtomisticModel):
    """DimeNet++ with the paper's hyper-parameters as defaults.

    Args:
        species: elements the model knows (symbols or atomic numbers).
        cutoff: radius of the graph, Å.
        n_features: width of the edge messages (hidden_channels).
        n_blocks: interaction blocks.
        n_spherical: spherical harmonics degrees l < n_spherical of the angular basis.
        n_radial: radial Bessel functions.
        int_emb_size: width of the triplet interaction (down-projection).
        basis_emb_size: width of the basis embeddings.
        out_emb_size: width of the output blocks.
        envelope_exponent: p of the polynomial envelope that takes the bases to 0 at the cutoff.
        n_before_skip: residual layers before each block's skip connection.
        n_after_skip: residual layers after it.
        n_output_layers: dense layers of each output block.
    """

    def __init__(self, species: Sequence[str | int], cutoff: float = 5.0, n_features: int = 128,
                 n_blocks: int = 4, n_spherical: int = 7, n_radial: int = 6,
                 int_emb_size: int = 64, basis_emb_size: int = 8, out_emb_size: int = 256,
                 envelope_exponent: int = 5, n_before_skip: int = 1, n_after_skip: int = 2,
                 n_output_layers: int = 3):
        for name, value, minimum in (("n_features", n_features, 1), ("n_blocks", n_blocks, 1),
                                     ("n_spherical", n_spherical, 2), ("n_radial", n_radial, 1),
                                     ("int_emb_size", int_emb_size, 1),
                                     ("basis_emb_size", basis_emb_size, 1),
                                     ("out_emb_size", out_emb_size, 1),
                                     ("envelope_exponent", envelope_exponent, 1),
                                     ("n_before_skip", n_before_skip, 0),
                                     ("n_after_skip", n_after_skip, 0),
                                     ("n_output_layers", n_output_layers, 1)):
            check_int(name, value, minimum)
        super().__init__(species, cutoff, n_features=n_features, n_blocks=n_blocks,
                         n_spherical=n_spherical, n_radial=n_radial, int_emb_size=int_emb_size,
                         basis_emb_size=basis_emb_size, out_emb_size=out_emb_size,
                         envelope_exponent=envelope_exponent, n_before_skip=n_before_skip,
                         n_after_skip=n_after_skip, n_output_layers=n_output_layers)
        # swish x·σ(x) as PyTorch's fused SiLU: one kernel forward and back where PyG's
        # resolver's ``x * x.sigmoid()`` is three, on every [edges × features] activation
        act = nn.functional.silu
        self.register_buffer("numbers", torch.tensor([atomic_numbers[s] for s in self.species]))
        self.rbf = BesselBasisLayer(n_radial, cutoff, envelope_exponent)
        self.sbf = CosineSphericalBasis(n_spherical, n_radial, cutoff, envelope_exponent)
        self.embedding = EmbeddingBlock(n_radial, n_features, act)
        self.output_blocks = nn.ModuleList(
            OutputPPBlock(n_radial, n_features, out_emb_size, 1, n_output_layers, act)
            for _ in range(n_blocks + 1))
        self.interaction_blocks = nn.ModuleList(
            InteractionPPBlock(n_features, int_emb_size, basis_emb_size, n_spherical, n_radial,
                               n_before_skip, n_after_skip, act)
            for _ in range(n_blocks))

    @property
    def receptive_field(self) -> float:
        """Å: the edge embedding reaches one cutoff, each block one more."""
        return (len(self.interaction_blocks) + 1) * self.cutoff

    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        """species [N], pair_index [2, P], pair_vec [P, 3] Å → per-atom energies [N]."""
        n_atoms, n_pairs = species.shape[0], pair_index.shape[1]
        # Directed edges: e < P goes pair_index[0] → pair_index[1] along pair_vec, e ≥ P back.
        source = torch.cat([pair_index[0], pair_index[1]])
        target = torch.cat([pair_index[1], pair_index[0]])
        vectors = torch.cat([pair_vec, -pair_vec])            # from source to target
        dist = torch.linalg.vector_norm(vectors, dim=-1)
        rbf = self.rbf(dist)
        x = self.embedding(self.numbers[species], rbf, target, source)
        energies = self.output_blocks[0](x, rbf, target, num_nodes=n_atoms)
        partners = PartnerSums.make(source, vectors, n_atoms, self.sbf.num_spherical)
        if partners is not None:
            radial = self.sbf.radial(dist)
            reverse = torch.remainder(torch.arange(2 * n_pairs, device=source.device) + n_pairs,
                                      2 * n_pairs)

            def interact(block: InteractionPPBlock, x: torch.Tensor) -> torch.Tensor:
                return interaction_by_partner_sums(block, x, rbf, radial, partners, reverse)
        else:
            # Triplets k → j → i: two edges leaving the same atom j (j → i and j → k), each
            # order once; the message comes in along the reverse of j → k.
            a, b = triplets(source, n_atoms)
            idx_ji = torch.cat([a, b])
            outgoing_k = torch.cat([b, a])
            idx_kj = torch.remainder(outgoing_k + n_pairs, 2 * n_pairs)
            cos_angle = ((vectors[idx_ji] * vectors[outgoing_k]).sum(-1)
                         / (dist[idx_ji] * dist[outgoing_k]))
            sbf = self.sbf(dist, cos_angle, idx_kj)

            def interact(block: InteractionPPBlock, x: torch.Tensor) -> torch.Tensor:
                return block(x, rbf, sbf, idx_kj, idx_ji)
        for interaction, output in zip(self.interaction_blocks, self.output_blocks[1:]):
            x = interact(interaction, x)
            energies = energies + output(x, rbf, target, num_nodes=n_atoms)
        return energies.squeeze(-1)


class PartnerSums:
    """Sums over the triplets of each directed edge without forming the triplets.

    The messages into edge a (j → i) come from its partners b (j → k, the other edges leaving
    j), each weighted by Y_l^0(α_ab) = √((2l+1)/4π) P_l(cos α_ab). By the addition theorem
    P_l(û·v̂) = Σ_m Y_lm(û) Y_lm(v̂) / (2l+1) (real harmonics with Σ_m Y_lm² = 2l+1), so

        Σ_{b≠a} Y_l^0(α_ab) h[b, l] = c_l Σ_m Y_lm(û_a) A[j, lm] − √((2l+1)/4π) h[a, l],
        A[j, lm] = Σ_{b leaving j} Y_lm(û_b) h[b, l],   c_l = 1 / √(4π (2l+1)),

    the last term removing b = a (cos α = 1). The cost is per edge (l_max² harmonics) instead
    of per triplet (about 40 per edge for a metal at 5 Å). Each atom's edges are padded into a
    block (HDNNP's ``BlockLayout``) and A and its read-back are batched matmuls.
    """

    # Below this many partners per edge explicit triplets are cheaper. One thread, training
    # step (forces, create_graph), compare_models.py's DimeNet++: ethanol ×4 (7 partners per
    # edge) 112 ms with partner sums against 78 ms with triplets; Si 64 atoms at 5 Å (27) 258
    # against 394 ms. fcc Cu at 5 Å has 41.
    MIN_PARTNERS_PER_EDGE = 12

    def __init__(self, harmonics: list[torch.Tensor], layout: BlockLayout):
        self.harmonics, self.layout = harmonics, layout

    @classmethod
    def make(cls, source: torch.Tensor, vectors: torch.Tensor, n_atoms: int,
             n_spherical: int) -> PartnerSums | None:
        """``None`` where blocks do not apply or do not pay (a traced export with symbolic
        sizes, atoms with far more edges than the rest, or few partners per edge, as in small
        molecules): then the model sums over explicit triplets."""
        if isinstance(source.numel(), torch.SymInt):
            return None
        degree = torch.bincount(source, minlength=n_atoms)
        triplet_count = int((degree * (degree - 1)).sum())
        if triplet_count < cls.MIN_PARTNERS_PER_EDGE * source.numel():
            return None
        order = torch.argsort(source, stable=True)
        layout = BlockLayout.make(source.index_select(0, order), n_atoms)
        if layout is None:
            return None
        # Each edge's slot, for the edges in their own order (index_copy needs no sorting)
        flat = torch.empty_like(layout.flat).index_copy_(0, order, layout.flat)
        layout = BlockLayout(flat, n_atoms, layout.longest)
        all_l = o3.spherical_harmonics(list(range(n_spherical)), vectors, normalize=True,
                                       normalization="component")
        blocks = layout.to_blocks(all_l)                                  # [N, K, L²]
        # split, not slices: one backward for all degrees instead of a zero-filled copy each
        by_degree = torch.split(blocks, [2 * l + 1 for l in range(n_spherical)], dim=2)
        return cls([block.contiguous() for block in by_degree], layout)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h [E, n_spherical, C] on the partner edges → [E, C] summed into each edge."""
        n_edges, n_spherical, width = h.shape
        blocks = self.layout.to_blocks(h.reshape(n_edges, -1))
        blocks = blocks.view(self.layout.n_segments, self.layout.longest, n_spherical, width)
        total = None
        for l, (harmonics, block) in enumerate(zip(self.harmonics, blocks.unbind(2))):
            per_atom = torch.bmm(harmonics.transpose(1, 2), block)           # [N, 2l+1, C]
            term = torch.bmm(harmonics, per_atom) / math.sqrt(4 * math.pi * (2 * l + 1))
            total = term if total is None else total + term
        summed = total.view(-1, width).index_select(0, self.layout.flat)
        own = torch.tensor([math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(n_spherical)],
                           dtype=h.dtype, device=h.device)
        return summed - (h * own[:, None]).sum(1)


def interaction_by_partner_sums(block: InteractionPPBlock, x: torch.Tensor, rbf: torch.Tensor,
                                radial: torch.Tensor, partners: PartnerSums,
                                reverse: torch.Tensor) -> torch.Tensor:
    """PyG's ``InteractionPPBlock.forward`` with its layers, the triplet sum done by
    ``PartnerSums``: x [E, F] edge messages, rbf [E, n_radial], radial [E, n_spherical,
    n_radial] (the spherical basis's edge part), reverse [E] the opposite edge → [E, F].

    PyG projects the [T, n_spherical·n_radial] triplet basis by lin_sbf2 ∘ lin_sbf1 (linear,
    no bias) and multiplies it by the down-projected message of edge k → j. The basis is the
    edge part of k → j times Y_l^0 of the angle, so the projection of the edge part is done per
    edge, multiplied by the message, and only the angular weight is left to the triplet sum."""
    act = block.act
    x_ji = act(block.lin_ji(x))
    x_kj = act(block.lin_kj(x)) * block.lin_rbf2(block.lin_rbf1(rbf))
    x_kj = act(block.lin_down(x_kj))                                   # [E, C]
    n_spherical, n_radial = radial.shape[1:]
    weight = (block.lin_sbf2.weight @ block.lin_sbf1.weight).view(-1, n_spherical, n_radial)
    projected = torch.einsum("elr,clr->elc", radial, weight)           # [E, n_spherical, C]
    # Edge k → j's message, seen from the partner edge j → k that leaves the centre
    partner = (x_kj[:, None, :] * projected).index_select(0, reverse)
    x_kj = act(block.lin_up(partners(partner)))
    h = x_ji + x_kj
    for layer in block.layers_before_skip:
        h = layer(h)
    h = act(block.lin(h)) + x
    for layer in block.layers_after_skip:
        h = layer(h)
    return h
