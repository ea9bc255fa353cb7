"""benchmarks/thermal_path.py: the lattice matching behind its harmonicity check."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from thermal_path import lattice_displacements  # noqa: E402


def test_displacements_are_recovered_whatever_the_atom_order_and_origin():
    """A crystal displaced by small random u, shuffled and rigidly shifted: the matched ideal
    sites and displacements are the ones applied (up to the removed drift), even across the
    periodic boundary."""
    crystal = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    rng = np.random.default_rng(0)
    u = rng.normal(scale=0.15, size=(len(crystal), 3))
    order = rng.permutation(len(crystal))
    frame = crystal.copy()[order]
    shift = np.array([0.7, -3.1, 2.2])
    frame.positions = frame.positions + u[order] + shift
    frame.wrap()

    ideal, found = lattice_displacements(frame, crystal)
    expected = u[order] - u[order].mean(axis=0)
    assert found == pytest.approx(expected, abs=1e-9)
    # the ideal sites are the crystal's, in the frame's order, moved by the same rigid shift
    moved = ideal - (frame.positions - found)
    moved -= moved[0]
    frac = np.linalg.solve(frame.cell.array.T, moved.T).T
    assert frac - np.round(frac) == pytest.approx(0.0, abs=1e-9)


def test_a_frame_that_left_the_lattice_is_refused():
    crystal = bulk("Si", "diamond", a=5.43, cubic=True)
    frame = crystal.copy()
    frame.positions[1] = frame.positions[0] + 0.1  # two atoms on one site
    with pytest.raises(ValueError, match="lattice sites"):
        lattice_displacements(frame, crystal)
