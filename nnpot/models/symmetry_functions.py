"""Atom-centred symmetry functions (Behler, J. Chem. Phys. 134, 074106 (2011)), n2p2's conventions.

For atom i with neighbours j, k (distances r_ij, r_ik, r_jk in Å, angle θ_ijk at i):

* G2 (radial)          Σ_j exp(−η (r_ij − r_s)²) f_c(r_ij)
* G3 (narrow angular)  2^{1−ζ} Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(−η [(r_ij−r_s)² + (r_ik−r_s)² + (r_jk−r_s)²])
                       f_c(r_ij) f_c(r_ik) f_c(r_jk)
* G9 (wide angular)    the same without the r_jk terms.

Element resolution: every radial function is evaluated once per neighbour element, every
angular one once per unordered pair of neighbour elements, so an atom's descriptor is

    [G2 functions × neighbour element S] + [G3/G9 functions × element pair S(S+1)/2]

(radial block first, element-major: column ``s·n_radial + f``; then the angular block, pair-major:
``S·n_radial + c·n_angular + f`` with pair c of elements (a ≤ b) in the order (0,0), (0,1), …,
(0,S−1), (1,1), …). Each function has its own cutoff radius (TorchANI uses 5.1 Å radial and 3.5 Å
angular: the triplet count grows as the sixth power of the angular cutoff).

Everything is computed from the pair list in torch — triplets are built from pairs with tensor
operations, no Python loop over atoms — so forces and stress come from the Potential's autograd
and the same code runs on CUDA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .base import HyperParameterError

TYPES = ("G2", "G3", "G9")
CUTOFF_FUNCTIONS = ("cos", "p2")


@dataclass(frozen=True)
class SymmetryFunction:
    """One symmetry function: ``type`` G2 | G3 | G9, ``eta`` Å⁻², ``cutoff`` Å, ``rs`` Å,
    and for the angular ones ``zeta`` (an integer ≥ 1) and ``lambda_`` (±1)."""
    type: str
    eta: float
    cutoff: float
    rs: float = 0.0
    zeta: int = 1
    lambda_: float = 1.0

    @property
    def angular(self) -> bool:
        return self.type != "G2"

    def as_dict(self) -> dict[str, Any]:
        """The plain mapping a config or a model file holds (``lambda`` spelt as in n2p2)."""
        values = asdict(self)
        if not self.angular:
            return {"type": self.type, "eta": self.eta, "rs": self.rs, "cutoff": self.cutoff}
        values["lambda"] = values.pop("lambda_")
        return values


def parse_function(spec: Mapping[str, Any], default_cutoff: float, where: str) -> SymmetryFunction:
    """A checked ``SymmetryFunction`` from ``{"type": "G2", "eta": 0.5, "rs": 0.0, "cutoff": 5.0}``
    or ``{"type": "G9", "eta": 0.01, "zeta": 4, "lambda": -1, "cutoff": 3.5}``; the cutoff
    defaults to the model's. ``where`` names the entry in error messages."""
    def fail(message: str) -> HyperParameterError:
        return HyperParameterError("symmetry_functions", f"{where}: {message}")

    if not isinstance(spec, Mapping):
        raise fail(f"must be a mapping like {{'type': 'G2', 'eta': 0.5}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise fail(f"type must be one of {TYPES}, got {kind!r}")
    allowed = {"type", "eta", "rs", "cutoff"} | ({"zeta", "lambda"} if kind != "G2" else set())
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise fail(f"unknown key(s) {unknown} for {kind} (allowed: {sorted(allowed)})")

    def number(key: str, default: float | None = None) -> float:
        value = spec.get(key, default)
        if value is None:
            raise fail(f"{kind} needs {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"{key} must be a number, got {value!r}")
        return float(value)

    eta, rs, cutoff = number("eta"), number("rs", 0.0), number("cutoff", default_cutoff)
    if eta < 0:
        raise fail(f"eta must be ≥ 0 Å⁻², got {eta}")
    if not 0 < cutoff <= default_cutoff:
        raise fail(f"cutoff must be in (0, {default_cutoff}] Å (the model's cutoff), got {cutoff}")
    if kind == "G2":
        return SymmetryFunction("G2", eta, cutoff, rs)
    zeta = spec.get("zeta", 1)
    if isinstance(zeta, float) and zeta.is_integer():
        zeta = int(zeta)
    # Integer ζ ≥ 1 keeps (1 + λ cos θ)^ζ twice differentiable where 1 + λ cos θ = 0
    # (collinear atoms): a fractional power would give an infinite force derivative there.
    if isinstance(zeta, bool) or not isinstance(zeta, int) or zeta < 1:
        raise fail(f"zeta must be an integer ≥ 1, got {zeta!r}")
    lam = number("lambda", 1.0)
    if lam not in (-1.0, 1.0):
        raise fail(f"lambda must be +1 or -1, got {lam}")
    return SymmetryFunction(kind, eta, cutoff, rs, zeta, lam)


def default_functions(cutoff: float, n_radial: int = 12, angular_cutoff: float | None = None,
                      n_angular_eta: int = 4, zetas: Sequence[int] = (1, 2, 4, 16),
                      r_lower: float = 1.0) -> list[SymmetryFunction]:
    """A set for a cutoff and nothing else to think about.

    Radial: the shifted grid of Imbalzano et al. (J. Chem. Phys. 148, 241730 (2018)): ``n_radial``
    Gaussians with centres r_s evenly spaced from ``r_lower`` to the cutoff − 0.5 Å and one width,
    η = 1 / (2 Δr²), Δr their spacing. Angular (G9): a centred grid, r_s = 0 and
    η = 1 / (2 r²) for ``n_angular_eta`` radii r from ``r_lower`` + 0.5 Å to the angular cutoff,
    each with ζ ∈ ``zetas`` and λ = ±1. The angular cutoff defaults to min(cutoff, 4 Å): the
    triplet count grows as its sixth power, and 4 Å holds the first two shells of most solids.
    """
    upper = cutoff - 0.5
    if upper <= r_lower:
        raise HyperParameterError("cutoff", f"must exceed {r_lower + 0.5} Å for the default "
                                            f"symmetry functions, got {cutoff}")
    spacing = (upper - r_lower) / (n_radial - 1)
    radial = [SymmetryFunction("G2", 1.0 / (2 * spacing**2), cutoff, r_lower + k * spacing)
              for k in range(n_radial)]
    angular_cutoff = min(cutoff, 4.0) if angular_cutoff is None else angular_cutoff
    radii = torch.linspace(r_lower + 0.5, angular_cutoff, n_angular_eta).tolist()
    angular = [SymmetryFunction("G9", 1.0 / (2 * r**2), angular_cutoff, 0.0, zeta, lam)
               for r in radii for zeta in zetas for lam in (1.0, -1.0)]
    return radial + angular


# -------------------------------------------------------------------------------------------
def cutoff_function(distance: torch.Tensor, cutoff: torch.Tensor, kind: str) -> torch.Tensor:
    """f_c(r) for r [..., F] and per-column cutoffs [F]; exactly 0 at and beyond the cutoff.

    cos: ½[cos(π r/r_c) + 1];  p2 (n2p2's polynomial): 1 − 10x³ + 15x⁴ − 6x⁵, x = r/r_c.
    Both vanish at r_c with their first derivative (p2 with the second too), so functions are
    smooth as neighbours cross the cutoff.
    """
    x = distance / cutoff
    inside = x < 1.0
    x = torch.where(inside, x, torch.zeros_like(x))  # keeps the gradient of the far side at 0
    if kind == "cos":
        value = 0.5 * (torch.cos(math.pi * x) + 1.0)
    else:
        value = 1.0 + x**3 * (x * (15.0 - 6.0 * x) - 10.0)
    return torch.where(inside, value, torch.zeros_like(value))


def gaussian(eta: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """exp(−η x²), its exponent held above −60 (e⁻⁶⁰ ≈ 9·10⁻²⁷).

    Why: with sharp Gaussians (η ≈ 20 Å⁻², as in ANI) most pairs give exp(−100…−500), which in
    float32 are denormal numbers, and x86 arithmetic on denormals is ~100× slower — it made the
    descriptor several times slower. The floor changes values by < 10⁻²⁶ and derivatives by as
    little, far below float64 round-off of any energy.
    """
    return torch.exp((-eta * shifted * shifted).clamp(min=-60.0))


def triplets(center: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unordered pair (a, b), a ≠ b, of directed edges that share their centre atom.

    center [E] int64 → (a [T], b [T]) edge indices; T = Σ_i n_i(n_i − 1)/2. Built with tensor
    operations (sort, bincount, repeat_interleave): no loop over atoms.
    """
    order = torch.argsort(center, stable=True)
    counts = torch.bincount(center, minlength=n_atoms)
    starts = torch.cumsum(counts, 0) - counts                   # first sorted slot of each centre
    rank = torch.arange(center.numel(), device=center.device) - starts[center[order]]
    partners = counts[center[order]] - rank - 1                 # later edges of the same centre
    first = torch.repeat_interleave(torch.arange(center.numel(), device=center.device), partners)
    block = torch.cumsum(partners, 0) - partners                # where each edge's block starts
    second = first + 1 + (torch.arange(first.numel(), device=center.device)
                          - torch.repeat_interleave(block, partners))
    return order[first], order[second]


def _unique_columns(keys: list[tuple]) -> tuple[list[tuple], list[int]]:
    """Distinct keys in first-seen order, and each key's position among them."""
    distinct: dict[tuple, int] = {}
    for key in keys:
        distinct.setdefault(key, len(distinct))
    return list(distinct), [distinct[key] for key in keys]


class _AngularGroup(nn.Module):
    """The G3 or the G9 functions, factorised for speed.

    Every function is (angular part: ζ, λ) × (radial part: η, r_s, r_c). The angular parts are
    computed per triplet for each distinct (ζ, λ) [T, U], the radial parts per edge for each
    distinct (η, r_s, r_c) [E, R]; their outer product is summed per (centre, element pair) in
    one index_add, and each function is one column of that [U·R] table. A grid of 4 η × 4 ζ ×
    2 λ is 8 angular and 4 radial columns instead of 32 of each.
    """

    def __init__(self, functions: list[SymmetryFunction]):
        super().__init__()
        self.narrow = bool(functions) and functions[0].type == "G3"
        angular, u = _unique_columns([(f.zeta, f.lambda_) for f in functions])
        radial, r = _unique_columns([(f.eta, f.rs, f.cutoff) for f in functions])
        self.n_functions, self.n_radial = len(functions), len(radial)
        self.register_buffer("zeta", torch.tensor([a[0] for a in angular], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("lambda_", torch.tensor([a[1] for a in angular], dtype=torch.float64),
                             persistent=False)
        for k, name in enumerate(("eta", "rs", "cutoff")):
            self.register_buffer(name, torch.tensor([g[k] for g in radial], dtype=torch.float64),
                                 persistent=False)
        self.register_buffer("columns", torch.tensor([a * len(radial) + b for a, b in zip(u, r)]),
                             persistent=False)
        self.single_cutoff = len({g[2] for g in radial}) == 1
        # 2^{1−ζ} of each table column (applied to the sums: cheaper than to every triplet)
        self.register_buffer("norm", torch.tensor([2.0 ** (1 - a[0]) for a in angular
                                                   for _ in radial], dtype=torch.float64),
                             persistent=False)
        # (1 + λ cos θ)^ζ by repeated squaring: which λ base and which ζ for each column
        self.lambdas = sorted({a[1] for a in angular})
        self.powers = [(self.lambdas.index(a[1]), int(a[0])) for a in angular]

    def radial_terms(self, length: torch.Tensor, kind: str) -> torch.Tensor:
        """[E] distances → [E, R]: exp(−η (r − r_s)²) f_c(r) for each distinct radial part."""
        eta, rs, cutoff = (x.to(length.dtype) for x in (self.eta, self.rs, self.cutoff))
        r = length[:, None]
        shifted = r - rs
        if self.single_cutoff:  # the usual case: one f_c column serves every function
            cutoff = cutoff[:1]
        return gaussian(eta, shifted) * cutoff_function(r, cutoff, kind)

    def forward(self, cos: torch.Tensor, pair_terms: torch.Tensor, segment: torch.Tensor,
                n_segments: int, presorted: bool) -> torch.Tensor:
        """cos [T], pair_terms [T, R] (radial parts of both edges, and of r_jk for G3),
        segment [T] (centre·n_pairs + element pair; non-decreasing when ``presorted``)
        → [n_segments, n_functions]."""
        angular = torch.stack(self.angular_powers(cos), dim=1)                 # [T, U]
        sums = segment_outer_sums(angular, pair_terms, segment, n_segments, presorted)
        return (sums * self.norm.to(sums.dtype)).index_select(1, self.columns)

    def angular_powers(self, cos: torch.Tensor) -> list[torch.Tensor]:
        """(1 + λ cos θ)^ζ for each distinct (ζ, λ), [T] each, by repeated squaring (a few
        multiplications instead of exp and log). The base is ≥ 0; where it is 0 (collinear
        atoms) integer powers keep every derivative finite (see parse_function)."""
        bases = [1.0 + lam * cos for lam in self.lambdas]
        squares: dict[tuple[int, int], torch.Tensor] = {}  # (base, 2^k) → base^(2^k)

        def power(base: int, zeta: int) -> torch.Tensor:
            result, bit = None, 1
            while bit <= zeta:
                if (base, bit) not in squares:
                    squares[(base, bit)] = (bases[base] if bit == 1 else
                                            squares[(base, bit // 2)] * squares[(base, bit // 2)])
                if zeta & bit:
                    result = squares[(base, bit)] if result is None else result * squares[(base, bit)]
                bit *= 2
            return result

        return [power(base, zeta) for base, zeta in self.powers]


def segment_outer_sums(left: torch.Tensor, right: torch.Tensor, segment: torch.Tensor,
                       n_segments: int, presorted: bool = False) -> torch.Tensor:
    """Σ_{t in segment s} left[t] ⊗ right[t] for every segment: [T, U], [T, R] → [S, U·R].

    Each segment's rows are padded into a block and the sums are one batched matmul
    (Lᵀ R per block), so the [T, U·R] table of outer products is never formed — 3× less
    memory traffic for U = 8, R = 4. Where padding would waste too much (a few atoms with far
    more triplets than the rest), the table is formed and summed with index_add instead.
    """
    n_rows = segment.numel()
    counts = torch.bincount(segment, minlength=n_segments)
    longest = int(counts.max()) if n_rows else 0
    if n_rows == 0 or n_segments * longest > 4 * n_rows:
        table = (left[:, :, None] * right[:, None, :]).flatten(1)
        sums = torch.zeros(n_segments, table.shape[1], dtype=table.dtype, device=table.device)
        return sums.index_add(0, segment, table)
    if not presorted:
        order = torch.argsort(segment, stable=True)
        segment, left, right = (x.index_select(0, order) for x in (segment, left, right))
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_rows, device=segment.device) - starts.index_select(0, segment)
    flat = segment * longest + slot                             # row in the padded blocks
    left_blocks = left.new_zeros(n_segments * longest, left.shape[1]).index_copy(
        0, flat, left).view(n_segments, longest, -1)
    right_blocks = right.new_zeros(n_segments * longest, right.shape[1]).index_copy(
        0, flat, right).view(n_segments, longest, -1)
    return torch.bmm(left_blocks.transpose(1, 2), right_blocks).flatten(1)


class SymmetryFunctionDescriptor(nn.Module):
    """Element-resolved symmetry functions of every atom (column order: module docstring).

    ``forward(species [N], pair_index [2, P], pair_vec [P, 3]) → [N, n_features]``. Pairs may
    reach beyond every cutoff (a Verlet list): they get exactly zero weight.
    """

    def __init__(self, n_species: int, functions: Sequence[SymmetryFunction],
                 cutoff_kind: str = "cos"):
        super().__init__()
        if cutoff_kind not in CUTOFF_FUNCTIONS:
            raise HyperParameterError("cutoff_function", f"must be one of {CUTOFF_FUNCTIONS}, "
                                                         f"got {cutoff_kind!r}")
        self.n_species, self.cutoff_kind = n_species, cutoff_kind
        self.n_pairs = n_species * (n_species + 1) // 2
        radial = [f for f in functions if not f.angular]
        narrow = [f for f in functions if f.type == "G3"]
        wide = [f for f in functions if f.type == "G9"]
        self.functions = radial + narrow + wide  # column order: G2, then G3, then G9
        self.n_radial = len(radial)
        self.n_angular = len(narrow) + len(wide)
        self.n_features = n_species * self.n_radial + self.n_pairs * self.n_angular
        if self.n_features == 0:
            raise HyperParameterError("symmetry_functions", "must hold at least one function")
        self.radial = _AngularGroup(radial)  # reused for its radial parts: η, r_s, r_c
        self.register_buffer("radial_columns", torch.tensor(
            _unique_columns([(f.eta, f.rs, f.cutoff) for f in radial])[1], dtype=torch.long),
            persistent=False)
        self.radial_identity = self.radial_columns.tolist() == list(range(len(radial)))
        self.groups = nn.ModuleList(_AngularGroup(g) for g in (narrow, wide) if g)
        self.angular_reach = max((f.cutoff for f in narrow + wide), default=0.0)
        # element pair (a, b) → its channel, for the angular block
        pair_channel = torch.zeros(n_species, n_species, dtype=torch.long)
        channel = 0
        for a in range(n_species):
            for b in range(a, n_species):
                pair_channel[a, b] = pair_channel[b, a] = channel
                channel += 1
        self.register_buffer("pair_channel", pair_channel, persistent=False)

    # ---------------------------------------------------------------------------------------
    def forward(self, species: torch.Tensor, pair_index: torch.Tensor,
                pair_vec: torch.Tensor) -> torch.Tensor:
        n_atoms = species.shape[0]
        assert pair_index.shape[0] == 2 and pair_vec.shape == (pair_index.shape[1], 3)
        distance = torch.linalg.vector_norm(pair_vec, dim=-1)    # > 0: structure_checks
        blocks = []
        if self.n_radial:
            blocks.append(self._radial(species, pair_index, distance, n_atoms))
        if self.n_angular:
            blocks.append(self._angular(species, pair_index, pair_vec, distance, n_atoms))
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]

    def _radial(self, species, pair_index, distance, n_atoms) -> torch.Tensor:
        """[N, S·n_radial]: each pair counts for i (as a neighbour of j's element) and for j."""
        values = self.radial.radial_terms(distance, self.cutoff_kind)
        if not self.radial_identity:
            values = values.index_select(1, self.radial_columns)
        i, j = pair_index
        out = torch.zeros(n_atoms * self.n_species, self.n_radial, dtype=values.dtype,
                          device=values.device)
        out = out.index_add(0, i * self.n_species + species.index_select(0, j), values)
        out = out.index_add(0, j * self.n_species + species.index_select(0, i), values)
        return out.reshape(n_atoms, self.n_species * self.n_radial)

    def _angular(self, species, pair_index, pair_vec, distance, n_atoms) -> torch.Tensor:
        """[N, n_pairs·n_angular]: sums over the triplets (i; j, k) within the angular cutoffs."""
        near = torch.nonzero(distance.detach() < self.angular_reach).flatten()
        # directed edges i→j (vector r) and j→i (−r) of the near pairs
        i, j = pair_index.index_select(1, near)
        center, neighbour = torch.cat([i, j]), torch.cat([j, i])
        a, b = triplets(center, n_atoms)
        near_vec = pair_vec.index_select(0, near)
        near_length = distance.index_select(0, near)
        # One table per edge — vector, length and every group's radial parts — gathered once
        # for each side of the triplets (fewer, larger gathers than one per quantity).
        radial = [group.radial_terms(near_length, self.cutoff_kind) for group in self.groups]
        per_pair = torch.cat([near_vec, near_length[:, None], *radial], dim=1)
        flip = torch.ones(per_pair.shape[1], dtype=per_pair.dtype, device=per_pair.device)
        flip[:3] = -1.0
        per_edge = torch.cat([per_pair, per_pair * flip])
        side_a, side_b = per_edge.index_select(0, a), per_edge.index_select(0, b)
        vec_a, vec_b = side_a[:, :3], side_b[:, :3]
        cos = (vec_a * vec_b).sum(dim=1) / (side_a[:, 3] * side_b[:, 3])
        if self.n_species == 1:  # triplets come out grouped by centre, in centre order
            segment, presorted = center.index_select(0, a), True
        else:
            channel = self.pair_channel[species.index_select(0, neighbour.index_select(0, a)),
                                        species.index_select(0, neighbour.index_select(0, b))]
            segment, presorted = center.index_select(0, a) * self.n_pairs + channel, False
        blocks, column = [], 4
        for group in self.groups:
            width = group.n_radial
            terms = side_a[:, column:column + width] * side_b[:, column:column + width]
            column += width
            if group.narrow:  # G3 also weighs the third side, r_jk = |r_ik − r_ij|
                third = torch.linalg.vector_norm(vec_b - vec_a, dim=1)
                terms = terms * group.radial_terms(third, self.cutoff_kind)
            blocks.append(group(cos, terms, segment, n_atoms * self.n_pairs, presorted))
        out = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return out.reshape(n_atoms, self.n_pairs * self.n_angular)
