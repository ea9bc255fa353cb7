"""Labelling with a reference ASE calculator, one frame at a time, each appended to disk as
soon as it is done (a kill loses no finished label)."""

from __future__ import annotations

import importlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..core.files import durable_append
from ..train.config import ConfigError
from ..train.frames import read_frames


def calculator_class(name: str) -> type:
    """The ASE calculator class ``name`` names (``"ase.calculators.emt.EMT"``), imported."""
    module_name, _, class_name = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"label.calculator: cannot import {name!r} "
                          f"({type(error).__name__}: {error})") from None


def read_extxyz(path: str | os.PathLike) -> list[Atoms]:
    """The frames of one of the loop's extxyz files; none while it does not exist or is empty
    (nothing labelled yet)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return read_frames(path)


def _extxyz_text(frames: list[Atoms]) -> str:
    import ase.io
    buffer = io.StringIO()
    for frame in frames:
        ase.io.write(buffer, frame, format="extxyz")
    return buffer.getvalue()


def _append_frame(path: Path, frame: Atoms) -> None:
    """One frame appended in one write, flushed to disk: a kill leaves whole frames only."""
    durable_append(path, _extxyz_text([frame]))


def label_frame(atoms: Atoms, calculator_factory: Callable[[], Any]) -> Atoms:
    """``atoms`` with energy, forces (and stress for 3D-periodic cells) of a fresh calculator,
    stored as a SinglePointCalculator (what extxyz writes)."""
    frame = atoms.copy()
    frame.calc = calculator_factory()
    results = {"energy": frame.get_potential_energy(), "forces": frame.get_forces()}
    if frame.pbc.all():
        results["stress"] = frame.get_stress()
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, **results)
    return labelled
