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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..base import HyperParameterError
from ..blocks import Float64Constants
from .symmetry_kernels import AngularPowers, radial_terms, segment_outer_sums

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


DEFAULT_SET_KEYS = ("n_radial", "angular_cutoff", "n_angular_eta", "zetas", "r_lower")


def default_functions_from(spec: Mapping[str, Any], cutoff: float) -> list[SymmetryFunction]:
    """``default_functions`` with the arguments of a config mapping, checked: e.g.
    ``{"n_radial": 16, "angular_cutoff": 5.0, "n_angular_eta": 6}`` (any of
    ``DEFAULT_SET_KEYS``; the rest keep their defaults)."""
    def fail(message: str) -> HyperParameterError:
        return HyperParameterError("symmetry_functions", message)

    unknown = sorted(set(spec) - set(DEFAULT_SET_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {unknown} for the default set (allowed: "
                   f"{list(DEFAULT_SET_KEYS)}; a list of functions is the other form)")
    arguments: dict[str, Any] = {}
    for key in ("n_radial", "n_angular_eta"):
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise fail(f"{key} must be an integer ≥ 2, got {value!r}")
            arguments[key] = value
    for key in ("angular_cutoff", "r_lower"):
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0 < value <= cutoff:
                raise fail(f"{key} must be a length in (0, {cutoff}] Å, got {value!r}")
            arguments[key] = float(value)
    if "zetas" in spec:
        zetas = spec["zetas"]
        if isinstance(zetas, (str, bytes)) or not isinstance(zetas, Sequence) or not zetas or \
                any(isinstance(z, bool) or not isinstance(z, int) or z < 1 for z in zetas):
            raise fail(f"zetas must be a list of integers ≥ 1, got {zetas!r}")
        arguments["zetas"] = tuple(zetas)
    return default_functions(cutoff, **arguments)


# -------------------------------------------------------------------------------------------
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


class _AngularGroup(Float64Constants):
    """The G3 or the G9 functions, factorised for speed.

    Every function is (angular part: ζ, λ) × (radial part: η, r_s, r_c). The angular parts are
    computed per triplet for each distinct (ζ, λ) [T, U], the radial parts per edge for each
    distinct (η, r_s, r_c) [E, R]; their outer product is summed per (centre, element pair),
    and each function is one column of that [U·R] table. A grid of 4 η × 4 ζ × 2 λ is 8
    angular and 4 radial columns instead of 32 of each.
    """

    def __init__(self, functions: list[SymmetryFunction]):
        super().__init__()
        self.narrow = bool(functions) and functions[0].type == "G3"
        angular, u = _unique_columns([(f.zeta, f.lambda_) for f in functions])
        radial, r = _unique_columns([(f.eta, f.rs, f.cutoff) for f in functions])
        self.n_functions, self.n_radial = len(functions), len(radial)
        # η, r_s, r_c and the 2^{1−ζ} norms stay float64 whatever the model's dtype
        for k, name in enumerate(("eta", "rs", "cutoff")):
            self.float64_constant(name, torch.tensor([g[k] for g in radial], dtype=torch.float64))
        self.register_buffer("columns", torch.tensor([a * len(radial) + b for a, b in zip(u, r)]),
                             persistent=False)
        self.single_cutoff = len({g[2] for g in radial}) == 1
        # 2^{1−ζ} of each table column (applied to the sums: cheaper than to every triplet)
        self.float64_constant("norm", torch.tensor([2.0 ** (1 - a[0]) for a in angular
                                                    for _ in radial], dtype=torch.float64))
        self.powers = AngularPowers([int(a[0]) for a in angular], [a[1] for a in angular])

    def radial_terms(self, length: torch.Tensor, kind: str) -> torch.Tensor:
        """[E] distances → [E, R]: exp(−η (r − r_s)²) f_c(r) for each distinct radial part."""
        eta, rs, cutoff = (self.constant(name, length) for name in ("eta", "rs", "cutoff"))
        if self.single_cutoff:  # the usual case: one f_c column serves every function
            cutoff = cutoff[:1]
        return radial_terms(length, eta, rs, cutoff, kind)

    def finish(self, sums: torch.Tensor) -> torch.Tensor:
        """[S, U·R] table of sums → [S, n_functions]: the 2^{1−ζ} factors, each function's column."""
        return (sums * self.constant("norm", sums)).index_select(1, self.columns)


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
        a, b = triplets(center, n_atoms)                # grouped by centre, in centre order
        segment, n_segments = center.index_select(0, a), n_atoms * self.n_pairs
        if self.n_species > 1:  # one sum per (centre, element pair): regroup the triplets
            channel = self.pair_channel[species.index_select(0, neighbour.index_select(0, a)),
                                        species.index_select(0, neighbour.index_select(0, b))]
            segment = segment * self.n_pairs + channel
            order = torch.argsort(segment, stable=True)
            a, b, segment = (x.index_select(0, order) for x in (a, b, segment))
        near_vec = pair_vec.index_select(0, near)
        near_length = distance.index_select(0, near)
        # Each edge's unit vector and radial parts, gathered for both sides of the triplets
        # (one gather per table: slicing a shared table would cost a full-size zero tensor
        # per slice in the backward pass).
        unit = near_vec / near_length[:, None]
        edge_unit = torch.cat([unit, -unit])
        cos = (edge_unit.index_select(0, a) * edge_unit.index_select(0, b)).sum(dim=1)
        blocks = []
        for group in self.groups:
            radial = group.radial_terms(near_length, self.cutoff_kind)
            edge_radial = torch.cat([radial, radial])
            terms = edge_radial.index_select(0, a) * edge_radial.index_select(0, b)
            if group.narrow:  # G3 also weighs the third side, r_jk = |r_ik − r_ij|
                edge_vec = torch.cat([near_vec, -near_vec])
                third = torch.linalg.vector_norm(edge_vec.index_select(0, b)
                                                 - edge_vec.index_select(0, a), dim=1)
                terms = terms * group.radial_terms(third, self.cutoff_kind)
            angular = group.powers(cos)
            blocks.append(group.finish(segment_outer_sums(angular, terms, segment, n_segments)))
        out = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        return out.reshape(n_atoms, self.n_pairs * self.n_angular)

