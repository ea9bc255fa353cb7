"""Read the HDNNP settings of an n2p2 ``input.nn``: elements, symmetry functions, cutoff function,
hidden layers and activation.

n2p2 (https://github.com/CompPhysVienna/n2p2) lists one ``symfunction_short`` line per function
and per element combination:

    symfunction_short <central> 2 <neighbour> <eta> <rshift> <rcutoff>
    symfunction_short <central> 3 <neighbour 1> <neighbour 2> <eta> <lambda> <zeta> <rcutoff> [<rshift>]
    symfunction_short <central> 9 <neighbour 1> <neighbour 2> <eta> <lambda> <zeta> <rcutoff> [<rshift>]

nnpot applies every function to every central element and every neighbour element (G2) or
unordered pair of neighbour elements (G3, G9), so the distinct functions of the file become
nnpot's set. Where the file gives different elements different functions, nnpot's descriptor is
the union — a superset — and ``read_input_nn`` says so in a warning.

n2p2 has no unit of its own: its lengths are those of its training data. ``length_unit`` says
which ("angstrom", or "bohr" for RuNNer-style data); η is converted as a length⁻².
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase.data import atomic_numbers
from ase.units import Bohr

from ..base import HyperParameterError

LENGTH_UNITS = {"angstrom": 1.0, "bohr": Bohr}
# n2p2's CutoffFunction::CutoffType numbers that nnpot has: 1 = CT_COS, 6 = CT_POLY2
CUTOFF_TYPES = {1: "cos", 6: "p2"}
# n2p2's activation letters that nnpot has (hidden layers; the output layer must be linear, "l")
ACTIVATION_CODES = {"t": "tanh", "p": "softplus"}


@dataclass
class N2P2Settings:
    """What an ``input.nn`` says about the model, in nnpot's terms (lengths in Å)."""
    elements: list[str]
    symmetry_functions: list[dict[str, Any]]
    cutoff: float
    cutoff_function: str = "cos"
    hidden: list[int] | None = None
    activation: str | None = None
    notes: list[str] = field(default_factory=list)

    def hdnnp_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``nnpot.models.HDNNP``."""
        arguments = {"species": self.elements, "cutoff": self.cutoff,
                     "symmetry_functions": self.symmetry_functions,
                     "cutoff_function": self.cutoff_function}
        if self.hidden is not None:
            arguments["hidden"] = self.hidden
        if self.activation is not None:
            arguments["activation"] = self.activation
        return arguments


def read_input_nn(path: str | os.PathLike, length_unit: str = "angstrom") -> N2P2Settings:
    """Parse the model settings of an n2p2 ``input.nn`` (training keywords are ignored).

    Raises ``HyperParameterError`` naming the file and line for anything nnpot cannot
    reproduce: an unknown element, a malformed line, a cutoff type other than cos (1) or
    poly2 (6) with an inner cutoff α ≠ 0, an activation other than tanh (t) or softplus (p).
    """
    path = Path(path)
    if length_unit not in LENGTH_UNITS:
        raise HyperParameterError("length_unit", f"must be one of {sorted(LENGTH_UNITS)}, "
                                                 f"got {length_unit!r}")
    unit = LENGTH_UNITS[length_unit]
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise HyperParameterError("symmetry_functions", f"cannot read n2p2 file {path}: "
                                                        f"{error.strerror or error}") from None

    elements: list[str] | None = None
    cutoff_kind, hidden, activations = "cos", None, None
    entries: list[tuple[int, str, tuple]] = []  # (line number, central element, function key)
    for number, raw in enumerate(lines, start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue

        def fail(message: str, number: int = number, raw: str = raw) -> HyperParameterError:
            return HyperParameterError("symmetry_functions", f"{path}, line {number} "
                                                             f"({raw.strip()!r}): {message}")

        keyword, values = words[0], words[1:]
        try:
            if keyword == "elements":
                elements = values
                unknown = [e for e in elements if e not in atomic_numbers]
                if unknown or not elements:
                    raise fail(f"unknown element(s) {unknown}")
            elif keyword == "cutoff_type":
                kind = int(values[0])
                alpha = float(values[1]) if len(values) > 1 else 0.0
                if kind not in CUTOFF_TYPES:
                    raise fail(f"cutoff type {kind} is not available in nnpot "
                               f"(available: 1 = cos, 6 = poly2)")
                if alpha != 0.0:
                    raise fail(f"an inner cutoff (alpha = {alpha}) is not available in nnpot")
                cutoff_kind = CUTOFF_TYPES[kind]
            elif keyword == "global_nodes_short":
                hidden = [int(v) for v in values]
            elif keyword == "global_activation_short":
                activations = values
            elif keyword == "symfunction_short":
                entries.append((number, values[0], _function_key(values, unit, fail)))
        except HyperParameterError:
            raise
        except (ValueError, IndexError):  # a word that is not a number, a missing value
            raise fail("malformed values") from None

    if elements is None:
        raise HyperParameterError("symmetry_functions", f"{path}: no 'elements' line")
    if not entries:
        raise HyperParameterError("symmetry_functions", f"{path}: no symfunction_short lines")
    for number, central, key in entries:
        named = [central, *key[-1]]
        strangers = sorted(set(named) - set(elements))
        if strangers:
            raise HyperParameterError("symmetry_functions", f"{path}, line {number}: element(s) "
                                      f"{strangers} not in the 'elements' line {elements}")

    # The distinct functions, in the file's order; then how much the union adds.
    distinct: dict[tuple, dict[str, Any]] = {}
    for _, _, key in entries:
        distinct.setdefault(key[:-1], _as_dict(key))
    functions = list(distinct.values())
    notes = []
    n_species = len(elements)
    per_function = {"G2": n_species * n_species,
                    "G3": n_species * n_species * (n_species + 1) // 2}
    expected = sum(per_function["G2" if f["type"] == "G2" else "G3"] for f in functions)
    listed = len({(central, key) for _, central, key in entries})
    if listed < expected:
        notes.append(f"{path} lists {listed} element-specific symmetry functions; nnpot applies "
                     f"each of its {len(functions)} distinct functions to every element "
                     f"combination ({expected} in all), a superset of the file's selection")
        warnings.warn(notes[-1], stacklevel=2)

    activation = None
    if activations is not None:
        if activations[-1] != "l":
            raise HyperParameterError("activation", f"{path}: the output layer's activation must "
                                                    f"be linear ('l'), got {activations[-1]!r}")
        codes = set(activations[:-1])
        if len(codes) != 1 or next(iter(codes)) not in ACTIVATION_CODES:
            raise HyperParameterError("activation", f"{path}: hidden-layer activations "
                                      f"{activations[:-1]} — nnpot uses one of "
                                      f"{ACTIVATION_CODES} for all hidden layers")
        activation = ACTIVATION_CODES[next(iter(codes))]
    cutoff = max(f["cutoff"] for f in functions)
    return N2P2Settings(elements, functions, cutoff, cutoff_kind, hidden, activation, notes)


def _function_key(values: list[str], unit: float, fail) -> tuple:
    """One symfunction_short line (after the keyword) → a hashable description in Å, whose
    last item names its neighbour elements."""
    kind = values[1]  # values[0], the central element, is the section the key goes in
    if kind == "2":
        if len(values) != 6:
            raise fail("a radial function (type 2) needs: central, 2, neighbour, eta, rshift, "
                       "rcutoff")
        neighbour, eta, rs, cutoff = values[2], *map(float, values[3:6])
        return ("G2", eta / unit**2, rs * unit, cutoff * unit, (neighbour,))
    if kind in ("3", "9"):
        if len(values) not in (8, 9):
            raise fail(f"an angular function (type {kind}) needs: central, {kind}, neighbour 1, "
                       f"neighbour 2, eta, lambda, zeta, rcutoff[, rshift]")
        first, second = sorted(values[2:4])  # an unordered pair of neighbour elements
        eta, lam, zeta, cutoff = map(float, values[4:8])
        rs = float(values[8]) if len(values) == 9 else 0.0
        if not zeta.is_integer() or zeta < 1:
            raise fail(f"zeta must be an integer ≥ 1 in nnpot, got {zeta}")
        return ("G3" if kind == "3" else "G9", eta / unit**2, rs * unit, cutoff * unit,
                int(zeta), lam, (first, second))
    raise fail(f"symmetry function type {kind} is not available in nnpot (types 2, 3, 9)")


def _as_dict(key: tuple) -> dict[str, Any]:
    """A function key (``_function_key``) → nnpot's mapping of it."""
    if key[0] == "G2":
        return {"type": "G2", "eta": key[1], "rs": key[2], "cutoff": key[3]}
    return {"type": key[0], "eta": key[1], "rs": key[2], "cutoff": key[3], "zeta": key[4],
            "lambda": key[5]}
