"""MACE's symmetric contraction: the many-body basis B from products of the atomic basis A.

For one channel c of one atom, A is a vector of d components (the irreps l = 0 … l_max of the
atomic basis, d = Σ (2l+1)). The body-order-(ν+1) features are the products
A_{i1} A_{i2} … A_{iν}, coupled to an irrep L (component M) by *generalised Clebsch–Gordan
coefficients*: chains of Wigner 3j symbols

    U[M; i1 … iν] = Σ C^{l12}_{m1 m2 μ12} C^{l123}_{μ12 m3 μ123} … C^{L}_{μ… mν M}

over one coupling path (l1 ⊗ l2 → l12, l12 ⊗ l3 → l123, …, → L; parities multiply). Then

    B_c^{LM} = Σ_{ν=1}^{correlation} Σ_η w^{(ν)}_{z, η, c} Σ_{i1…iν} U^{(ν)}_η[M; i1 … iν] A_{c,i1} … A_{c,iν}

with weights per element z of the atom, per path η and per channel (Batatia et al., NeurIPS
2022, eq. 10). Because the product of the A's is symmetric in its indices, two paths whose
U differ only by a permutation of indices give the same polynomial; ``coupling_basis`` keeps a
linearly independent set (tested on the symmetrised tensors), each element still one literal
path, so a test can check any one of them against the explicit sum over products above.

Evaluation: the products are symmetric, so the coupling tensors are rewritten on the monomials
P_m = A_{i1} … A_{iν} with i1 ≤ … ≤ iν (each monomial's coefficient is the sum of U over the
distinct orderings of its indices). Each monomial is its largest index i times a monomial of
one order less, so B is evaluated as

    B_{c,r} = Σ_i A_{c,i} · Q_{c,r,i},    Q_{c,r,i} = Σ_x W_{c,r,i,x} X_{c,x}

with X = [1, P^{(1)}, …, P^{(correlation−1)}]: only the monomials below the highest order are
formed (for d = 16 and correlation 3: 1 + 16 + 136 numbers per channel, not the 816 cubic ones,
whose storage and second derivatives dominated a training step), each order from the one below
(P^{(ν)} = P^{(ν−1)} · A_i, gathered). Per element the weights are folded into the coefficients
once per forward, W = Σ_η C_η w_η [c, rows × d, X], and Q = W @ X is one batched matrix product
per channel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import Float64Constants

Irrep = tuple[int, int]  # (l, parity ±1)


def coupling_paths(basis: Sequence[Irrep], order: int, target: Irrep
                   ) -> list[tuple[tuple, torch.Tensor]]:
    """Every coupling path of ``order`` factors of the atomic basis to the irrep ``target``.

    ``basis``: the irreps of one channel of A, in order (components of irrep k at offsets
    Σ_{k'<k} (2l+1)). Returns ``(path, U)`` pairs: ``path`` = (k1, k2, l12, k3, l123, …) names
    the basis irreps and intermediate l's; ``U`` [2L+1, d, …, d] (``order`` times d) in float64.
    Intermediate l's are bounded by what can still couple down to L.
    """
    from e3nn import o3

    dims = [2 * l + 1 for l, _ in basis]
    offsets = [sum(dims[:k]) for k in range(len(dims) + 1)]
    d, l_max = offsets[-1], max(l for l, _ in basis)
    # order 1: the identity on each irrep's block
    states = []
    for k, (l, p) in enumerate(basis):
        u = torch.zeros(2 * l + 1, d, dtype=torch.float64)
        u[:, offsets[k]:offsets[k + 1]] = torch.eye(2 * l + 1, dtype=torch.float64)
        states.append(((k,), (l, p), u))
    for step in range(2, order + 1):
        reach = target[0] + (order - step) * l_max  # how far later couplings can bring l down
        grown = []
        for path, (l1, p1), u in states:
            for k, (l2, p2) in enumerate(basis):
                for l3 in range(abs(l1 - l2), min(l1 + l2, reach) + 1):
                    cg = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)  # [2l1+1, 2l2+1, 2l3+1]
                    block = torch.zeros(2 * l1 + 1, 2 * l2 + 1, *u.shape[1:], d,
                                        dtype=torch.float64)
                    block[..., offsets[k]:offsets[k + 1]] = torch.einsum(
                        "aI,bj->abIj", u.reshape(2 * l1 + 1, -1),
                        torch.eye(2 * l2 + 1, dtype=torch.float64)).reshape(
                        2 * l1 + 1, 2 * l2 + 1, *u.shape[1:], 2 * l2 + 1)
                    coupled = torch.einsum("abm,ab...->m...", cg, block)
                    grown.append((path + (k, l3), (l3, p1 * p2), coupled))
        states = grown
    return [(path, u) for path, ir, u in states if ir == tuple(target)]


def symmetrised(u: torch.Tensor) -> torch.Tensor:
    """The mean of ``u`` [M, d, …, d] over all permutations of its last ``u.ndim - 1`` axes."""
    order = u.ndim - 1
    perms = list(itertools.permutations(range(1, order + 1)))
    return sum(u.permute(0, *p) for p in perms) / len(perms)


def coupling_basis(basis: Sequence[Irrep], order: int, target: Irrep,
                   tolerance: float = 1e-10) -> tuple[list[tuple], torch.Tensor]:
    """A linearly independent set of ``coupling_paths`` (as polynomials of A, i.e. after
    symmetrising), chosen greedily in path order: ``(paths, U [n_paths, 2L+1, d, …, d])``."""
    chosen, kept, orthonormal = [], [], []
    for path, u in coupling_paths(basis, order, target):
        v = symmetrised(u).reshape(-1)
        for q in orthonormal:  # Gram–Schmidt (twice: float64 stays orthogonal to ~1e-16)
            v = v - (q @ v) * q
        for q in orthonormal:
            v = v - (q @ v) * q
        norm = torch.linalg.vector_norm(v)
        if norm > tolerance * max(1.0, float(torch.linalg.vector_norm(u))):
            orthonormal.append(v / norm)
            chosen.append(path)
            kept.append(u)
    if not kept:
        shape = (0, 2 * target[0] + 1) + (sum(2 * l + 1 for l, _ in basis),) * order
        return [], torch.zeros(shape, dtype=torch.float64)
    return chosen, torch.stack(kept)


class SymmetricContraction(Float64Constants):
    """A [N, c, d] (one row of d basis components per channel) → B [N, c, Σ(2L+1)]: the
    irreps ``targets`` (each (L, parity)) of every channel, in order.

    Args:
        basis: the irreps (l, parity) of one channel of A.
        targets: the output irreps (L, parity).
        correlation: the highest order ν of the products (body order ν + 1).
        channels: c.
        n_species: elements (one set of weights each).
    """

    def __init__(self, basis: Sequence[Irrep], targets: Sequence[Irrep], correlation: int,
                 channels: int, n_species: int):
        super().__init__()
        self.basis, self.targets = [tuple(b) for b in basis], [tuple(t) for t in targets]
        self.correlation, self.channels, self.n_species = correlation, channels, n_species
        self.d = d = sum(2 * l + 1 for l, _ in self.basis)
        self.rows = sum(2 * L + 1 for L, _ in self.targets)
        # The monomials i1 ≤ … ≤ iν of every order; order ν is built from the one below:
        # P^{(ν)}[m] = P^{(ν−1)}[lower[m]] · A[last[m]]. Only orders < correlation are formed.
        monomials = [[(i,) for i in range(d)]]
        for order in range(2, correlation + 1):
            lower = {m: k for k, m in enumerate(monomials[-1])}
            monomials.append([m + (i,) for m in monomials[-1] for i in range(m[-1], d)])
            if order < correlation:
                self.register_buffer(f"lower_{order}", torch.tensor(
                    [lower[m[:-1]] for m in monomials[-1]]), persistent=False)
                self.register_buffer(f"last_{order}", torch.tensor(
                    [m[-1] for m in monomials[-1]]), persistent=False)
        # The factor x(m) of a monomial m = (rest, i) is its column in
        # X = [1, P^{(1)}, …, P^{(correlation−1)}] (rest's order, then rest's index).
        offsets = [0, 1]
        for ms in monomials[:-1]:
            offsets.append(offsets[-1] + len(ms))
        self.n_factors = offsets[-1]
        index = [{(): 0}] + [{m: k for k, m in enumerate(ms)} for ms in monomials]
        self.paths: dict[int, list[list[tuple]]] = {o: [] for o in range(1, correlation + 1)}
        us = {}
        for order in range(1, correlation + 1):
            for t, target in enumerate(self.targets):
                paths, us[order, t] = coupling_basis(self.basis, order, target)
                self.paths[order].append(paths)
        n_paths = [sum(len(p) for p in self.paths[o]) for o in range(1, correlation + 1)]
        # [paths (orders in turn, targets in turn within an order: the concatenated weights'
        # order), output rows, i, x]
        coupling = torch.zeros(sum(n_paths), self.rows, d, self.n_factors, dtype=torch.float64)
        for t, (L, _) in enumerate(self.targets):
            row = sum(2 * other + 1 for other, _ in self.targets[:t])  # rows of earlier targets
            for order in range(1, correlation + 1):
                start = sum(n_paths[:order - 1]) + sum(len(q) for q in self.paths[order][:t])
                u = us[order, t]
                for m in monomials[order - 1]:
                    total = sum(u[(slice(None), slice(None)) + ordering] for ordering in
                                set(itertools.permutations(m)))
                    x = offsets[order - 1] + index[order - 1][m[:-1]]
                    coupling[start:start + u.shape[0], row:row + 2 * L + 1, m[-1], x] = total
        self.float64_constant("coupling", coupling.reshape(sum(n_paths), -1))
        self.weights = nn.ParameterList()
        for count in n_paths:  # normal weights, scaled by 1/√(paths of the order)
            self.weights.append(nn.Parameter(torch.randn(n_species, count, channels)
                                             / math.sqrt(max(count, 1))))

    def factors(self, a: torch.Tensor) -> torch.Tensor:
        """a [c, d, N] → X [c, n_factors, N]: 1 and the monomials of orders 1 … correlation − 1.
        (Atoms last: every gather and its backward's scatter move contiguous rows of N
        numbers.)"""
        orders = [a.new_ones(a.shape[0], 1, a.shape[2]), a]
        for order in range(2, self.correlation):
            orders.append(orders[-1].index_select(1, getattr(self, f"lower_{order}"))
                          * a.index_select(1, getattr(self, f"last_{order}")))
        return torch.cat(orders[:self.correlation], dim=1)

    def forward(self, a: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """a [N, c, d], species [N] (element index) → [N, c, Σ(2L+1)]."""
        n, c, d = a.shape
        a = a.permute(1, 2, 0)                                             # [c, d, N]
        x = self.factors(a)                                                # [c, X, N]
        weights = torch.cat(list(self.weights), dim=1)                     # [S, paths, c]
        coupling = self.constant("coupling", weights)                      # [paths, R·d·X]
        q = None
        for element in range(self.n_species):
            folded = (weights[element].T @ coupling).view(c, self.rows * d, self.n_factors)
            q_element = torch.bmm(folded, x)                               # [c, R·d, N]
            if self.n_species == 1:
                q = q_element
                break
            mask = (species == element).to(q_element.dtype)
            q = q_element * mask if q is None else q + q_element * mask
        b = (q.view(c, self.rows, d, n) * a[:, None]).sum(dim=2)           # Σ_i Q_{r,i} A_i
        return b.permute(2, 0, 1)                                          # [N, c, Σ(2L+1)]
