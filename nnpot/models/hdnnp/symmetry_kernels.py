"""The numerical kernels of the symmetry functions: Gaussians, the radial terms
(with a hand-written derivative), powers of (1 + λ cos θ), and per-segment sums of outer products.

Why a hand-written derivative for the radial terms: they are the widest tables of the model
([pairs × radial functions]), and autograd's generic backward of exp(−η (r − r_s)²) f_c(r)
walks through every factor again — profiled on 2048 fcc Cu atoms (16 G2 + 32 G9, float32), the
written-out d/dr made the radial block ~20 % faster. Higher derivatives stay exact: when the
backward itself is differentiated (training on forces, ``create_graph=True``) it recomputes the
slope with ordinary, differentiable torch operations, so autograd sees the whole chain
(tests/test_hdnnp.py checks it with ``gradcheck`` and ``gradgradcheck``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..blocks import cutoff_function


def gaussian(eta: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """exp(−η x²), its exponent held above −60 (e⁻⁶⁰ ≈ 9·10⁻²⁷).

    Why: with sharp Gaussians (η ≈ 20 Å⁻², as in ANI) most pairs give exp(−100…−500), which in
    float32 are denormal numbers, and x86 arithmetic on denormals is ~100× slower — it made the
    descriptor several times slower. The floor changes values by < 10⁻²⁶ and derivatives by as
    little, far below float64 round-off of any energy.
    """
    return torch.exp((-eta * shifted * shifted).clamp(min=-60.0))


def _radial_values(length: torch.Tensor, eta: torch.Tensor, rs: torch.Tensor,
                   cutoff: torch.Tensor, kind: str, slope: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[E] → values [E, R] and, when ``slope``, their r-derivatives [E, R]."""
    r = length[:, None]
    shifted = r - rs
    bell = gaussian(eta, shifted)
    fc, fc_slope = cutoff_function(r, cutoff, kind, slope)
    values = bell * fc
    if not slope:
        return values, None
    return values, bell * (fc_slope - 2.0 * eta * shifted * fc)


class _RadialTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, length, eta, rs, cutoff, kind):
        values, slope = _radial_values(length, eta, rs, cutoff, kind, ctx.needs_input_grad[0])
        ctx.save_for_backward(length, slope if slope is not None else length.new_empty(0))
        ctx.constants = (eta, rs, cutoff, kind)
        return values

    @staticmethod
    def backward(ctx, grad):
        length, slope = ctx.saved_tensors
        if torch.is_grad_enabled():  # differentiated again: the slope must carry its graph
            _, slope = _radial_values(length, *ctx.constants, slope=True)
        return (grad * slope).sum(dim=1), None, None, None, None


def radial_terms(length: torch.Tensor, eta: torch.Tensor, rs: torch.Tensor,
                 cutoff: torch.Tensor, kind: str) -> torch.Tensor:
    """exp(−η (r − r_s)²) f_c(r): distances [E] Å, parameters [R] (cutoff [R] or [1]) → [E, R]."""
    return _RadialTerms.apply(length, eta, rs, cutoff, kind)


# -------------------------------------------------------------------------------------------
def integer_powers(bases: Sequence[torch.Tensor], powers: Sequence[tuple[int, int]]
                   ) -> list[torch.Tensor]:
    """bases[k] ** p for each (k, p) in ``powers`` (p ≥ 0 integers), by repeated squaring: a few
    multiplications instead of exp and log, and every derivative finite where a base is 0."""
    squares: dict[tuple[int, int], torch.Tensor] = {}  # (base, 2^k) → base^(2^k)

    def power(base: int, exponent: int) -> torch.Tensor:
        result, bit = None, 1
        while bit <= exponent:
            if (base, bit) not in squares:
                squares[(base, bit)] = (bases[base] if bit == 1 else
                                        squares[(base, bit // 2)] * squares[(base, bit // 2)])
            if exponent & bit:
                result = squares[(base, bit)] if result is None else result * squares[(base, bit)]
            bit *= 2
        return torch.ones_like(bases[base]) if result is None else result

    return [power(base, exponent) for base, exponent in powers]


class BlockLayout:
    """Where each row of a segmented table goes when segments are padded into equal blocks.

    Rows must be in segment order. ``flat`` [T] is each row's place among S·L padded slots
    (S segments, L the longest); ``make`` gives ``None`` when padding would waste too much.
    """

    def __init__(self, flat: torch.Tensor, n_segments: int, longest: int):
        self.flat, self.n_segments, self.longest = flat, n_segments, longest

    @classmethod
    def make(cls, segment: torch.Tensor, n_segments: int) -> BlockLayout | None:
        n_rows = segment.numel()
        if isinstance(n_rows, torch.SymInt):
            # Traced with symbolic sizes (nnpot lammps export): the block shape would depend
            # on the data, which a compiled graph cannot branch on; the caller's index_add
            # path has the same result.
            return None
        counts = torch.bincount(segment, minlength=n_segments)
        longest = int(counts.max()) if n_rows else 0
        if n_rows == 0 or n_segments * longest > 4 * n_rows:
            return None
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n_rows, device=segment.device) - starts.index_select(0, segment)
        return cls(segment * longest + slot, n_segments, longest)

    def to_blocks(self, rows: torch.Tensor) -> torch.Tensor:
        """[T, C] → [S, L, C], zeros in the padding."""
        blocks = rows.new_zeros(self.n_segments * self.longest, rows.shape[1])
        return blocks.index_copy(0, self.flat, rows).view(self.n_segments, self.longest, -1)


class AngularPowers:
    """(1 + λ cos θ)^ζ for a list of (ζ, λ): cos [T] → [T, U], by repeated squaring (a few
    multiplications instead of exp and log). The bases are ≥ 0; where one is 0 (collinear atoms)
    integer powers keep every derivative finite."""

    def __init__(self, zetas: Sequence[int], lambdas: Sequence[float]):
        self.lambdas = sorted(set(lambdas))
        self.powers = [(self.lambdas.index(lam), zeta) for zeta, lam in zip(zetas, lambdas)]

    def __call__(self, cos: torch.Tensor) -> torch.Tensor:
        bases = [1.0 + lam * cos for lam in self.lambdas]
        return torch.stack(integer_powers(bases, self.powers), dim=1)


def segment_outer_sums(left: torch.Tensor, right: torch.Tensor, segment: torch.Tensor,
                       n_segments: int) -> torch.Tensor:
    """Σ_{t in segment s} left[t] ⊗ right[t] for every segment: [T, U], [T, R] → [S, U·R].

    Rows must be in segment order. Each segment's rows are padded into a block and the sums
    are one batched matmul (Lᵀ R per block), so the [T, U·R] table of outer products is never
    formed — 3× less memory traffic for U = 8, R = 4. Where padding would waste too much (a few
    segments with far more rows than the rest), the table is formed and summed with index_add.
    """
    layout = BlockLayout.make(segment, n_segments)
    if layout is None:
        table = (left[:, :, None] * right[:, None, :]).flatten(1)
        return table.new_zeros(n_segments, table.shape[1]).index_add(0, segment, table)
    return torch.bmm(layout.to_blocks(left).transpose(1, 2), layout.to_blocks(right)).flatten(1)
