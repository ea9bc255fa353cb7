"""Small building blocks shared by the models: radial bases, cutoffs, activations, convolutions.

Each block states its input and output shapes; radial functions are smooth and vanish with
their derivative-carrying factors at the cutoff, so energies are continuous when pairs enter or
leave the neighbour list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F


class ShiftedSoftplus(nn.Module):
    """ssp(x) = ln(1 + eˣ) − ln 2: smooth, and zero at zero (SchNet's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


class GaussianRBF(nn.Module):
    """Gaussians exp(−γ (d − μ_k)²) on ``n`` centres evenly spaced on [0, cutoff].

    [P] distances (Å) → [P, n]; the width is the spacing of the centres, γ = 1 / (2·width²).
    """

    def __init__(self, n: int, cutoff: float):
        super().__init__()
        if n < 2:
            raise ValueError(f"a Gaussian basis needs at least 2 functions, got {n}")
        centres = torch.linspace(0.0, cutoff, n)
        width = centres[1] - centres[0]
        self.register_buffer("centres", centres)
        self.register_buffer("gamma", 0.5 / width**2)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        assert distances.ndim == 1, f"expected [P] distances, got {tuple(distances.shape)}"
        return torch.exp(-self.gamma * (distances[:, None] - self.centres) ** 2)


def cutoff_function(distance: torch.Tensor, cutoff: torch.Tensor | float, kind: str,
                    slope: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """f_c(r) for r [..., F] and per-column cutoffs [F] (or one number), exactly 0 at and beyond
    the cutoff; and when ``slope``, df_c/dr (else None).

    cos: ½[cos(π r/r_c) + 1];  p2 (n2p2's polynomial): 1 − 10x³ + 15x⁴ − 6x⁵, x = r/r_c.
    Both vanish at r_c with their first derivative (p2 with the second too), so functions are
    smooth as neighbours cross the cutoff.
    """
    x = distance / cutoff
    inside = x < 1.0
    x = torch.where(inside, x, torch.zeros_like(x))  # keeps the gradient of the far side at 0
    if kind == "cos":
        value = 0.5 * (torch.cos(math.pi * x) + 1.0)
        derivative = (-0.5 * math.pi) * torch.sin(math.pi * x) / cutoff if slope else None
    else:
        value = 1.0 + x**3 * (x * (15.0 - 6.0 * x) - 10.0)
        derivative = -30.0 * (x * (1.0 - x))**2 / cutoff if slope else None
    zero = torch.zeros_like(value)
    value = torch.where(inside, value, zero)
    return value, (torch.where(inside, derivative, zero) if slope else None)


class CosineCutoff(nn.Module):
    """f(d) = ½ (cos(π d / r_c) + 1) for d < r_c, else exactly 0. [P] → [P]."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        # Pairs of a Verlet list beyond the cutoff get exactly zero weight (and zero gradient).
        return cutoff_function(distances, self.cutoff, "cos")[0]


class _PairConvolution(torch.autograd.Function):
    """``pair_convolution`` with a backward that gathers again instead of keeping the gathers.

    Autograd of the plain expression keeps both gathered copies h[j], h[i] and the filter for
    backward: two [P, F] tensors per interaction besides the filter, the largest part of a SchNet
    call's memory (at 16 384 Cu atoms, 1.2 of 1.8 GB kept for backward). Here only h [N, F] and
    the filter (which the filter network keeps anyway) are saved. The backward is built from
    differentiable operations (itself for ∂/∂h: the convolution is its own transpose), so
    training on forces (create_graph) differentiates through it as before.
    """

    @staticmethod
    def forward(h, weights, i, j):
        out = torch.zeros_like(h)
        # index_select (not h[j]): its backward is a dense index_add, much faster on CPU than
        # the accumulating index_put that advanced indexing needs.
        out.index_add_(0, i, h.index_select(0, j) * weights)
        out.index_add_(0, j, h.index_select(0, i) * weights)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, weights, i, j = inputs
        ctx.save_for_backward(h, weights, i, j)

    @staticmethod
    def backward(ctx, grad_out):
        h, weights, i, j = ctx.saved_tensors
        grad_h = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_h = _PairConvolution.apply(grad_out, weights, i, j)
        if ctx.needs_input_grad[1]:
            grad_weights = (grad_out.index_select(0, i) * h.index_select(0, j)
                            + grad_out.index_select(0, j) * h.index_select(0, i))
        return grad_h, grad_weights, None, None


def pair_convolution(h: torch.Tensor, weights: torch.Tensor, pair_index: torch.Tensor) -> torch.Tensor:
    """Symmetric continuous-filter convolution over a half pair list.

    out[i] = Σ_j h[j] ⊙ W_ij over both directions of every pair: each pair (i, j) sends
    h[j]·W to i and h[i]·W to j, with the same filter (it depends only on |r_ij|).

    h [N, F], weights [P, F], pair_index [2, P] → [N, F].
    """
    return _PairConvolution.apply(h, weights, pair_index[0], pair_index[1])


def polynomial_envelope(r: torch.Tensor, cutoff: float | torch.Tensor, p: int) -> torch.Tensor:
    """u(x) = 1 − (p+1)(p+2)/2 xᵖ + p(p+2) xᵖ⁺¹ − p(p+1)/2 xᵖ⁺² for x = r/r_c < 1, else 0:
    smooth to order p at the cutoff (NequIP's envelope; the ZBL repulsion's switch). [P] → [P];
    ``cutoff`` a number or one per pair [P]."""
    x = r / cutoff
    inside = x < 1.0
    x = torch.where(inside, x, torch.zeros_like(x))
    xp = x**p
    value = (1.0 - 0.5 * (p + 1) * (p + 2) * xp + p * (p + 2) * xp * x
             - 0.5 * p * (p + 1) * xp * x * x)
    return torch.where(inside, value, torch.zeros_like(value))


class BesselBasis(nn.Module):
    """sqrt(2/r_c) · sin(n π r / r_c) / r, n = 1 … N, with trainable frequencies (as NequIP).
    [P] distances (Å) → [P, N]."""

    def __init__(self, n: int, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.frequencies = nn.Parameter(torch.arange(1, n + 1, dtype=torch.float32) * math.pi)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = r[:, None] / self.cutoff
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.frequencies * x) / r[:, None]


@torch.no_grad()
def average_neighbour_count(inputs: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                            cutoff: float) -> float | None:
    """The mean number of neighbours within ``cutoff`` per atom (both directions of each pair)
    over ``(species, pair_index, pair_vec)`` batches; None when there are no atoms."""
    atoms, edges = 0, 0
    for species, _, pair_vec in inputs:
        atoms += species.numel()
        edges += 2 * int((torch.linalg.vector_norm(pair_vec, dim=-1) < cutoff).sum())
    return max(edges / atoms, 1.0) if atoms else None


class Float64Constants(nn.Module):
    """A module with constants of its construction (coupling coefficients) that stay float64:
    registered with ``float64_constant`` as buffers (so they move with the module, and traces
    and exports see them), outside the state dict, and kept float64 when the module's dtype
    changes — ``.to(float32)`` and back cannot round them, so a model converted in memory
    computes with the very numbers of the same model loaded from its file. Use them through
    ``constant(name, like)``: a copy in ``like``'s dtype."""

    def float64_constant(self, name: str, value: torch.Tensor) -> None:
        names = self.__dict__.setdefault("_float64_names", [])
        if name not in names:
            names.append(name)
        self.register_buffer(name, value.detach().to(torch.float64), persistent=False)

    def constant(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return getattr(self, name).to(like.dtype)

    def _apply(self, fn, recurse=True):
        kept = {name: self._buffers[name] for name in self.__dict__.get("_float64_names", [])}
        super()._apply(fn, recurse)
        for name, original in kept.items():  # the new device, the old (float64) numbers
            self._buffers[name] = original.to(device=self._buffers[name].device)
        return self


def directed_edge_features(pair_index: torch.Tensor, pair_vec: torch.Tensor, expansion: nn.Module,
                           envelope: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of every pair for PyG's message-passing layers: ``edge_index`` [2, 2P]
    (pair i–j as i → j and j → i) and ``edge_attr`` [2P, G + 1], the distance expansion [G]
    with the cutoff function as its last column (the layers damp their messages by it)."""
    distances = torch.linalg.vector_norm(pair_vec, dim=-1)
    features = torch.cat([expansion(distances), envelope(distances)[:, None]], dim=1)
    edge_index = torch.cat([pair_index, pair_index.flip(0)], dim=1)
    return edge_index, torch.cat([features, features], dim=0)
