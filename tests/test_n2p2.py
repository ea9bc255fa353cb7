"""Reading an n2p2 input.nn: functions, units, cutoff type, layers, and the errors that name
the file and line."""

from __future__ import annotations

import numpy as np
import pytest
from ase.units import Bohr
from conftest import rattled_cell
from test_hdnnp import descriptor_of, reference_descriptor

from nnpot.models import HDNNP, HyperParameterError
from nnpot.models.hdnnp.n2p2 import read_input_nn
from nnpot.train import ConfigError, config_from_dict

INPUT_NN = """\
# an n2p2 input.nn (training keywords are ignored by nnpot)
number_of_elements   2
elements             Cu O            # the elements
cutoff_type          6 0.0
global_hidden_layers_short 2
global_nodes_short   20 15
global_activation_short t t l
epochs               30
{functions}
"""

UNIFORM = """\
symfunction_short Cu 2 Cu 0.5 0.0 4.0
symfunction_short Cu 2 O  0.5 0.0 4.0
symfunction_short O  2 Cu 0.5 0.0 4.0
symfunction_short O  2 O  0.5 0.0 4.0
symfunction_short Cu 2 Cu 2.0 2.5 3.5
symfunction_short Cu 2 O  2.0 2.5 3.5
symfunction_short O  2 Cu 2.0 2.5 3.5
symfunction_short O  2 O  2.0 2.5 3.5
""" + "".join(
    f"symfunction_short {c} {kind} {a} {b} 0.05 {lam} {zeta} 3.8 {rs}\n"
    for kind, rs in (("9", ""), ("3", "0.5"))
    for lam in (-1, 1) for zeta in (1, 4)
    for c in ("Cu", "O") for a, b in (("Cu", "Cu"), ("O", "Cu"), ("O", "O")))


def write(tmp_path, functions=UNIFORM, **replace):
    text = INPUT_NN.format(functions=functions)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "input.nn"
    path.write_text(text)
    return path


def test_a_uniform_set_is_read_exactly_and_reproduces_the_formulas(tmp_path):
    settings = read_input_nn(write(tmp_path))
    assert settings.elements == ["Cu", "O"] and settings.cutoff == 4.0
    assert settings.cutoff_function == "p2" and settings.hidden == [20, 15]
    assert settings.activation == "tanh" and not settings.notes
    assert len(settings.symmetry_functions) == 2 + 8  # distinct functions, every element pair
    narrow = [f for f in settings.symmetry_functions if f["type"] == "G3"]
    assert len(narrow) == 4 and all(f["rs"] == 0.5 and f["cutoff"] == 3.8 for f in narrow)

    model = HDNNP.from_n2p2(write(tmp_path)).double()
    assert model.hparams["hidden"] == [20, 15] and model.hparams["cutoff_function"] == "p2"
    atoms = rattled_cell()
    np.testing.assert_allclose(descriptor_of(atoms, model),
                               reference_descriptor(atoms, ["Cu", "O"],
                                                    settings.symmetry_functions, "p2"),
                               rtol=0, atol=1e-10)


def test_bohr_lengths_are_converted(tmp_path):
    angstrom = read_input_nn(write(tmp_path)).symmetry_functions
    bohr = read_input_nn(write(tmp_path), length_unit="bohr").symmetry_functions
    for a, b in zip(angstrom, bohr):
        assert b["cutoff"] == pytest.approx(a["cutoff"] * Bohr)
        assert b["rs"] == pytest.approx(a["rs"] * Bohr)
        assert b["eta"] == pytest.approx(a["eta"] / Bohr**2)


def test_element_specific_selections_become_a_superset_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="superset"):
        settings = read_input_nn(write(tmp_path, functions=UNIFORM.split("\n", 1)[1]))
    assert len(settings.symmetry_functions) == 10 and settings.notes


def test_a_path_in_the_config_is_taken_from_the_config_folder(tmp_path):
    write(tmp_path)
    train = tmp_path / "train.extxyz"
    rattled_cell().write(train)
    config = config_from_dict({"data": {"train": "train.extxyz"},
                               "model": {"type": "HDNNP", "cutoff": 4.0,
                                         "params": {"symmetry_functions": "input.nn"}}},
                              base_dir=tmp_path)
    assert config.model.params["symmetry_functions"] == str(tmp_path / "input.nn")
    model = HDNNP(["Cu", "O"], cutoff=4.0, **config.model.params)
    assert len(model.hparams["symmetry_functions"]) == 10  # the file's set, stored resolved
    with pytest.raises(ConfigError, match="missing.nn"):
        config_from_dict({"data": {"train": "train.extxyz"},
                          "model": {"type": "HDNNP", "cutoff": 4.0,
                                    "params": {"symmetry_functions": "missing.nn"}}},
                         base_dir=tmp_path)


@pytest.mark.parametrize("replace, message", [
    ({"cutoff_type          6 0.0": "cutoff_type 2"}, r"line 4 .*cutoff type 2 is not available"),
    ({"cutoff_type          6 0.0": "cutoff_type 6 0.5"}, r"line 4 .*inner cutoff"),
    ({"elements             Cu O": "elements Cu Xx"}, r"line 3 .*unknown element"),
    ({"t t l": "s s l"}, r"hidden-layer activations"),
    ({"t t l": "t t t"}, r"output layer's activation must be linear"),
    ({"symfunction_short Cu 2 Cu 0.5 0.0 4.0": "symfunction_short Cu 12 Cu 0.5 0.0 4.0"},
     r"line 9 .*type 12 is not available"),
    ({"symfunction_short Cu 2 Cu 0.5 0.0 4.0": "symfunction_short Cu 2 Cu 0.5 4.0"},
     r"line 9 .*radial function \(type 2\) needs"),
    ({"symfunction_short Cu 2 Cu 0.5 0.0 4.0": "symfunction_short Cu 2 Cu half 0.0 4.0"},
     r"line 9 .*malformed"),
    ({"symfunction_short Cu 2 Cu 0.5 0.0 4.0": "symfunction_short Cu 2 Ag 0.5 0.0 4.0"},
     r"line 9: element\(s\) \['Ag'\] not in"),
])
def test_what_nnpot_cannot_reproduce_is_a_clear_error(tmp_path, replace, message):
    path = write(tmp_path, **replace)
    with pytest.raises(HyperParameterError, match=message) as error:
        read_input_nn(path)
    assert "input.nn" in str(error.value)


def test_an_unreadable_file_is_named(tmp_path):
    with pytest.raises(HyperParameterError, match="cannot read n2p2 file .*nothing.nn"):
        HDNNP(["Cu"], cutoff=4.0, symmetry_functions=str(tmp_path / "nothing.nn"))
