"""Material properties from any ASE calculator: lattice constant, bulk modulus, elastic constants.

Used for model cards and tests: the same functions run on the reference calculator (EMT) and on
a trained potential, so the two are compared like with like.
"""

from __future__ import annotations

import math
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


def lagrangian_strain(cell: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Green–Lagrange strain of ``cell`` relative to ``reference`` (rows: lattice vectors, Å)
    in Voigt order xx, yy, zz, yz, xz, xy with engineering shears (γ = 2ε). [6]"""
    deformation = np.linalg.solve(reference, cell).T  # F with cell = reference @ Fᵀ
    strain = 0.5 * (deformation.T @ deformation - np.eye(3))
    return np.array([strain[0, 0], strain[1, 1], strain[2, 2],
                     2 * strain[1, 2], 2 * strain[0, 2], 2 * strain[0, 1]])


def cubic_elastic_constants_from_frames(strains: np.ndarray, energies: np.ndarray,
                                        stresses: np.ndarray, volume: float) -> dict[str, float]:
    """C11, C12, C44 (GPa) of a cubic crystal fitted to strained cells of one reference cell.

    ``strains`` [M, 6] Voigt with engineering shears (``lagrangian_strain``), ``energies`` [M]
    eV, ``stresses`` [M, 6] eV/Å³ (ASE sign: tensile positive), ``volume`` the reference cell's,
    Å³. C11 and C12: least squares of the normal stresses, σ_i = σ0 + C11 ε_i + C12 (ε_j + ε_k)
    — a frame that strains one axis gives C12 only through the stress on the others. C44: least
    squares of the energies, E/V = e0 + p Σε_i + ½ C11' Σε_i² + ½ C44 Σγ² — from energies
    because the shear stresses of DFT sets are the noisiest labels (mlearn Li's are not even
    linear in the strain). A constant no frame exercises is NaN. Also returns the fits' RMS
    residuals and the number of frames.
    """
    e = np.asarray(strains, dtype=float)
    normal, shear = e[:, :3], e[:, 3:]
    sigma = np.asarray(stresses, dtype=float)[:, :3] / units.GPa
    rows = [[1.0, strain[i], strain.sum() - strain[i]] for strain in normal for i in range(3)]
    design, target = np.array(rows), sigma.reshape(-1)
    normal_fit, *_ = np.linalg.lstsq(design, target, rcond=None)
    normal_rms = float(np.sqrt(np.mean((design @ normal_fit - target) ** 2)))
    design = np.column_stack([np.ones(len(e)), normal.sum(1), 0.5 * (normal**2).sum(1),
                              0.5 * (shear**2).sum(1)])
    target = np.asarray(energies, dtype=float) / volume
    energy_fit, *_ = np.linalg.lstsq(design, target, rcond=None)
    energy_rms = float(np.sqrt(np.mean((design @ energy_fit - target) ** 2)) * volume)
    has_normal, has_shear = np.abs(normal).max() > 1e-4, np.abs(shear).max() > 1e-4
    return {"c11": float(normal_fit[1]) if has_normal else math.nan,
            "c12": float(normal_fit[2]) if has_normal else math.nan,
            "c44": float(energy_fit[3] / units.GPa) if has_shear else math.nan,
            "stress_rms_GPa": normal_rms, "energy_rms_eV": energy_rms, "frames": int(len(e))}
