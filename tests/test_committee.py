"""Committees: the mean and spread of members evaluated together, equal to the members alone;
zero spread for identical members; one model file; clear errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import ethanol_like, make_hdnnp, make_potential, rattled_cell, triclinic_pair

import nnpot
from nnpot import AtomicGraph, Committee, NNPCalculator, Potential, batch_graphs
from nnpot.core.committee import member_pairs
from nnpot.core.geometry import PairGeometry
from nnpot.core.model_file import load


def members():
    return [make_potential(seed=0), make_potential(seed=1), make_hdnnp(seed=2)]


def test_the_committee_is_the_mean_and_spread_of_its_members_alone():
    pots = members()
    committee = Committee(pots)
    structures = [rattled_cell(), triclinic_pair(), rattled_cell(seed=5)]
    graphs = batch_graphs([AtomicGraph.from_atoms(s, committee.cutoff) for s in structures])
    out = committee(graphs, forces=True, stress=True, members=True, stresses=True)
    alone = [p(graphs, forces=True, stress=True, stresses=True) for p in pots]
    for key in ("energy", "energies", "forces", "stress", "stresses"):
        stacked = torch.stack([a[key] for a in alone]).detach().numpy()
        np.testing.assert_allclose(out[key].detach().numpy(), stacked.mean(axis=0), rtol=0,
                                   atol=1e-10)
        np.testing.assert_allclose(out[f"member_{key}"].numpy(), stacked, rtol=0, atol=1e-10)
    energies = torch.stack([a["energy"] for a in alone]).detach().numpy()
    forces = torch.stack([a["forces"] for a in alone]).detach().numpy()
    stresses = torch.stack([a["stress"] for a in alone]).detach().numpy()
    np.testing.assert_allclose(out["energy_std"].numpy(), energies.std(axis=0), atol=1e-10)
    per_atom = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0))
    np.testing.assert_allclose(out["forces_std"].numpy(), per_atom, atol=1e-10)
    np.testing.assert_allclose(out["stress_std"].numpy(), stresses.std(axis=0), atol=1e-10)
    assert (out["forces_std"] > 0).all() and (out["energy_std"] > 0).all()


def test_hdnnp_members_share_their_symmetry_functions(monkeypatch):
    """HDNNPs with the same symmetry functions compute them once per call (the SchNet member
    and a lone HDNNP of other functions do not share), and every member's results are still
    its own results alone, training graph (create_graph) included."""
    from nnpot.models import HDNNP
    from nnpot.models.hdnnp.symmetry_functions import SymmetryFunctionDescriptor

    torch.manual_seed(7)   # the default symmetry functions: not those of make_hdnnp
    other = Potential(HDNNP(species=["Cu", "O"], cutoff=4.0, hidden=(8,))).double()
    pots = [make_hdnnp(seed=2), make_potential(seed=0), make_hdnnp(seed=3), other]
    committee = Committee(pots)
    keys = committee._shared_keys
    assert keys[1] is None and keys[3] is None and keys[0] == keys[2] is not None
    calls = []
    original = SymmetryFunctionDescriptor.forward

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    graph = AtomicGraph.from_atoms(rattled_cell(), 4.0)
    alone = [p(graph, forces=True, stress=True) for p in pots]
    monkeypatch.setattr(SymmetryFunctionDescriptor, "forward", counting)
    out = committee(graph, forces=True, stress=True, members=True)
    assert len(calls) == 2   # once for members 0 and 2, once for member 3
    for key in ("energy", "forces", "stress"):
        stacked = torch.stack([a[key] for a in alone]).detach()
        np.testing.assert_allclose(out[f"member_{key}"].numpy(), stacked.numpy(), rtol=0,
                                   atol=1e-10)
    trained = committee(graph, forces=True, create_graph=True, members=True)
    loss = trained["member_forces"][2].square().sum()
    loss.backward()
    reference = pots[2](graph, forces=True, create_graph=True)["forces"].square().sum()
    grads = torch.autograd.grad(reference, list(pots[2].parameters()), allow_unused=True)
    used = [(mine, theirs) for mine, theirs in zip(committee.members[2].parameters(), grads)
            if theirs is not None]   # an element absent from the cell leaves its network unused
    assert used
    for mine, theirs in used:
        np.testing.assert_allclose(mine.grad.numpy(), theirs.numpy(), rtol=1e-9, atol=1e-12)


def test_members_of_other_cutoffs_give_what_they_give_alone(tmp_path):
    """A committee of members with cutoffs 4, 5 and 4.5 Å builds its pairs at 5 Å; each
    member's energies, forces, stress and per-atom stresses equal its own at its own cutoff, in
    float64, through the model file and the calculator too. HDNNPs of the same symmetry
    functions share them only at the same cutoff (on the same pairs)."""
    pots = [make_hdnnp(seed=2, cutoff=4.0), make_potential(seed=0, cutoff=5.0),
            make_hdnnp(seed=3, cutoff=4.5), make_hdnnp(seed=4, cutoff=4.0)]
    committee = Committee(pots)
    keys = committee._shared_keys
    assert committee.cutoff == 5.0
    assert keys[0] == keys[3] is not None and keys[1] is None and keys[2] is None
    structures = [rattled_cell(), triclinic_pair()]
    graph = batch_graphs([AtomicGraph.from_atoms(s, 5.0) for s in structures])
    # each member is handed exactly the pairs, in the same order, of a list at its cutoff
    views = member_pairs(committee.members, PairGeometry(*pots[1].model_inputs(graph)))
    for pot, view in zip(pots, views):
        own = batch_graphs([AtomicGraph.from_atoms(s, pot.cutoff) for s in structures])
        _, pair_index, pair_vec = pot.model_inputs(own)
        assert torch.equal(view.pair_index, pair_index) and torch.equal(view.pair_vec, pair_vec)
    out = committee(graph, forces=True, stress=True, members=True, stresses=True)
    mean = {"energies": 0.0, "stresses": 0.0}
    for m, pot in enumerate(pots):
        alone = pot(batch_graphs([AtomicGraph.from_atoms(s, pot.cutoff) for s in structures]),
                    forces=True, stress=True, stresses=True)
        for key in ("energy", "forces", "stress"):
            np.testing.assert_allclose(out[f"member_{key}"][m].numpy(),
                                       alone[key].detach().numpy(), rtol=0, atol=1e-10)
        mean = {key: value + alone[key].detach() / len(pots) for key, value in mean.items()}
    for key, value in mean.items():
        np.testing.assert_allclose(out[key].detach().numpy(), value.numpy(), rtol=0, atol=1e-10)
    path = committee.save(tmp_path / "mixed.pt")
    atoms = rattled_cell()
    atoms.calc = NNPCalculator(path, dtype="float64", skin=0.5)
    reference = committee(AtomicGraph.from_atoms(atoms, 5.0), forces=True, stress=True)
    np.testing.assert_allclose(atoms.get_forces(), reference["forces"].numpy(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), reference["stress"][0].numpy(), atol=1e-10)


def test_identical_members_have_zero_spread():
    pot = make_potential()
    committee = Committee([pot, copy.deepcopy(pot), copy.deepcopy(pot)])
    graph = AtomicGraph.from_atoms(rattled_cell(), committee.cutoff)
    out = committee(graph, forces=True, stress=True)
    for key in ("energy_std", "forces_std", "stress_std"):
        assert torch.equal(out[key], torch.zeros_like(out[key])), key
    single = pot(graph, forces=True, stress=True)
    np.testing.assert_allclose(out["forces"].detach(), single["forces"].detach(), atol=1e-12)


def test_a_committee_file_loads_back_and_the_calculator_reports_the_spread(tmp_path):
    committee = Committee(members())
    path = committee.save(tmp_path / "committee.pt", provenance={"note": "three members"})
    loaded = load(path)
    assert isinstance(loaded, Committee) and len(loaded) == 3
    assert loaded.provenance["note"] == "three members"
    atoms = rattled_cell()
    calc = NNPCalculator(path, dtype="float64")
    atoms.calc = calc
    forces = atoms.get_forces()
    spread = calc.get_property("forces_std", atoms)
    stress_spread = calc.get_property("stress_std", atoms)
    graph = AtomicGraph.from_atoms(atoms, committee.cutoff)
    reference = committee(graph, forces=True, stress=True)
    np.testing.assert_allclose(forces, reference["forces"].numpy(), atol=1e-10)
    np.testing.assert_allclose(spread, reference["forces_std"].numpy(), atol=1e-10)
    np.testing.assert_allclose(stress_spread, reference["stress_std"][0].numpy(), atol=1e-10)
    assert calc.get_property("energy_std", atoms) == pytest.approx(float(reference["energy_std"][0]))
    # a molecule: no stress, but forces and their spread
    molecule = ethanol_like()
    molecule.calc = NNPCalculator(Committee([make_potential(), make_potential(seed=4)]))
    assert molecule.calc.get_property("forces_std", molecule).shape == (len(molecule),)


def test_a_single_potential_file_keeps_format_1(tmp_path):
    path = make_potential().save(tmp_path / "one.pt")
    assert torch.load(path, weights_only=True)["format_version"] == 1
    assert isinstance(nnpot.load(path), nnpot.Potential)


def test_bad_committees_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 2 members"):
        Committee([make_potential()])
    with pytest.raises(TypeError, match="member 1 is a str"):
        Committee([make_potential(), "model.pt"])
    with pytest.raises(ValueError, match="member 1 has species"):
        Committee([make_potential(), make_potential(species=("Cu",))])
    with pytest.raises(ValueError, match="member 1 has dtype"):
        Committee([make_potential(), make_potential(dtype=torch.float32)])
    path = Committee(members()).save(tmp_path / "c.pt")
    data = torch.load(path, weights_only=True)
    del data["members"][1]["state_dict"]
    torch.save(data, path)
    with pytest.raises(ValueError, match=r"\(member 1\): the entry 'state_dict'"):
        load(path)
    data["members"] = []
    torch.save(data, path)
    with pytest.raises(ValueError, match="no members"):
        load(path)


# -------------------------------------------------------------------------------------------
def committee_calculator(dtype="float64"):
    return NNPCalculator(Committee([make_potential(seed=0), make_potential(seed=1)]), dtype=dtype)


def test_md_logs_the_deviation_and_keeps_candidate_frames(tmp_path):
    from ase.io import read

    candidates, log = tmp_path / "candidates.extxyz", tmp_path / "md.csv"
    result = nnpot.md(rattled_cell(), committee_calculator(), ensemble="nvt", steps=20,
                      timestep=0.5, interval=5, log=log, candidates=candidates,
                      uncertainty_threshold=1e-9, progress=False)
    deviation = result.log["max_force_std_eVA"]
    assert len(deviation) == 5 and (deviation > 0).all()
    frames = read(candidates, index=":")
    assert len(frames) == len(result.candidates) == 5  # every logged frame passed 1e-9 eV/Å
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose([f.info["max_force_std"] for f in frames], deviation)
    assert "max_force_std_eVA" in log.read_text().splitlines()[0]
    assert "candidate frame" in result.summary()
    high = nnpot.md(rattled_cell(), committee_calculator(), steps=10, timestep=0.5, interval=5,
                    uncertainty_threshold=1e3, progress=False)
    assert high.candidates == []


def test_md_stops_when_the_committee_extrapolates(tmp_path):
    from nnpot.cli import main
    from nnpot.md import ExtrapolationError

    with pytest.raises(ExtrapolationError, match=r"step 0: .*force deviation .*extrapolating"):
        nnpot.md(rattled_cell(), committee_calculator(), steps=10, timestep=0.5,
                 uncertainty_stop=1e-9, progress=False)
    model = Committee([make_potential(seed=0), make_potential(seed=1)]).save(tmp_path / "c.pt")
    structure = tmp_path / "cell.extxyz"
    rattled_cell().write(structure)
    code = main(["md", str(model), str(structure), "--steps", "10", "--timestep", "0.5",
                 "--uncertainty-threshold", "1e-9", "--uncertainty-stop", "1e-8", "--quiet",
                 "--candidates", str(tmp_path / "cand.extxyz")])
    assert code == 3 and (tmp_path / "cand.extxyz").exists()


def test_uncertainty_options_need_a_committee_and_sensible_thresholds():
    single = NNPCalculator(make_potential())
    with pytest.raises(ValueError, match="needs a committee"):
        nnpot.md(rattled_cell(), single, steps=1, uncertainty_threshold=0.2, progress=False)
    with pytest.raises(ValueError, match="must be above uncertainty_threshold"):
        nnpot.md(rattled_cell(), committee_calculator(), steps=1, uncertainty_threshold=0.2,
                 uncertainty_stop=0.1, progress=False)
    with pytest.raises(ValueError, match="uncertainty_threshold must be > 0"):
        nnpot.md(rattled_cell(), committee_calculator(), steps=1, uncertainty_threshold=-1,
                 progress=False)
    with pytest.raises(ValueError, match="candidates needs uncertainty_threshold"):
        nnpot.md(rattled_cell(), committee_calculator(), steps=1, candidates="c.extxyz",
                 progress=False)
