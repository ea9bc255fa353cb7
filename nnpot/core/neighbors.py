"""Neighbor lists: every pair (i, j, S) with |R[j] − R[i] + S·cell| < cutoff.

One entry point, several backends behind it; the rest of nnpot never knows which one ran.

Conventions (shared with ``ase.neighborlist.neighbor_list('ijS', ...)``):

* ``edge_index`` [2, E] int64, row 0 = centre i, row 1 = neighbour j; ``shifts`` [E, 3] int64, so
  that the pair vector is ``r_ij = R[j] − R[i] + shifts @ cell`` (cell rows are lattice vectors).
* Both directions are present. An atom is never its own neighbour at zero shift, but it is its
  own neighbour through a periodic image when the cell is shorter than the cutoff.
* Shifts refer to the positions as given: atoms outside the cell need no wrapping.

Internally every backend's result is reduced to the *canonical half list* (:func:`neighbor_pairs`):
each undirected pair once, oriented so that i < j (or, for an atom and its own image, so that the
first non-zero shift component is positive), sorted by (i, j, shift). The full list is that half
list followed by its mirror image. The sort makes every backend return the same order, so results
are bitwise reproducible whichever backend or Verlet skin produced the list.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence

BACKENDS = ("auto", "vesin", "matscipy", "torch", "torch_cluster")


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def neighbor_list(
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | Sequence[bool],
    cutoff: float,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All directed pairs within ``cutoff``.

    Args:
        positions: [N, 3] Cartesian positions, Å (numpy array or torch tensor).
        cell: [3, 3] lattice vectors as rows, Å; ``None`` or zeros for a molecule.
        pbc: periodicity, one bool or three.
        cutoff: radius, Å (> 0).
        backend: ``"auto"``, ``"vesin"``, ``"matscipy"``, ``"torch"`` or ``"torch_cluster"``.

    Returns:
        ``edge_index`` [2, E] int64 and ``shifts`` [E, 3] int64, on the device of ``positions``
        (CPU for numpy input).
    """
    pair_index, pair_shifts = neighbor_pairs(positions, cell, pbc, cutoff, backend)
    return mirror_pairs(pair_index, pair_shifts)


def neighbor_pairs(
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | Sequence[bool],
    cutoff: float,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical half list: each undirected pair once (see the module docstring).

    Same arguments as :func:`neighbor_list`. Returns ``pair_index`` [2, P] and ``pair_shifts``
    [P, 3], int64, with P = E / 2.
    """
    pos, cell_t, pbc_t, device = _validated(positions, cell, pbc, cutoff)
    if backend not in BACKENDS:
        raise ValueError(f"unknown neighbor-list backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = _auto_backend(device, pbc_t)
    if pos.shape[0] == 0:
        empty = torch.zeros((2, 0), dtype=torch.long, device=device)
        return empty, torch.zeros((0, 3), dtype=torch.long, device=device)

    if backend == "vesin":
        i, j, s = _vesin_half(pos, cell_t, pbc_t, cutoff)
        i, j, s = _orient(i, j, s)
    elif backend == "matscipy":
        i, j, s = _select_half(*_matscipy_full(pos, cell_t, pbc_t, cutoff))
    elif backend == "torch":
        i, j, s = _select_half(*_torch_full(pos.to(device), cell_t.to(device), pbc_t, cutoff))
    else:  # torch_cluster
        i, j, s = _select_half(*_torch_cluster_full(pos.to(device), pbc_t, cutoff))
    i, j, s = _sorted(i.to(device), j.to(device), s.to(device), pos.shape[0])
    return torch.stack([i, j]), s


def mirror_pairs(
    pair_index: torch.Tensor, pair_shifts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Half list → full directed list: the pairs, then the same pairs reversed (j, i, −S)."""
    edge_index = torch.cat([pair_index, pair_index.flip(0)], dim=1)
    shifts = torch.cat([pair_shifts, -pair_shifts], dim=0)
    return edge_index, shifts


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _validated(positions, cell, pbc, cutoff):
    """Convert and check the inputs; returns float64 CPU/device tensors and the output device."""
    device = positions.device if isinstance(positions, torch.Tensor) else torch.device("cpu")
    pos = torch.as_tensor(positions).detach().to(dtype=torch.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {tuple(pos.shape)}")
    if not bool(torch.isfinite(pos).all()):
        bad = torch.nonzero(~torch.isfinite(pos).all(dim=1)).flatten()[:5].tolist()
        raise ValueError(f"positions contain NaN or inf (atoms {bad})")
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}")
    pbc_t = torch.as_tensor(np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy())
    if cell is None:
        cell_t = torch.zeros(3, 3, dtype=torch.float64)
    else:
        cell_t = torch.as_tensor(np.asarray(cell.cpu() if isinstance(cell, torch.Tensor) else cell,
                                            dtype=np.float64))
        if cell_t.shape != (3, 3):
            raise ValueError(f"cell must have shape [3, 3], got {tuple(cell_t.shape)}")
        if not bool(torch.isfinite(cell_t).all()):
            raise ValueError("cell contains NaN or inf")
    cell_t = cell_t.to(pos.device)
    if pbc_t.any():
        _check_periodic_vectors(cell_t, pbc_t)
    return pos, cell_t, pbc_t, device


def _check_periodic_vectors(cell: torch.Tensor, pbc: torch.Tensor) -> None:
    """The periodic lattice vectors must be non-zero and linearly independent."""
    periodic = cell[pbc.to(cell.device)]
    norms = periodic.norm(dim=1)
    if bool((norms < 1e-8).any()):
        raise ValueError(f"singular cell: a periodic lattice vector is zero (cell={cell.tolist()}, "
                         f"pbc={pbc.tolist()})")
    # Gram determinant of the periodic vectors, relative to their lengths: 0 = dependent.
    unit = periodic / norms[:, None]
    gram_det = torch.linalg.det(unit @ unit.T)
    if float(gram_det) < 1e-12:
        raise ValueError(f"singular cell: the periodic lattice vectors are linearly dependent "
                         f"(cell={cell.tolist()}, pbc={pbc.tolist()})")


def _auto_backend(device: torch.device, pbc: torch.Tensor) -> str:
    if device.type == "cuda":
        if not bool(pbc.any()) and importlib.util.find_spec("torch_cluster") is not None:
            return "torch_cluster"
        return "torch"  # keeps a GPU run on the GPU
    return "vesin"


# --------------------------------------------------------------------------------------------
# Canonical half list
# --------------------------------------------------------------------------------------------
def _is_forward(i: torch.Tensor, j: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """True where (i, j, S) is the canonical direction of its pair."""
    s0, s1, s2 = s.unbind(dim=1)
    shift_positive = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
    return (i < j) | ((i == j) & shift_positive)


def _orient(i, j, s):
    """Flip each pair of a half list into its canonical direction."""
    forward = _is_forward(i, j, s)
    return torch.where(forward, i, j), torch.where(forward, j, i), torch.where(forward[:, None], s, -s)


def _select_half(i, j, s):
    """Keep the canonical direction of each pair of a full list."""
    keep = _is_forward(i, j, s)
    return i[keep], j[keep], s[keep]


def _sorted(i, j, s, n_atoms: int):
    """Sort pairs by (i, j, shift) so every backend returns the same order."""
    if i.numel() == 0:
        return i, j, s
    offset = int(s.abs().max())
    base = 2 * offset + 1
    if n_atoms * n_atoms * base**3 < 2**62:  # one combined key fits in int64
        code = ((s[:, 0] + offset) * base + (s[:, 1] + offset)) * base + (s[:, 2] + offset)
        order = torch.argsort((i * n_atoms + j) * base**3 + code)
    else:  # successive stable sorts, least significant key first
        order = torch.arange(i.numel(), device=i.device)
        for key in (s[:, 2], s[:, 1], s[:, 0], j, i):
            order = order[torch.argsort(key[order], stable=True)]
    return i[order], j[order], s[order]


# --------------------------------------------------------------------------------------------
# Backends. Each returns (i, j, S) as int64 torch tensors, full or half as named.
# --------------------------------------------------------------------------------------------
def _vesin_half(pos, cell, pbc, cutoff):
    import vesin

    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, s = calculator.compute(pos.cpu().numpy(), cell.cpu().numpy(), pbc.numpy(), "ijS")
    # vesin returns uint64 indices; int64 is what torch indexing wants.
    return (torch.from_numpy(i.astype(np.int64)), torch.from_numpy(j.astype(np.int64)),
            torch.from_numpy(s.astype(np.int64)))


def _matscipy_full(pos, cell, pbc, cutoff):
    from matscipy.neighbours import neighbour_list

    positions = pos.cpu().numpy()
    box = _completed_cell(pos, cell, pbc, cutoff).cpu().numpy()
    # matscipy bins inside the box: shift non-periodic coordinates into it (pairs do not change,
    # shifts along non-periodic directions are zero).
    inside = positions.copy()
    for k in np.flatnonzero(~pbc.numpy()):
        direction = box[k] / np.linalg.norm(box[k])
        inside -= (inside @ direction).min() * direction - cutoff * direction
    i, j, s = neighbour_list("ijS", positions=inside, cell=box, pbc=pbc.numpy(), cutoff=float(cutoff))
    return (torch.from_numpy(i.astype(np.int64)), torch.from_numpy(j.astype(np.int64)),
            torch.from_numpy(s.astype(np.int64)))


def _completed_cell(pos, cell, pbc, cutoff) -> torch.Tensor:
    """The cell with each non-periodic vector replaced by a long vector orthogonal to the others.

    The replacement is longer than the system's extent plus twice the cutoff, so no periodic
    image along it is ever within the cutoff: the pairs are those of the open boundary.
    """
    extent = float((pos.max(dim=0).values - pos.min(dim=0).values).norm()) if len(pos) else 0.0
    length = extent + 2.0 * cutoff + 1.0
    periodic = [cell[k] for k in range(3) if pbc[k]]
    # Orthonormal directions spanning the complement of the periodic vectors.
    if len(periodic) == 0:
        complement = list(torch.eye(3, dtype=cell.dtype, device=cell.device))
    elif len(periodic) == 1:
        a = periodic[0] / periodic[0].norm()
        trial = torch.eye(3, dtype=cell.dtype, device=cell.device)[int(torch.argmin(a.abs()))]
        b = torch.linalg.cross(a, trial)
        b = b / b.norm()
        complement = [b, torch.linalg.cross(a, b)]
    elif len(periodic) == 2:
        n = torch.linalg.cross(periodic[0], periodic[1])
        complement = [n / n.norm()]
    else:
        complement = []
    rows, extra = [], iter(complement)
    for k in range(3):
        rows.append(cell[k] if pbc[k] else next(extra) * length)
    completed = torch.stack(rows)
    if torch.linalg.det(completed) < 0:  # keep a right-handed cell (matscipy prefers it)
        k = int(torch.nonzero(~pbc)[0]) if bool((~pbc).any()) else None
        if k is not None:
            completed[k] = -completed[k]
    return completed


def _torch_full(pos, cell, pbc, cutoff):
    """Cell list (binning) in pure torch: vectorised, O(N), stays on the input's device.

    1. Wrap atoms into the cell along periodic directions.
    2. Add the periodic images that lie within ``cutoff`` of the cell ("ghosts").
    3. Bin centres and ghosts into cubes of edge ``cutoff``; each centre meets the ghosts of its
       27 surrounding bins (found by binary search in the sorted bin ids, so empty space costs
       nothing), and the pairs closer than ``cutoff`` are kept.
    """
    device = pos.device
    pbc = pbc.to(device)
    box = _completed_cell(pos, cell, pbc, cutoff)
    frac = pos @ torch.linalg.inv(box)
    wrap = torch.where(pbc, torch.floor(frac), torch.zeros_like(frac))
    frac = frac - wrap
    pos_w = pos - wrap @ box

    # Distance between opposite faces of the cell along each lattice direction.
    volume = torch.linalg.det(box).abs()
    heights = volume / torch.linalg.cross(box[[1, 2, 0]], box[[2, 0, 1]]).norm(dim=1)
    n_images = torch.where(pbc, torch.ceil(cutoff / heights), torch.zeros_like(heights)).long()
    ranges = [torch.arange(-int(n), int(n) + 1, device=device) for n in n_images]
    image_shifts = torch.cartesian_prod(*ranges).reshape(-1, 3)  # [K, 3]

    # Ghosts: images whose fractional coordinates lie within the cutoff's reach of the cell.
    pad = cutoff / heights
    ghost_frac = frac[None, :, :] + image_shifts[:, None, :]  # [K, N, 3]
    near = ((ghost_frac >= -pad) & (ghost_frac < 1 + pad)) | ~pbc
    keep_k, keep_n = torch.nonzero(near.all(dim=-1), as_tuple=True)
    ghost_atom = keep_n
    ghost_shift = image_shifts[keep_k]
    ghost_pos = pos_w[keep_n] + ghost_shift.to(pos.dtype) @ box

    # Bin ids of ghosts (sorted) and centres.
    origin = ghost_pos.min(dim=0).values
    ghost_bin = torch.floor((ghost_pos - origin) / cutoff).long()
    centre_bin = torch.floor((pos_w - origin) / cutoff).long()
    n_bins = ghost_bin.max(dim=0).values + 1

    def linear(b):
        return (b[..., 0] * n_bins[1] + b[..., 1]) * n_bins[2] + b[..., 2]

    ghost_id = linear(ghost_bin)
    order = torch.argsort(ghost_id)
    unique_ids, counts = torch.unique_consecutive(ghost_id[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts

    offsets = torch.cartesian_prod(*[torch.arange(-1, 2, device=device)] * 3)  # [27, 3]
    around = centre_bin[:, None, :] + offsets[None]  # [N, 27, 3]
    valid = ((around >= 0) & (around < n_bins)).all(dim=-1)
    around_id = linear(around.clamp(min=0))
    slot = torch.searchsorted(unique_ids, around_id).clamp(max=len(unique_ids) - 1)
    found = valid & (unique_ids[slot] == around_id)
    count = torch.where(found, counts[slot], 0).flatten()
    start = torch.where(found, starts[slot], 0).flatten()

    # Expand (centre, bin) → (centre, ghost) without a Python loop.
    centre = torch.arange(pos.shape[0], device=device).repeat_interleave(27).repeat_interleave(count)
    first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    within = torch.arange(int(count.sum()), device=device) - first
    ghost = order[torch.repeat_interleave(start, count) + within]

    distance2 = (ghost_pos[ghost] - pos_w[centre]).pow(2).sum(dim=1)
    j = ghost_atom[ghost]
    s_img = ghost_shift[ghost]
    self_pair = (j == centre) & (s_img == 0).all(dim=1)
    keep = (distance2 < cutoff * cutoff) & ~self_pair
    i, j, s_img = centre[keep], j[keep], s_img[keep]
    # Back to the unwrapped positions: R_w = R − w·cell, so S = s + w_i − w_j.
    s = s_img + wrap[i].long() - wrap[j].long()
    return i, j, s


def _torch_cluster_full(pos, pbc, cutoff):
    if bool(pbc.any()):
        raise ValueError("the torch_cluster backend handles non-periodic systems only "
                         "(pbc all False); use backend='torch' or 'vesin' for periodic cells")
    try:
        from torch_cluster import radius_graph
    except ImportError as error:
        raise ValueError("backend='torch_cluster' needs the optional torch-cluster package: "
                         "pip install --no-build-isolation torch-cluster") from error
    edges = radius_graph(pos, r=float(cutoff), loop=False, max_num_neighbors=pos.shape[0])
    j, i = edges  # torch_cluster's flow is source → target: row 0 = neighbour, row 1 = centre
    d2 = (pos[j] - pos[i]).pow(2).sum(dim=1)
    keep = d2 < cutoff * cutoff  # radius_graph includes the boundary; ASE does not
    i, j = i[keep], j[keep]
    return i, j, torch.zeros((i.numel(), 3), dtype=torch.long, device=pos.device)
