"""Training data: extxyz frames → labelled graphs, cached once in HDF5, read back lazily.

The cache file holds every frame's atoms, cell, neighbour pairs and labels as flat arrays with
offsets; it is keyed by the file's content (SHA-256), the cutoff and the label keys, so a second
run starts in seconds and a changed file is never read stale. Training reads frames from it one
by one, so a data set larger than memory still trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import torch
from ase import Atoms
from tqdm import tqdm

from ..core.graph import AtomicGraph, checked_pairs
from ..core.structure_checks import StructureError
from .config import KeysConfig
from .frames import DataError, attach_labels, available_keys, frame_labels, iter_frames, label_arrays

CACHE_FORMAT = 3  # 3: written in chunks (resizable datasets)


# -------------------------------------------------------------------------------------------
# The HDF5 graph cache
# -------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path_for(path: str | Path, cutoff: float, keys: KeysConfig, cache_dir: str | Path,
                   sha256: str | None = None) -> Path:
    sha256 = sha256 or file_sha256(path)
    key_digest = hashlib.sha256(json.dumps(asdict(keys), sort_keys=True).encode()).hexdigest()[:8]
    name = f"{Path(path).stem}-{sha256[:16]}-rc{cutoff:g}-k{key_digest}-v{CACHE_FORMAT}.h5"
    return Path(cache_dir) / name


class _ChunkWriter:
    """Collects per-frame arrays and appends them, a chunk at a time, to resizable HDF5 datasets
    (so building the cache needs memory for one chunk, not for the whole file)."""

    # name → (dtype, shape of one row, growing axis, one row per frame? else per atom or pair)
    LAYOUT = {
        "numbers": (np.int64, (), 0, False), "positions": (np.float64, (3,), 0, False),
        "forces": (np.float64, (3,), 0, False), "pair_index": (np.int64, (2,), 1, False),
        "pair_shifts": (np.int64, (3,), 0, False),
        "cell": (np.float64, (3, 3), 0, True), "pbc": (np.bool_, (3,), 0, True),
        "energy": (np.float64, (), 0, True), "stress": (np.float64, (6,), 0, True),
        "has_forces": (np.bool_, (), 0, True), "has_stress": (np.bool_, (), 0, True),
        "group": (h5py.string_dtype(), (), 0, True),
    }

    CHUNK_ROWS = 4096  # HDF5 chunk length along the growing axis

    def __init__(self, h5: h5py.File, chunk_frames: int = 512):
        self.h5, self.chunk_frames = h5, chunk_frames
        self.pending: dict[str, list] = {name: [] for name in self.LAYOUT}
        for name, (dtype, row, axis, _) in self.LAYOUT.items():
            shape = list(row)
            shape.insert(axis, 0)
            maxshape, chunks = list(shape), list(shape)
            maxshape[axis] = None
            chunks[axis] = self.CHUNK_ROWS
            h5.create_dataset(name, shape=tuple(shape), maxshape=tuple(maxshape), dtype=dtype,
                              chunks=tuple(chunks))

    def add(self, **rows) -> None:
        for name, value in rows.items():
            self.pending[name].append(value)
        if len(self.pending["energy"]) >= self.chunk_frames:
            self.flush()

    def flush(self) -> None:
        for name, (dtype, _, axis, per_frame) in self.LAYOUT.items():
            values = self.pending[name]
            if not values:
                continue
            block = (np.asarray(values, dtype=dtype) if per_frame
                     else np.concatenate(values, axis=axis).astype(dtype, copy=False))
            dataset = self.h5[name]
            old = dataset.shape[axis]
            dataset.resize(old + block.shape[axis], axis=axis)
            index = [slice(None)] * dataset.ndim
            index[axis] = slice(old, None)
            dataset[tuple(index)] = block
            values.clear()


def build_cache(path: str | Path, cutoff: float, keys: KeysConfig, cache_dir: str | Path,
                backend: str = "auto", progress: bool = True, chunk_frames: int = 512) -> Path:
    """Return the cache file of ``path``, building it first if needed (atomically).

    Frames are read, turned into graphs and written ``chunk_frames`` at a time, so the file may
    be larger than memory.
    """
    sha256 = file_sha256(path)
    target = cache_path_for(path, cutoff, keys, cache_dir, sha256)
    if target.is_file():
        problem = cache_problem(target, sha256)
        if problem is None:
            return target
        warnings.warn(f"graph cache {target} is damaged ({problem}); rebuilding it", stacklevel=2)
        target.unlink()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        with h5py.File(tmp, "w") as h5:
            writer = _ChunkWriter(h5, chunk_frames)
            atom_counts, pair_counts, frame0_keys = [], [], []  # per frame: small even for 10⁶
            for index, atoms in enumerate(tqdm(iter_frames(path), desc=f"graphs of {Path(path).name}",
                                               unit=" frames", disable=not progress, leave=False)):
                where = f"{path}, frame {index}"
                labels = frame_labels(atoms, keys, where)
                pairs, shifts = frame_pairs(atoms, cutoff, backend, where)
                if index == 0:
                    frame0_keys = available_keys(atoms)
                writer.add(
                    numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array,
                    pbc=atoms.pbc, **label_arrays(labels, len(atoms)),
                    group=str(atoms.info.get(keys.group, "")),
                    pair_index=pairs.numpy(), pair_shifts=shifts.numpy())
                atom_counts.append(len(atoms))
                pair_counts.append(pairs.shape[1])
            writer.flush()
            h5["atom_ptr"] = np.concatenate([[0], np.cumsum(atom_counts)]).astype(np.int64)
            h5["pair_ptr"] = np.concatenate([[0], np.cumsum(pair_counts)]).astype(np.int64)
            h5.attrs.update({"source": str(Path(path).resolve()), "sha256": sha256,
                             "cutoff": cutoff, "keys": json.dumps(asdict(keys)),
                             "format": CACHE_FORMAT, "n_frames": len(atom_counts),
                             "frame0_keys": json.dumps(frame0_keys)})
        with open(tmp, "rb+") as f:  # on disk before the rename: a crash leaves no half cache
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def frame_pairs(atoms: Atoms, cutoff: float, backend: str, where: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked half pair list of one frame; a structure no physics allows is a DataError
    naming ``where`` (file and frame)."""
    try:
        return checked_pairs(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, cutoff,
                             backend, where)
    except StructureError as error:
        raise DataError(str(error)) from None
    except ValueError as error:
        raise DataError(f"{where}: {error}") from None


def cache_problem(cache_file: Path, sha256: str) -> str | None:
    """What is wrong with a cache file (None when it is whole and matches ``sha256``).

    A cache that cannot be opened, comes from another format or file, or whose arrays do not
    have the lengths its offsets promise is never trusted: the caller rebuilds it.
    """
    try:
        with h5py.File(cache_file, "r") as h5:
            if h5.attrs.get("format") != CACHE_FORMAT or h5.attrs.get("sha256") != sha256:
                return "another format or source file"
            n_frames = int(h5.attrs["n_frames"])
            atom_ptr, pair_ptr = h5["atom_ptr"][:], h5["pair_ptr"][:]
            if len(atom_ptr) != n_frames + 1 or len(pair_ptr) != n_frames + 1:
                return "frame offsets of the wrong length"
            lengths = {"atom": int(atom_ptr[-1]), "pair": int(pair_ptr[-1]), "frame": n_frames}
            for name, (_, row, axis, per_frame) in _ChunkWriter.LAYOUT.items():
                kind = "frame" if per_frame else ("pair" if name.startswith("pair") else "atom")
                shape = list(row)
                shape.insert(axis, lengths[kind])
                if h5[name].shape != tuple(shape):
                    return f"{name} has shape {h5[name].shape}, expected {tuple(shape)}"
    except (OSError, KeyError, ValueError, TypeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


class GraphDataset(torch.utils.data.Dataset):
    """Labelled graphs read lazily from a cache file (all frames, or those in ``indices``).

    Each item is an ``AtomicGraph`` with labels: ``energy`` [1] eV, ``forces`` [N, 3] eV/Å,
    ``stress`` [1, 6] eV/Å³ (ASE Voigt), ``has_forces`` [1], ``has_stress`` [1] (bool).
    """

    def __init__(self, cache_file: str | Path, indices: Sequence[int] | None = None):
        self.cache_file = str(cache_file)
        with h5py.File(self.cache_file, "r") as h5:
            self.n_frames = int(h5.attrs["n_frames"])
            self.source = str(h5.attrs["source"])
            self.sha256 = str(h5.attrs["sha256"])
            self.frame0_keys = json.loads(h5.attrs["frame0_keys"])
            self.atom_ptr = h5["atom_ptr"][:]
            self.pair_ptr = h5["pair_ptr"][:]
        self.indices = np.arange(self.n_frames) if indices is None else np.asarray(indices)
        self._h5 = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):  # an open HDF5 handle cannot cross a process boundary
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def subset(self, indices: Sequence[int]) -> GraphDataset:
        """A dataset over some of this dataset's items (positions in this dataset)."""
        sub = GraphDataset.__new__(GraphDataset)
        sub.__dict__.update(self.__getstate__())
        sub.indices = self.indices[np.asarray(indices, dtype=np.int64)]
        return sub

    def arrays(self, name: str) -> np.ndarray:
        """A whole per-frame or per-atom array of the cache (for statistics); text as ``str``."""
        with h5py.File(self.cache_file, "r") as h5:
            dataset = h5[name]
            if h5py.check_string_dtype(dataset.dtype):
                return dataset.asstr()[:]
            return dataset[:]

    def atom_blocks(self, names: Sequence[str], max_atoms: int = 1 << 20
                    ) -> Iterator[tuple[np.ndarray, list[dict[str, np.ndarray]]]]:
        """This dataset's frames in blocks of about ``max_atoms`` atoms, read from the cache
        block by block (so statistics over a file larger than memory stream through it).

        Yields ``(frames, arrays)``: the cache frame numbers of the block and, for each frame,
        ``{name: its per-atom rows}`` for the per-atom arrays in ``names`` (numbers, forces, …).
        """
        frames = np.sort(self.indices)
        ptr = self.atom_ptr
        with h5py.File(self.cache_file, "r") as h5:
            start = 0
            while start < len(frames):
                stop = start + 1
                while stop < len(frames) and ptr[frames[stop] + 1] - ptr[frames[start]] <= max_atoms:
                    stop += 1
                block = frames[start:stop]
                a0, a1 = ptr[block[0]], ptr[block[-1] + 1]
                rows = {name: h5[name][a0:a1] for name in names}
                yield block, [{name: rows[name][ptr[k] - a0:ptr[k + 1] - a0] for name in names}
                              for k in block]
                start = stop

    def __getitem__(self, item: int) -> AtomicGraph:
        if self._h5 is None:
            self._h5 = h5py.File(self.cache_file, "r")
        h5, k = self._h5, int(self.indices[item])
        a0, a1 = self.atom_ptr[k], self.atom_ptr[k + 1]
        p0, p1 = self.pair_ptr[k], self.pair_ptr[k + 1]
        graph = AtomicGraph(
            numbers=torch.from_numpy(h5["numbers"][a0:a1]),
            pos=torch.from_numpy(h5["positions"][a0:a1]),
            cell=torch.from_numpy(h5["cell"][k]).reshape(1, 3, 3),
            pbc=torch.from_numpy(h5["pbc"][k]).reshape(1, 3),
            pair_index=torch.from_numpy(h5["pair_index"][:, p0:p1]),
            pair_shifts=torch.from_numpy(h5["pair_shifts"][p0:p1]),
            num_nodes=int(a1 - a0),
        )
        return attach_labels(graph, {"energy": h5["energy"][k], "forces": h5["forces"][a0:a1],
                                     "stress": h5["stress"][k], "has_forces": h5["has_forces"][k],
                                     "has_stress": h5["has_stress"][k]})


def split_indices(n_frames: int, fraction: float, seed: int,
                  groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split into (train, validation) frame indices.

    With ``groups`` (one label per frame) the split is stratified: each group gives the same
    share of its frames, and every group of two frames or more gives at least one and keeps at
    least one, so a small, heterogeneous data set validates on every kind of frame.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = np.asarray(groups) if groups is not None else np.zeros(n_frames, dtype=int)
    validation = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = members[torch.randperm(len(members), generator=generator).numpy()]
        take = int(round(fraction * len(members)))
        if groups is not None and fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        validation.extend(order[:take].tolist())
    if fraction > 0 and not validation:
        validation = [int(torch.randint(n_frames, (1,), generator=generator))]
    validation = np.sort(np.asarray(validation, dtype=np.int64))
    if len(validation) >= n_frames:
        raise DataError(f"validation_fraction {fraction} leaves no training frames "
                        f"out of {n_frames}")
    return np.setdiff1d(np.arange(n_frames), validation), validation
