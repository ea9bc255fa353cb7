"""The model file: what it holds, its checks, and ``load`` (a Potential or a Committee).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..models import MODELS
from ..version import __version__
from .committee import Committee
from .devices import resolve_device
from .files import FORMAT, FORMAT_VERSION
from .potential import DTYPES, Potential

# What a model file must hold: key → (accepted types, what it is). One place checks them all.
MODEL_FILE_ENTRIES = {
    "format_version": (int, "the format version"),
    "model_class": (str, "the model class name"),
    "hparams": (dict, "the model's hyper-parameters"),
    "e0": (dict, "the per-element reference energies"),
    "scale": ((int, float), "the energy scale"),
    "shift": ((int, float), "the energy shift"),
    "dtype": (str, "the dtype"),
    "state_dict": (dict, "the weights"),
}


def _check_version(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nnpot model file (it lacks the '{FORMAT}' marker)")
    version = data.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(f"{path} uses model-file format {version}, written by nnpot "
                         f"{data.get('nnpot_version')}; this nnpot ({__version__}) reads formats "
                         f"up to {FORMAT_VERSION}. Upgrade nnpot to load it.")


def _check_model_file(path: Path, data: Any, where: str = "") -> None:
    """Every entry of a model file (or of one committee member, ``where``) present and of the
    right type; a clear ValueError if not."""
    where = f" ({where})" if where else ""
    if not isinstance(data, dict):
        raise ValueError(f"{path} is a damaged nnpot model file{where}: not a mapping")
    for key, (types, what) in MODEL_FILE_ENTRIES.items():
        if key not in data:
            raise ValueError(f"{path} is a damaged nnpot model file{where}: the entry {key!r} "
                             f"({what}) is missing")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise ValueError(f"{path} is a damaged nnpot model file{where}: the entry {key!r} "
                             f"({what}) is a {type(data[key]).__name__}")
    if data["dtype"] not in DTYPES:
        raise ValueError(f"{path}{where}: unsupported dtype {data['dtype']!r} in the model file "
                         f"(nnpot models are {' or '.join(DTYPES)})")
    if data["model_class"] not in MODELS:
        raise ValueError(f"{path}{where} holds a {data['model_class']!r} model, which this nnpot "
                         f"does not provide (known: {sorted(MODELS)})")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Potential | Committee:
    """Read a model file written by :meth:`Potential.save` or :meth:`Committee.save`.

    The file is read with ``torch.load(weights_only=True)``: a model file holds data only and
    can never run code. A missing, truncated, damaged or foreign file, or one written by a newer
    nnpot format, is a ValueError (FileNotFoundError when missing) that says which; so is a
    device this machine does not have.
    """
    path = Path(path)
    device = resolve_device(device)  # before reading: a missing GPU is not a corrupt file
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for truncated/corrupt/foreign files
        raise ValueError(f"{path} is not a readable nnpot model file (truncated, corrupt or not "
                         f"written by nnpot): {type(error).__name__}: {str(error)[:200]}") from None
    _check_version(path, data)
    if data.get("kind") == "committee":
        members = data.get("members")
        if not isinstance(members, list) or not members:
            raise ValueError(f"{path} is a damaged nnpot committee file: no members")
        committee = Committee([_potential_from(path, member, device, f"member {k}")
                               for k, member in enumerate(members)])
        committee.provenance = dict(data.get("provenance", {}))
        return committee
    return _potential_from(path, data, device)


def _potential_from(path: Path, data: Any, device: torch.device, where: str = "") -> Potential:
    """A Potential from one model file's (or committee member's) entries, checked."""
    _check_model_file(path, data, where)
    where = f" ({where})" if where else ""
    try:
        model = MODELS[data["model_class"]](**data["hparams"])
        potential = Potential(model, e0=data["e0"], scale=data["scale"], shift=data["shift"],
                              pair_repulsion=data.get("pair_repulsion"),
                              pair_repulsion_radius=data.get("pair_repulsion_radius"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}{where}: the stored hyper-parameters do not build a "
                         f"{data['model_class']}: {error}") from None
    potential.to(device=device, dtype=DTYPES[data["dtype"]])  # before loading: keeps bits exact
    try:
        potential.load_state_dict(data["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}{where}: the weights do not fit a {data['model_class']} with the "
                         f"stored hyper-parameters: {str(error)[:300]}") from None
    potential.provenance = dict(data.get("provenance", {}))
    return potential
