"""The ZBL pair repulsion under a potential: its formula, its switch, and that it travels with
the model file and the trainer. (Derivative and invariance tests: the "HDNNP+ZBL" potential of
test_physics.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import make_hdnnp, make_hdnnp_zbl
from test_train import emt_file, small_config  # noqa: F401  (emt_file is a fixture)

import nnpot
from nnpot import NNPCalculator
from nnpot.core.committee import Committee
from nnpot.core.potential import Potential
from nnpot.train import config_from_dict, fit


def zbl_by_hand(z1: int, z2: int, r: float, r_c: float) -> float:
    """ZBL (Ziegler, Biersack, Littmark 1985) times NequIP's p = 6 envelope, written out."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.18175 * math.exp(-3.19980 * x) + 0.50986 * math.exp(-0.94229 * x)
           + 0.28022 * math.exp(-0.40290 * x) + 0.02817 * math.exp(-0.20162 * x))
    u = r / r_c
    envelope = 1 - 28 * u**6 + 48 * u**7 - 21 * u**8 if u < 1 else 0.0
    return 14.399645 * z1 * z2 / r * phi * envelope


def dimer_energy(potential, symbols: str, r: float) -> float:
    atoms = Atoms(symbols, positions=[[0, 0, 0], [r, 0, 0]])
    atoms.calc = NNPCalculator(potential)
    return atoms.get_potential_energy()


def test_zbl_is_the_published_formula_switched_off_at_the_covalent_radii():
    with_zbl, plain = make_hdnnp_zbl(), make_hdnnp()
    r_c = 1.32 + 0.66  # ASE's covalent radii of Cu and O, Å
    for r in (0.3, 0.8, 1.2, 1.7, 1.95, 2.2, 3.0):
        added = dimer_energy(with_zbl, "CuO", r) - dimer_energy(plain, "CuO", r)
        assert added == pytest.approx(zbl_by_hand(29, 8, r, r_c), rel=1e-9, abs=1e-12), r
    # the same pair counted once in a half list, whichever atom comes first
    assert dimer_energy(with_zbl, "OCu", 0.8) - dimer_energy(plain, "OCu", 0.8) == \
        pytest.approx(zbl_by_hand(29, 8, 0.8, r_c), rel=1e-9)


def test_zbl_rises_steeply_as_two_atoms_are_pushed_together():
    """What it is for: the learned energy is bounded, the repulsion is not."""
    potential = make_hdnnp_zbl()
    energies = [dimer_energy(potential, "Cu2", r) for r in (2.0, 1.5, 1.0, 0.6, 0.3)]
    assert all(np.diff(energies) > 0)
    assert energies[-1] - energies[0] > 100.0  # eV


def test_per_atom_energies_split_each_pair_equally():
    potential = make_hdnnp_zbl()
    atoms = Atoms("CuO", positions=[[0, 0, 0], [1.0, 0, 0]])
    atoms.calc = NNPCalculator(potential)
    plain = Atoms("CuO", positions=[[0, 0, 0], [1.0, 0, 0]])
    plain.calc = NNPCalculator(make_hdnnp())
    added = atoms.get_potential_energies() - plain.get_potential_energies()
    assert added[0] == pytest.approx(added[1], rel=1e-12)
    assert added.sum() == pytest.approx(zbl_by_hand(29, 8, 1.0, 1.98), rel=1e-9)


def test_model_file_keeps_the_repulsion_and_refuses_older_readers(tmp_path, monkeypatch):
    potential = make_hdnnp_zbl()
    path = potential.save(tmp_path / "zbl.pt")
    assert torch.load(path, weights_only=True)["format_version"] == 3
    loaded = nnpot.load(path)
    assert loaded.pair_repulsion == "zbl"
    assert dimer_energy(loaded, "CuO", 0.9) == pytest.approx(dimer_energy(potential, "CuO", 0.9),
                                                             rel=1e-12)
    # A file without repulsion keeps format 1 (older nnpot reads it); a committee with it is 3.
    assert torch.load(make_hdnnp().save(tmp_path / "plain.pt"),
                      weights_only=True)["format_version"] == 1
    committee = Committee([potential, make_hdnnp_zbl(seed=1)]).save(tmp_path / "committee.pt")
    assert torch.load(committee, weights_only=True)["format_version"] == 3
    monkeypatch.setattr("nnpot.core.model_file.FORMAT_VERSION", 2)  # an nnpot from before ZBL
    with pytest.raises(ValueError, match="uses model-file format 3.*Upgrade nnpot"):
        nnpot.load(path)


def test_unknown_repulsion_is_refused():
    plain = make_hdnnp()
    with pytest.raises(ValueError, match="pair_repulsion must be None or one of"):
        Potential(plain.model, pair_repulsion="lennard-jones")


def test_trainer_fits_the_network_on_top_of_the_repulsion(tmp_path, emt_file):  # noqa: F811
    config = small_config(tmp_path, emt_file, model="HDNNP", max_epochs=2)
    config["model"]["pair_repulsion"] = "zbl"
    best = nnpot.load(fit(config_from_dict(config)))
    assert best.pair_repulsion == "zbl"
    assert dimer_energy(best, "Cu2", 0.5) - dimer_energy(best, "Cu2", 1.0) > 50.0  # eV
