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


def test_one_switch_radius_for_every_pair(tmp_path):
    """pair_repulsion_radius replaces the covalent-radius sums (Cu–O 1.98 Å) by one distance,
    and the file keeps it: as an entry, and as the buffer an older format-3 reader loads."""
    plain = make_hdnnp()
    potential = Potential(plain.model, e0=plain.e0_dict(), scale=float(plain.scale),
                          shift=float(plain.shift), pair_repulsion="zbl",
                          pair_repulsion_radius=1.5).to(torch.float64)
    for r in (0.4, 0.9, 1.4, 1.6, 1.9):
        added = dimer_energy(potential, "CuO", r) - dimer_energy(plain, "CuO", r)
        assert added == pytest.approx(zbl_by_hand(29, 8, r, 1.5), rel=1e-9, abs=1e-12), r
    assert dimer_energy(potential, "CuO", 1.6) == dimer_energy(plain, "CuO", 1.6)
    path = potential.save(tmp_path / "zbl15.pt")
    assert torch.load(path, weights_only=True)["pair_repulsion_radius"] == 1.5
    loaded = nnpot.load(path)
    assert loaded.pair_repulsion_radius == 1.5
    assert dimer_energy(loaded, "CuO", 0.9) == dimer_energy(potential, "CuO", 0.9)
    # a reader that ignores the entry builds the covalent radii, then loads the stored ones
    default = Potential(make_hdnnp().model, e0=plain.e0_dict(), pair_repulsion="zbl",
                        scale=float(plain.scale), shift=float(plain.shift)).to(torch.float64)
    default.load_state_dict(potential.state_dict())
    assert dimer_energy(default, "CuO", 1.7) == dimer_energy(plain, "CuO", 1.7)


@pytest.mark.parametrize("kwargs, message", [
    ({"pair_repulsion_radius": 2.0}, "needs pair_repulsion"),
    ({"pair_repulsion": "zbl", "pair_repulsion_radius": -1.0}, "distance > 0"),
    ({"pair_repulsion": "zbl", "pair_repulsion_radius": "2"}, "distance > 0"),
])
def test_bad_switch_radius_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Potential(make_hdnnp().model, **kwargs)


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


def test_trainer_takes_the_switch_radius_and_checks_it(tmp_path, emt_file):  # noqa: F811
    config = small_config(tmp_path, emt_file, model="HDNNP", max_epochs=1)
    config["model"].update(pair_repulsion="zbl", pair_repulsion_radius=2.0)
    best_path = fit(config_from_dict(config))
    best = nnpot.load(best_path)
    assert best.pair_repulsion_radius == 2.0
    assert float(best.repulsion.switch_radius.max()) == 2.0
    # starting from it with another radius would silently keep the file's: refused by name
    config["model"].update(init_from=str(best_path), pair_repulsion_radius=1.8)
    config["output"] = str(tmp_path / "again")
    with pytest.raises(Exception, match="pair_repulsion_radius 2.0"):
        fit(config_from_dict(config))
    config["model"].update(init_from=None, pair_repulsion=None)
    with pytest.raises(Exception, match="needs model.pair_repulsion"):
        config_from_dict(config)
