"""Shipped potentials: load, their cards exist, and their errors hold on independent data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import shared_file

import nnpot
from nnpot.train.config import KeysConfig
from nnpot.train.evaluate import evaluate, labelled_graphs

REPOSITORY = Path(__file__).resolve().parents[1]
POTENTIALS = REPOSITORY / "potentials"


@pytest.mark.parametrize("name", ["cu"])
def test_shipped_potential_is_complete(name):
    folder = POTENTIALS / name
    for file in ("model.pt", "config.yaml", "model_card.md"):
        assert (folder / file).is_file(), file
    assert (folder / "model.pt").stat().st_size < 5e6  # shipped models stay small
    potential = nnpot.load(folder / "model.pt")
    assert potential.provenance["train_sha256"]
    assert "test" in potential.provenance["metrics"]


def test_cu_potential_on_an_independent_emt_test_set():
    """The shared EMT Cu test set was generated separately (other seeds, recipe and code)."""
    potential = nnpot.load(POTENTIALS / "cu" / "model.pt")
    graphs = labelled_graphs(str(shared_file("emt_cu_test.extxyz")), potential.cutoff, KeysConfig())
    metrics, _ = evaluate(potential, graphs)
    summary = metrics.summary()
    assert summary["energy"]["mae"] < 1.0   # meV/atom (measured: 0.09)
    assert summary["forces"]["mae"] < 10.0  # meV/Å (measured: 1.9)
    assert summary["stress"]["mae"] < 0.5   # meV/Å³ (measured: 0.05)


@pytest.mark.parametrize("name, headline", [
    ("mlearn-si-nequip", "mae"),
    ("mlearn-mo-nequip", "mae"), ("mlearn-li-hdnnp", "mae"), ("deepmd-water-nequip", "rmse")])
def test_shipped_dft_potential_is_complete(name, headline):
    """DFT potentials: model, the config that trained it, a card with the validation errors
    (in bold the force error its target is stated in: MAE for mlearn, RMSE for water) and the MD
    stability check; the model records its training data and validation metrics."""
    folder = POTENTIALS / name
    for file in ("model.pt", "config.yaml", "model_card.md", "learning_curves.png",
                 "stability.json"):
        assert (folder / file).is_file(), file
    assert (folder / "model.pt").stat().st_size < 5e6
    potential = nnpot.load(folder / "model.pt")
    assert potential.provenance["train_sha256"]
    validation = potential.provenance["metrics"]["validation"]
    card = (folder / "model_card.md").read_text()
    assert f"**{validation['forces'][headline]:.1f}**" in card   # the card shows the model's numbers


# potentials fitted on every training frame, whose errors come from nnpot cv
CROSS_VALIDATED = ["mlearn-si-mace", "mlearn-li-mace", "mlearn-mo-mace", "mlearn-mo-hdnnp",
                   "mlearn-ge-hdnnp", "mlearn-ge-mace", "mlearn-si-hdnnp", "mlearn-si-mace-hdnnp"]


@pytest.mark.parametrize("name", CROSS_VALIDATED)
def test_cross_validated_potential_is_complete(name):
    """Potentials fitted on every training frame: the config says so, the card shows the
    5-fold cross-validation means ± standard errors of the folder's cv_report.json, and the
    MD stability check passed at every temperature."""
    folder = POTENTIALS / name
    for file in ("model.pt", "config.yaml", "model_card.md", "cv_report.json",
                 "learning_curves.png", "stability.json"):
        assert (folder / file).is_file(), file
    assert (folder / "model.pt").stat().st_size < 5e6
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["data"]["validation_fraction"] == 0
    assert config["training"]["keep_epoch"] == "last"
    report = json.loads((folder / "cv_report.json").read_text())
    assert len(report["folds"]) == 5
    card = (folder / "model_card.md").read_text()
    for key in ("energy_mae", "forces_mae"):
        entry = report["mean"][key]
        assert f"**{entry['mean']:.2f} ± {entry['stderr']:.2f}**" in card, key
    provenance = nnpot.load(folder / "model.pt").provenance
    assert provenance["train_sha256"]
    assert all(row["stable"] for row in json.loads((folder / "stability.json").read_text()))
    if (folder / "cv_parity.png").is_file():
        assert "`cv_parity.png`" in card
    # the card says where the epochs ran: each stretch when the run moved (GPU, then CPU)
    segments = provenance["training"].get("segments", [])
    if len(segments) > 1:
        for segment in segments:
            assert f"{segment['epochs'][1] - segment['epochs'][0] + 1} epochs on " in card


# keys that say where and how a run ran, not what it fits: they may differ between the run
# that trained a shipped model and the config beside it (paths are absolute where it ran)
RUN_TIME_KEYS = {"committee_with", "init_from", "threads", "progress", "checkpoint_every"}


def _assert_subset(written: dict, trained: dict, where: str) -> None:
    """Every key the config file sets has that value in the config the model was trained by."""
    for key, value in written.items():
        if key in RUN_TIME_KEYS:
            continue
        assert key in trained, f"{where}.{key}"
        if isinstance(value, dict):
            _assert_subset(value, trained[key], f"{where}.{key}")
        else:
            assert trained[key] == value, f"{where}.{key}: {trained[key]!r} != {value!r}"


@pytest.mark.parametrize("name", CROSS_VALIDATED)
def test_shipped_model_was_trained_by_its_config(name):
    """The folder's config.yaml is the recipe of its model.pt (model, loss, schedule, budget,
    seed and training file), so rerunning it refits that model and the card's recipe is true.
    Read as written (no paths resolved: a committee's other members are not in a clone)."""
    folder = POTENTIALS / name
    written = yaml.safe_load((folder / "config.yaml").read_text())
    trained = nnpot.load(folder / "model.pt").provenance["config"]
    for section in ("model", "training"):
        _assert_subset(written[section], trained[section], f"{name}: {section}")
    assert trained["seed"] == written["seed"]
    assert Path(trained["data"]["train"]).name == Path(written["data"]["train"]).name


# keys a shipped config may set otherwise than its CV config: keep_epoch (nnpot cv keeps each
# fold's last epoch by design) and the run-time keys (threads, checkpoints, members joined)
CV_RUN_KEYS = RUN_TIME_KEYS | {"keep_epoch"}


def _recipe(config: dict) -> dict:
    """What a config fits: its model and training sections without run-time keys, its seed and
    its training file's name."""
    def strip(section: dict) -> dict:
        return {key: value for key, value in section.items() if key not in CV_RUN_KEYS}

    return {"model": strip(config["model"]), "training": strip(config["training"]),
            "seed": config.get("seed", 0), "train": Path(config["data"]["train"]).name}


@pytest.mark.parametrize("name", CROSS_VALIDATED)
def test_card_cross_validates_the_shipped_recipe(name):
    """The CV errors on a card are of the recipe the folder fits: each config*.yaml that trains
    a network of its model.pt is one of the recipes its cv_report.json cross-validated
    (benchmarks/cv/), with the same model, loss, schedule, budget, seed and training file. A
    refit with a changed recipe whose CV was not rerun fails here."""
    folder = POTENTIALS / name
    cv_configs = json.loads((folder / "cv_report.json").read_text())["config"].split(" + ")
    cross_validated = [_recipe(yaml.safe_load((REPOSITORY / "benchmarks" / "cv" / Path(path).name)
                                              .read_text())) for path in cv_configs]
    for path in sorted(folder.glob("config*.yaml")):
        assert _recipe(yaml.safe_load(path.read_text())) in cross_validated, \
            f"{path.relative_to(POTENTIALS)} is not a recipe of its cv_report.json ({cv_configs})"
