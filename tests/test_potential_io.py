"""Model files, the public API, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import MODEL_MAKERS, make_potential, rattled_cell

import nnpot
from nnpot import AtomicGraph, NNPCalculator, Potential
from nnpot.core.files import FORMAT_VERSION
from nnpot.models import SchNet


def test_readme_example(tmp_path):
    model = SchNet(species=["Cu", "O"], cutoff=5.0, n_features=128, n_interactions=3, n_rbf=50)
    pot = Potential(model, e0={"Cu": -3.7, "O": -1.9})
    pot.save(tmp_path / "model.pt")
    pot = nnpot.load(tmp_path / "model.pt")
    atoms = rattled_cell()
    atoms.calc = NNPCalculator(pot, device="cpu", dtype="float64", skin=0.5)
    energy = atoms.get_potential_energy()
    assert atoms.get_forces().shape == (32, 3)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_potential_energies().sum() == pytest.approx(energy)
    assert atoms.get_potential_energy(force_consistent=True) == energy
    atoms.calc = NNPCalculator(str(tmp_path / "model.pt"))
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-3)  # float32 now


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("model", sorted(MODEL_MAKERS))
def test_save_load_is_bitwise_identical(tmp_path, dtype, model):
    potential = MODEL_MAKERS[model](dtype=dtype)
    potential.save(tmp_path / "m.pt", provenance={"dataset_sha256": "abc", "metrics": {"f": 1.0}})
    loaded = nnpot.load(tmp_path / "m.pt")
    assert loaded.dtype == dtype
    assert loaded.species == potential.species and loaded.cutoff == potential.cutoff
    assert loaded.e0_dict() == potential.e0_dict()
    assert loaded.provenance["dataset_sha256"] == "abc"
    a, b = rattled_cell(), rattled_cell()
    a.calc, b.calc = NNPCalculator(potential), NNPCalculator(loaded)
    assert a.get_potential_energy() == b.get_potential_energy()
    assert np.array_equal(a.get_forces(), b.get_forces())
    assert np.array_equal(a.get_stress(), b.get_stress())


@pytest.mark.parametrize("model", sorted(MODEL_MAKERS))
def test_float64_is_the_same_converted_in_memory_or_loaded(tmp_path, model):
    """One dtype: a model built in float32 and converted with ``.to(torch.float64)`` gives
    bitwise the energies, forces and stress of its own file loaded in float64 (constants made
    at construction follow the conversion or are float64 from the start)."""
    potential = MODEL_MAKERS[model](dtype=torch.float32).to(torch.float64)
    loaded = nnpot.load(potential.save(tmp_path / "m.pt"))
    assert loaded.dtype == torch.float64
    graph = AtomicGraph.from_atoms(rattled_cell(), potential.cutoff)
    a = potential(graph, forces=True, stress=True)
    b = loaded(graph, forces=True, stress=True)
    for key in ("energy", "forces", "stress"):
        assert torch.equal(a[key], b[key]), f"{model}: {key} differs by {(a[key] - b[key]).abs().max():.1e}"


def test_model_file_records_the_metadata(tmp_path):
    make_potential().save(tmp_path / "m.pt")
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ["format", "format_version", "nnpot_version", "model_class", "hparams", "species",
                "cutoff", "e0", "scale", "shift", "dtype", "provenance", "state_dict"]:
        assert key in data


def test_newer_format_is_refused(tmp_path):
    make_potential().save(tmp_path / "m.pt")
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    data["format_version"] = FORMAT_VERSION + 1
    torch.save(data, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="Upgrade nnpot"):
        nnpot.load(tmp_path / "new.pt")


def test_truncated_file_is_a_clear_error(tmp_path):
    make_potential().save(tmp_path / "m.pt")
    raw = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.pt is not a readable nnpot model file"):
        nnpot.load(tmp_path / "cut.pt")


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not a readable nnpot model file"):
        nnpot.load(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an nnpot model file"):
        nnpot.load(tmp_path / "other.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # would run code to load
    with pytest.raises(ValueError, match="not a readable nnpot model file"):
        nnpot.load(tmp_path / "pickled_module.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        nnpot.load(tmp_path / "missing.pt")


def test_unknown_element_names_the_element_and_the_species(potential64):
    atoms = Atoms("CuFe", positions=[[0, 0, 0], [2, 0, 0]])
    atoms.calc = NNPCalculator(potential64)
    with pytest.raises(ValueError, match=r"Fe.*not known.*Cu, O"):
        atoms.get_potential_energy()


def test_nan_positions_and_singular_cells_are_clear_errors(potential64):
    atoms = rattled_cell()
    atoms.positions[3, 1] = np.nan
    atoms.calc = NNPCalculator(potential64)
    with pytest.raises(ValueError, match="NaN"):
        atoms.get_potential_energy()
    flat = rattled_cell()
    flat.cell[2] = flat.cell[0] + flat.cell[1]
    flat.calc = NNPCalculator(potential64)
    with pytest.raises(ValueError, match="singular cell"):
        flat.get_potential_energy()


@pytest.mark.parametrize("cutoff", [0.0, -2.0])
def test_non_positive_cutoff_is_refused(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        SchNet(species=["Cu"], cutoff=cutoff)


def test_bad_species_and_e0_are_refused():
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        SchNet(species=["Cu", "Xx"])
    with pytest.raises(ValueError, match="twice"):
        SchNet(species=["Cu", 29])
    with pytest.raises(ValueError, match=r"e0 names elements \['Fe'\]"):
        Potential(SchNet(species=["Cu"]), e0={"Fe": 1.0})


def test_bad_calculator_arguments():
    with pytest.raises(ValueError, match="dtype"):
        NNPCalculator(make_potential(), dtype="float16")
    with pytest.raises(ValueError, match="skin"):
        NNPCalculator(make_potential(), skin=-1)
    with pytest.raises(TypeError, match="Potential"):
        NNPCalculator(42)
