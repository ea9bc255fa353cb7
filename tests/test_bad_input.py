"""Malformed input, as a new user would give it: each case must fail with nnpot's own exception
type and a message naming the culprit (file, frame, key, element, option) — never a traceback
from inside torch, never a silently wrong number."""

from __future__ import annotations

import pickle

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import make_potential

import nnpot
from nnpot import NNPCalculator
from nnpot.cli import main as cli_main
from nnpot.core.structure_checks import OverlappingAtomsError, StructureError
from nnpot.train import ConfigError, DataError, config_from_dict, fit, load_config
from nnpot.train.config import KeysConfig
from nnpot.train.data import build_cache

CUDA = torch.cuda.is_available()


# -------------------------------------------------------------------------------------------
# extxyz data
# -------------------------------------------------------------------------------------------
def labelled(atoms: Atoms, energy=-1.0, forces="zeros", stress=None, **extra) -> Atoms:
    frame = atoms.copy()
    if isinstance(forces, str):
        forces = np.random.default_rng(0).normal(0, 0.1, (len(atoms), 3))
    results = {"energy": energy, "forces": forces, **extra}
    if stress is not None:
        results["stress"] = stress
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def cu(n=1, rattle=0.05, seed=0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((n, n, n))
    atoms.rattle(rattle, seed=seed)
    return atoms


def write(tmp_path, frames, name="data.extxyz"):
    path = tmp_path / name
    ase.io.write(path, frames, format="extxyz")
    return path


def cache(tmp_path, path, keys=None):
    return build_cache(path, 3.0, keys or KeysConfig(), tmp_path / "cache", progress=False)


def forces_in_info(atoms: Atoms, forces: np.ndarray) -> Atoms:
    """A frame whose forces sit in atoms.info (as some converters write them), mis-shaped."""
    frame = labelled(atoms)
    frame.calc = SinglePointCalculator(frame, energy=-1.0)
    frame.info["forces"] = forces
    return frame


def duplicated_atom() -> Atoms:
    atoms = cu()
    atoms += atoms[:1]
    return atoms


def nan_position() -> Atoms:
    atoms = cu()
    atoms.positions[2, 0] = np.nan
    return atoms


def flat_cell() -> Atoms:
    atoms = cu()
    atoms.cell[2] = atoms.cell[0] + atoms.cell[1] + [0.0, 0.0, 1e-3]
    return atoms


DATA_CASES = {
    "missing energy key": (lambda: [labelled(cu()), cu()], DataError,
                           r"frame 1 has no energy key 'energy'; keys found"),
    "forces of the wrong shape": (lambda: [forces_in_info(cu(), np.zeros(6))], DataError,
                                  r"frame 0: forces 'forces' have shape \(6,\), expected \(4, 3\)"),
    "NaN energy": (lambda: [labelled(cu()), labelled(cu(), energy=np.nan)], DataError,
                   r"frame 1: energy contains NaN"),
    "NaN positions": (lambda: [labelled(nan_position())], DataError,
                      r"frame 0: positions contain NaN"),
    "duplicated atom": (lambda: [labelled(cu()), labelled(duplicated_atom())],
                        DataError, r"frame 1: atoms 0 and 4 \(Cu, Cu\) are 0\.0000 Å apart"),
    "nearly singular cell": (lambda: [labelled(flat_cell())], DataError,
                             r"frame 0: singular cell"),
    "frame with no atoms": (lambda: [labelled(cu()), labelled(Atoms(cell=np.eye(3) * 3, pbc=True),
                                                              forces=np.zeros((0, 3)))],
                            DataError, r"frame 1: the structure has no atoms"),
    "stress with five values": (lambda: [labelled(cu(), stress=np.zeros(5))], DataError,
                                r"frame 0: cannot read as extxyz: .*stress"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_training_frames_name_file_and_frame(tmp_path, case):
    make_frames, error, message = DATA_CASES[case]
    path = write(tmp_path, make_frames())
    with pytest.raises(error, match=message) as info:
        cache(tmp_path, path)
    assert str(path) in str(info.value)


def test_a_virial_with_five_values_names_its_key(tmp_path):
    frame = labelled(cu())
    frame.info["dft_virial"] = np.zeros(5)
    path = write(tmp_path, [frame])
    with pytest.raises(DataError, match=r"frame 0: virial 'dft_virial' must have 6 \(Voigt\) or 9"):
        cache(tmp_path, path, KeysConfig(virial="dft_virial"))


def test_a_file_that_is_not_extxyz(tmp_path):
    path = tmp_path / "notes.extxyz"
    path.write_text("these are my notes\nnot a structure\n")
    with pytest.raises(DataError, match=r"notes\.extxyz, frame 0: cannot read as extxyz"):
        cache(tmp_path, path)


def test_an_empty_data_file(tmp_path):
    path = tmp_path / "empty.extxyz"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.extxyz holds no frames"):
        cache(tmp_path, path)


def train_config(tmp_path, train, **training) -> dict:
    return {"output": str(tmp_path / "run"), "seed": 0,
            "model": {"type": "SchNet", "cutoff": 3.0,
                      "params": {"n_features": 8, "n_interactions": 1, "n_rbf": 4}},
            "data": {"train": str(train), "validation_fraction": 0.25,
                     "cache_dir": str(tmp_path / "cache")},
            "training": {"max_epochs": 1, "progress": False, "threads": 1, **training}}


def test_all_zero_force_labels_are_refused(tmp_path):
    path = write(tmp_path, [labelled(cu(seed=k), energy=-k, forces=np.zeros((4, 3)))
                            for k in range(4)])
    with pytest.raises(DataError, match=r"every force label under the key 'forces' is exactly 0"):
        fit(config_from_dict(train_config(tmp_path, path)))


def test_an_element_only_in_the_validation_file(tmp_path):
    train = write(tmp_path, [labelled(cu(seed=k), energy=-k) for k in range(4)])
    other = cu()
    other.symbols[0] = "Ag"
    validation = write(tmp_path, [labelled(other)], "validation.extxyz")
    config = train_config(tmp_path, train)
    config["data"]["validation"] = str(validation)
    with pytest.raises(DataError, match=r"validation\.extxyz: element\(s\) \['Ag'\] do not occur"):
        fit(config_from_dict(config))


# -------------------------------------------------------------------------------------------
# YAML configs
# -------------------------------------------------------------------------------------------
CONFIG_CASES = [
    ({"training": {"grad_clip": -1.0}}, r"training\.grad_clip must be > 0"),
    ({"training": {"grad_clip": 0}}, r"training\.grad_clip must be > 0"),
    ({"training": {"early_stopping_patience": 0}}, r"training\.early_stopping_patience must be > 0"),
    ({"training": {"max_time_min": 0}}, r"training\.max_time_min must be > 0"),
    ({"model": {"snapshot_committee": True}}, r"model\.snapshot_committee .* needs model\.init_from"),
    ({"model": {"committee_with": "a.pt"}}, r"model\.committee_with must be a list, got 'a\.pt'"),
    ({"model": {"committee_with": [3]}}, r"model\.committee_with must be a list of model files"),
    ({"data": {"split_seed": 1.5}}, r"data\.split_seed must be int, got 1\.5"),
    ({"data": {"split_seed": True}}, r"data\.split_seed must be int, got True"),
    ({"training": {"keep_epoch": "final"}}, r"training\.keep_epoch must be best or last, got 'final'"),
    ({"training": {"max_time_min": -5}}, r"training\.max_time_min must be > 0"),
    ({"training": {"loss": {"forces": -1}}}, r"training\.loss\.forces must be ≥ 0"),
    ({"training": {"loss": {"energy": 0, "forces": 0, "stress": 0}}}, r"training\.loss: at least one"),
    ({"training": {"weight_decay": -0.1}}, r"training\.weight_decay must be ≥ 0"),
    ({"training": {"scheduler": {"min_lr": -1e-6}}}, r"training\.scheduler\.min_lr must be ≥ 0"),
    ({"training": {"batch_size": 0}}, r"training\.batch_size must be ≥ 1"),
    ({"training": {"lr": "fast"}}, r"training\.lr must be a number, got 'fast'"),
    ({"training": {"threads": -2}}, r"training\.threads must be > 0"),
    ({"training": {"loss": {"huber_delta": 0}}}, r"training\.loss\.huber_delta must be > 0"),
    ({"training": {"loss": {"huber_delta": {"force": 0.1}}}},
     r"training\.loss\.huber_delta\.force: unknown term .force. \(energy, forces or stress\)"),
    ({"training": {"loss": {"huber_delta": {"forces": -1}}}},
     r"training\.loss\.huber_delta\.forces must be > 0"),
    ({"training": {"scheduler": {"factor": 2}}}, r"training\.scheduler\.factor must be in \(0, 1\)"),
    ({"training": {"lrate": 0.1}}, r"unknown key 'training\.lrate'"),
    ({"model": {"params": {"n_features": "8"}}}, r"model\.params\.n_features: n_features must be an integer"),
    ({"model": {"params": {"n_features": 0}}}, r"model\.params\.n_features: n_features must be ≥ 2"),
    ({"model": {"params": {"n_interactions": -1}}}, r"model\.params\.n_interactions: .* ≥ 1"),
    ({"model": {"params": {"n_layers": 3}}}, r"model\.params do not fit SchNet: .*n_layers"),
    ({"model": {"cutoff": -3.0}}, r"model\.cutoff must be > 0"),
    ({"model": {"type": "PaiNN"}}, r"model\.type 'PaiNN' is not a known model"),
    ({"data": {"neighbor_backend": "fast"}}, r"data\.neighbor_backend must be one of"),
    ({"data": {"e0": {"Cu": "low"}}}, r"data\.e0\.Cu must be a number"),
    ({"data": {"validation_fraction": 1.0}}, r"data\.validation_fraction must be in \[0, 1\)"),
    ({"seed": "zero"}, r"seed must be an integer"),
]


def merged(base: dict, patch: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def good_data(tmp_path):
    return write(tmp_path, [labelled(cu(seed=k), energy=-k) for k in range(4)])


@pytest.mark.parametrize("patch, message", CONFIG_CASES)
def test_config_values_are_checked_with_the_key_path(tmp_path, good_data, patch, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(merged(train_config(tmp_path, good_data), patch))


def test_a_number_yaml_reads_as_text_is_taken_as_the_number(tmp_path, good_data):
    path = tmp_path / "config.yaml"
    path.write_text(f"data: {{train: {good_data}}}\ntraining: {{lr: 1e-3, scheduler: {{min_lr: 1e-6}}}}\n")
    config = load_config(path)
    assert config.training.lr == 1e-3 and config.training.scheduler.min_lr == 1e-6


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_clear_line(tmp_path, good_data):
    with pytest.raises(ConfigError, match=r"device: device 'cuda' was asked for, but CUDA is not"):
        config_from_dict(merged(train_config(tmp_path, good_data), {"device": "cuda"}))


@pytest.mark.parametrize("key", ["output", "cache_dir"])
def test_a_file_where_a_folder_is_expected(tmp_path, good_data, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    config = train_config(tmp_path, good_data)
    (config if key == "output" else config["data"])[key] = str(blocker)
    with pytest.raises(ConfigError, match=rf"{'data.' if key == 'cache_dir' else ''}{key}: .*a_file "
                                          r"exists and is not a folder"):
        config_from_dict(config)


@pytest.mark.parametrize("text, message", [
    ("data: [unclosed", r"is not valid YAML"),
    ("- a list\n- not a mapping\n", r"config must be a mapping"),
    ("data: {train: missing.extxyz}\n", r"data\.train: file missing\.extxyz not found"),
])
def test_broken_yaml_files(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


# -------------------------------------------------------------------------------------------
# Model files
# -------------------------------------------------------------------------------------------
@pytest.fixture
def model_file(tmp_path):
    return make_potential().save(tmp_path / "model.pt")


def rewritten(path, change):
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)
    return path


MODEL_FILE_CASES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:2000]), r"not a readable nnpot model file"),
    "a newer format": (lambda p: rewritten(p, lambda d: d.update(format_version=99)),
                       r"uses model-file format 99.*Upgrade nnpot"),
    "a pickle": (lambda p: p.write_bytes(pickle.dumps({"weights": [1, 2, 3]})),
                 r"not a readable nnpot model file"),
    "another program's torch file": (lambda p: torch.save({"state_dict": {}}, p),
                                     r"not an nnpot model file \(it lacks the 'nnpot-model' marker\)"),
    "an entry missing": (lambda p: rewritten(p, lambda d: d.pop("hparams")),
                         r"damaged nnpot model file: the entry 'hparams'.* is missing"),
    "an unsupported dtype": (lambda p: rewritten(p, lambda d: d.update(dtype="float16")),
                             r"unsupported dtype 'float16'"),
    "degenerate hyper-parameters": (lambda p: rewritten(p, lambda d: d["hparams"].update(n_interactions=0)),
                                    r"stored hyper-parameters do not build a SchNet: n_interactions"),
}


@pytest.mark.parametrize("case", list(MODEL_FILE_CASES))
def test_damaged_model_files(model_file, case):
    damage, message = MODEL_FILE_CASES[case]
    damage(model_file)
    with pytest.raises(ValueError, match=message) as info:
        nnpot.load(model_file)
    assert str(model_file) in str(info.value)


def test_a_folder_is_not_a_model_file(tmp_path):
    with pytest.raises(ValueError, match=r"is a folder, not a model file"):
        nnpot.load(tmp_path)


def test_a_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model file .*nothing\.pt does not exist"):
        nnpot.load(tmp_path / "nothing.pt")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_a_missing_gpu_is_not_reported_as_a_corrupt_file(model_file):
    with pytest.raises(ValueError, match=r"device 'cuda' was asked for, but CUDA is not available"):
        nnpot.load(model_file, device="cuda")


# -------------------------------------------------------------------------------------------
# Structures
# -------------------------------------------------------------------------------------------
def unknown_element() -> Atoms:
    atoms = cu()
    atoms.symbols[1] = "Au"
    return atoms


def own_image_too_close() -> Atoms:
    return Atoms("Cu", positions=[[0, 0, 0]], cell=[[0.2, 0, 0], [0, 3, 0], [0, 0, 3]], pbc=True)


STRUCTURE_CASES = {
    "NaN positions": (nan_position, StructureError, r"positions contain NaN or inf \(atoms \[2\]\)"),
    "overlapping atoms": (duplicated_atom, OverlappingAtomsError, r"atoms 0 and 4 \(Cu, Cu\) are 0\.0000 Å"),
    "singular cell": (flat_cell, StructureError, r"singular cell .*0\.001 Å thick"),
    "a periodic repeat of 0.2 Å": (own_image_too_close, StructureError, r"a1 .* 0\.2 Å thick"),
    "unknown element": (unknown_element, ValueError, r"element\(s\) Au not known to this potential"),
    "empty Atoms": (lambda: Atoms(), StructureError, r"the structure has no atoms"),
}


@pytest.mark.parametrize("case", list(STRUCTURE_CASES))
def test_structures_no_physics_allows(potential64, case):
    build, error, message = STRUCTURE_CASES[case]
    atoms = build()
    atoms.calc = NNPCalculator(potential64)
    with pytest.raises(error, match=message):
        atoms.get_forces()


def test_stress_of_a_molecule_is_not_implemented(potential64):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    atoms.calc = NNPCalculator(potential64)
    with pytest.raises(PropertyNotImplementedError, match=r"periodic in all three"):
        atoms.get_stress()


def test_relax_of_overlapping_atoms_does_not_converge_in_zero_steps(potential64):
    with pytest.raises(OverlappingAtomsError):
        nnpot.relax(duplicated_atom(), potential64, log=None)


@pytest.mark.parametrize("option, value, message", [
    ("temperature", -10.0, r"temperature must be ≥ 0 K, got -10"),
    ("friction", -0.01, r"friction must be > 0 1/fs"),
    ("timestep", 0.0, r"timestep must be > 0 fs"),
    ("steps", -1, r"steps must be a whole number ≥ 0"),
    ("interval", 0, r"interval must be a whole number ≥ 1"),
])
def test_md_arguments_are_named(potential64, option, value, message):
    with pytest.raises(ValueError, match=message):
        nnpot.md(cu(), potential64, **{option: value}, progress=False)


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["eval", "m.pt", "d.extxyz", "--batch-size", "0"],
     r"argument --batch-size: 0 is not a whole number ≥ 1"),
    (["md", "m.pt", "s.cif", "--temperature", "-5"], r"argument --temperature: -5 is not a number ≥ 0"),
    (["relax", "m.pt", "s.cif", "--fmax", "0"], r"argument --fmax: 0 is not a number > 0"),
    (["eval", "m.pt", "d.extxyz", "--json"], r"--json: expected one argument"),
    (["md", "m.pt", "s.cif", "--steps", "ten"], r"argument --steps: 'ten' is not a whole number"),
])
def test_cli_usage_errors_name_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_cli_user_errors_are_one_line_with_status_1(tmp_path, capsys, model_file):
    structure = tmp_path / "cu.extxyz"
    ase.io.write(structure, cu())
    cases = [
        (["relax", str(model_file), str(structure), "--pressure", "1"], r"--pressure .* needs --cell"),
        (["md", str(tmp_path / "none.pt"), str(structure)], r"model file .*none\.pt does not exist"),
        (["md", str(model_file), str(tmp_path / "none.cif")], r"structure file .*none\.cif not found"),
        (["train", str(tmp_path / "none.yaml")], r"config file .*none\.yaml not found"),
    ]
    if not CUDA:
        cases.append((["md", str(model_file), str(structure), "--device", "cuda"],
                      r"device 'cuda' was asked for, but CUDA is not available"))
    for argv, message in cases:
        assert cli_main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("nnpot: error: ") and err.count("\n") == 1, err
        assert pytest.importorskip("re").search(message, err), (argv, err)


def test_cli_debug_anywhere_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli_main(["md", str(tmp_path / "none.pt"), "s.cif", "--debug"])


def test_cli_bugs_are_not_passed_off_as_user_errors(monkeypatch, capsys):
    import nnpot.train as train

    def broken(*args, **kwargs):
        raise KeyError("an internal slip")

    monkeypatch.setattr(train, "fit", broken)
    assert cli_main(["train", "config.yaml"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnpot {nnpot.__version__}"
