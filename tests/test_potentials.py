"""Shipped potentials: load, their cards exist, and their errors hold on independent data."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_file

import nnpot
from nnpot.train.config import KeysConfig
from nnpot.train.evaluate import evaluate, labelled_graphs

POTENTIALS = Path(__file__).resolve().parents[1] / "potentials"


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
    ("mlearn-si-hdnnp", "mae"), ("mlearn-si-nequip", "mae"), ("mlearn-ge-hdnnp", "mae"),
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
