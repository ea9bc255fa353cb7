"""Material properties from any ASE calculator: lattice constant, bulk modulus, elastic constants.

Used for model cards and tests: the same functions run on the reference calculator (EMT) and on
a trained potential, so the two are compared like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState


@dataclass
class CubicProperties:
    """Lattice constant (Å), cohesive-like energy per atom (eV), B, C11, C12, C44 (GPa)."""
    lattice_constant: float
    energy_per_atom: float
    bulk_modulus: float
    c11: float
    c12: float
    c44: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def equation_of_state(calc: Calculator, element: str = "Cu", crystal: str = "fcc",
                      a_guess: float = 3.6, span: float = 0.04,
                      points: int = 11) -> tuple[float, float, float]:
    """Fit E(V) (Birch–Murnaghan) of the conventional cubic cell over a ± ``span`` range of a.

    Returns (lattice constant Å, energy per atom eV, bulk modulus GPa).
    """
    volumes, energies = [], []
    for a in np.linspace(a_guess * (1 - span), a_guess * (1 + span), points):
        atoms = bulk(element, crystal, a=a, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    n_atoms = len(bulk(element, crystal, a=a_guess, cubic=True))
    return float(v0 ** (1 / 3)), float(e0 / n_atoms), float(b / units.GPa)


def cubic_elastic_constants(calc: Calculator, lattice_constant: float, element: str = "Cu",
                            crystal: str = "fcc", delta: float = 0.005) -> tuple[float, float, float]:
    """C11, C12, C44 (GPa) by central differences of the stress under ±``delta`` strains.

    Every atom of fcc/bcc is a centre of inversion, so homogeneous strains need no internal
    relaxation. ASE's sign: tensile stress is positive, so C = ∂σ/∂ε.
    """
    def stress(strain: np.ndarray) -> np.ndarray:
        atoms = bulk(element, crystal, a=lattice_constant, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        atoms.calc = calc
        return atoms.get_stress(voigt=True)

    normal = np.zeros((3, 3))
    normal[0, 0] = delta
    shear = np.zeros((3, 3))
    shear[1, 2] = shear[2, 1] = delta / 2  # engineering shear strain γ_yz = delta
    d_normal = (stress(normal) - stress(-normal)) / (2 * delta)
    d_shear = (stress(shear) - stress(-shear)) / (2 * delta)
    return (float(d_normal[0] / units.GPa), float(d_normal[1] / units.GPa),
            float(d_shear[3] / units.GPa))


def cubic_properties(calc: Calculator, element: str = "Cu", crystal: str = "fcc",
                     a_guess: float = 3.6) -> CubicProperties:
    a0, e0, b = equation_of_state(calc, element, crystal, a_guess)
    c11, c12, c44 = cubic_elastic_constants(calc, a0, element, crystal)
    return CubicProperties(a0, e0, b, c11, c12, c44)
