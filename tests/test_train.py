"""The trainer: data errors, statistics, masked losses, resume, DDP, eval JSON."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import make_potential
from torch_geometric.data import Batch

import nnpot
from nnpot.cli import main as cli_main
from nnpot.core.graph import AtomicGraph, batch_graphs
from nnpot.train import ConfigError, DataError, config_from_dict, fit, load_config
from nnpot.train.config import KeysConfig, LossConfig
from nnpot.train.data import build_cache
from nnpot.train.frames import frame_labels
from nnpot.train.loss import WeightedLoss
from nnpot.train.statistics import fit_e0


def emt_frames(n: int, seed: int = 0, drop_forces=(), drop_stress=()):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell.array @ (strain + strain.T) / 2, scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy()}
        if k not in drop_forces:
            results["forces"] = atoms.get_forces()
        if k not in drop_stress:
            results["stress"] = atoms.get_stress()
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, **results)
        frames.append(frame)
    return frames


@pytest.fixture
def emt_file(tmp_path) -> Path:
    path = tmp_path / "emt.extxyz"
    ase.io.write(path, emt_frames(16), format="extxyz")
    return path


SMALL_MODELS = {
    "SchNet": {"type": "SchNet", "cutoff": 4.0,
               "params": {"n_features": 8, "n_interactions": 1, "n_rbf": 8}},
    "HDNNP": {"type": "HDNNP", "cutoff": 4.0,
              "params": {"hidden": [8], "symmetry_functions": [
                  {"type": "G2", "eta": 1.0, "rs": 2.5}, {"type": "G2", "eta": 1.0, "rs": 3.5},
                  {"type": "G9", "eta": 0.1, "zeta": 2, "lambda": 1, "cutoff": 3.0},
                  {"type": "G9", "eta": 0.1, "zeta": 2, "lambda": -1, "cutoff": 3.0}]}},
    "HDNNP committee": {"type": "HDNNP", "cutoff": 4.0, "committee": 2,
                        "params": {"hidden": [8], "symmetry_functions": [
                            {"type": "G2", "eta": 1.0, "rs": 2.5},
                            {"type": "G9", "eta": 0.1, "zeta": 2, "lambda": 1, "cutoff": 3.0}]}},
}


def small_config(tmp_path, train, model: str = "SchNet", **training) -> dict:
    return {
        "output": str(tmp_path / "run"), "seed": 3,
        "model": copy.deepcopy(SMALL_MODELS[model]),  # tests change their copy
        "data": {"train": str(train), "validation_fraction": 0.25,
                 "cache_dir": str(tmp_path / "cache")},
        "training": {"batch_size": 4, "max_epochs": 4, "lr": 5e-3, "progress": False,
                     "checkpoint_every": 1, "threads": 1, **training},
    }


# -------------------------------------------------------------------------------------------
def test_training_writes_a_usable_run(tmp_path, emt_file):
    best = fit(config_from_dict(small_config(tmp_path, emt_file)))
    run = tmp_path / "run"
    for name in ["best.pt", "checkpoint.pt", "log.csv", "config.yaml", "learning_curves.png",
                 "parity_validation.png", "model_card.md", "metrics.json"]:
        assert (run / name).is_file(), name
    atoms = emt_frames(1, seed=9)[0]
    atoms.calc = nnpot.NNPCalculator(best)
    assert np.isfinite(atoms.get_potential_energy())
    card = (run / "model_card.md").read_text()
    assert "SHA-256" in card and "forces MAE" in card
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["frames"] == 4
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 4  # header + epochs


@pytest.mark.parametrize("model", sorted(SMALL_MODELS))
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, emt_file, monkeypatch, model):
    config = small_config(tmp_path, emt_file, model, checkpoint_every=2,
                          scheduler={"type": "cosine", "warmup_epochs": 1},
                          loss={"final_energy": 5.0, "final_fraction": 0.5})
    config["output"] = str(tmp_path / "straight")
    fit(config_from_dict(config))

    from nnpot.train import trainer as trainer_module
    original = trainer_module.Trainer.train_epoch

    def dies_in_epoch_3(self):
        if self.epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self)

    config["output"] = str(tmp_path / "killed")
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        fit(config_from_dict(config))
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", original)
    with pytest.raises(ConfigError, match="--resume"):  # never silently overwrite a run
        fit(config_from_dict(config))
    fit(config_from_dict(config), resume=True)

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][key], b["ema"]["shadow"][key]), key


def test_same_seed_gives_the_same_model(tmp_path, emt_file):
    first = small_config(tmp_path, emt_file, max_epochs=2)
    first["output"] = str(tmp_path / "one")
    second = dict(first, output=str(tmp_path / "two"))
    p1, p2 = fit(config_from_dict(first)), fit(config_from_dict(second))
    s1, s2 = nnpot.load(p1).state_dict(), nnpot.load(p2).state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("model", [name if name == "SchNet" else pytest.param(name, marks=pytest.mark.slow)
                                   for name in sorted(SMALL_MODELS)])
def test_ddp_with_two_gloo_processes_trains_and_writes_one_model(tmp_path, emt_file, model):
    # two epochs with a final stage in the second: the ranks share best.pt's weights by broadcast
    config = small_config(tmp_path, emt_file, model, max_epochs=2,
                          loss={"final_energy": 5.0, "final_fraction": 0.5})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "nnpot.cli", "train", str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "checkpoint.pt"]
    model = nnpot.load(run / "best.pt")
    assert model.species == ["Cu"]
    assert len((run / "log.csv").read_text().splitlines()) == 3
    assert proc.stdout.count("final stage") == 1
    assert proc.stdout.count("wrote") == 1  # only rank 0 reports and writes


# -------------------------------------------------------------------------------------------
def test_e0_regression_recovers_known_values():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, (40, 3)).astype(float)
    e0_true = np.array([-3.7, -1.9, -0.5])
    energies = counts @ e0_true + rng.normal(0, 1e-6, 40)
    e0 = fit_e0(counts, energies, ["Cu", "O", "H"])
    assert np.allclose([e0["Cu"], e0["O"], e0["H"]], e0_true, atol=1e-6)


def test_frames_without_forces_or_stress_are_masked(tmp_path):
    path = tmp_path / "partial.extxyz"
    ase.io.write(path, emt_frames(12, drop_forces=(0, 5, 7), drop_stress=(1, 2, 3, 9)),
                 format="extxyz")
    cache = build_cache(path, 4.0, KeysConfig(), tmp_path / "cache", progress=False)
    from nnpot.train.data import GraphDataset
    ds = GraphDataset(cache)
    assert ds.arrays("has_forces").tolist() == [k not in (0, 5, 7) for k in range(12)]
    assert ds.arrays("has_stress").tolist() == [k not in (1, 2, 3, 9) for k in range(12)]
    best = fit(config_from_dict(small_config(tmp_path, path, max_epochs=2)))
    assert nnpot.load(best) is not None


def test_masked_entries_cannot_poison_the_loss():
    atoms = emt_frames(2)
    graphs = []
    for k, a in enumerate(atoms):
        g = AtomicGraph.from_atoms(a, 4.0)
        g.energy = torch.tensor([a.get_potential_energy()], dtype=torch.float64)
        g.forces = torch.from_numpy(a.get_forces())
        g.stress = torch.from_numpy(a.get_stress()).reshape(1, 6)
        g.has_forces = torch.tensor([k == 0])
        g.has_stress = torch.tensor([k == 1])
        graphs.append(g)
    batch = batch_graphs(graphs)
    pred = {"energy": torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True),
            "forces": torch.full((batch.num_nodes, 3), float("nan"), requires_grad=True),
            "stress": torch.full((2, 6), float("nan"), requires_grad=True)}
    n0 = graphs[0].num_nodes
    with torch.no_grad():  # valid predictions only where labels exist
        pred["forces"][:n0] = 0.0
        pred["stress"][1] = 0.0
    loss = WeightedLoss(LossConfig())(pred, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred["forces"].grad).all() and torch.isfinite(pred["stress"].grad).all()
    assert (pred["forces"].grad[n0:] == 0).all()


def labelled_batch(frames) -> Batch:
    graphs = []
    for a in frames:
        g = AtomicGraph.from_atoms(a, 4.0)
        g.energy = torch.tensor([a.get_potential_energy()], dtype=torch.float64)
        g.forces = torch.from_numpy(a.get_forces())
        g.stress = torch.from_numpy(a.get_stress()).reshape(1, 6)
        g.has_forces, g.has_stress = torch.tensor([True]), torch.tensor([True])
        graphs.append(g)
    return batch_graphs(graphs)


def test_frame_weights_count_frames_as_if_repeated():
    """A bootstrap count of 2 weighs a frame as two copies of it; 0 leaves it out."""
    frames = emt_frames(3)
    generator = torch.Generator().manual_seed(0)

    def predictions(batch):
        return {"energy": batch.energy + torch.rand(batch.num_graphs, generator=generator,
                                                    dtype=torch.float64),
                "forces": batch.forces + torch.rand(batch.num_nodes, 3, generator=generator,
                                                    dtype=torch.float64),
                "stress": batch.stress + torch.rand(batch.num_graphs, 6, generator=generator,
                                                    dtype=torch.float64)}

    loss = WeightedLoss(LossConfig(stress=10.0))
    batch = labelled_batch(frames)
    out = predictions(batch)
    weighted = loss(out, batch, frame_weights=torch.tensor([2.0, 0.0, 1.0]))
    repeated = labelled_batch([frames[0], frames[0], frames[2]])
    size = [len(a) for a in frames]
    copied = {"energy": out["energy"][[0, 0, 2]],
              "forces": torch.cat([out["forces"][:size[0]], out["forces"][:size[0]],
                                   out["forces"][size[0] + size[1]:]]),
              "stress": out["stress"][[0, 0, 2]]}
    assert float(weighted) == pytest.approx(float(loss(copied, repeated)), rel=1e-12)
    assert loss(out, batch, frame_weights=torch.ones(3)) == pytest.approx(float(loss(out, batch)))
    assert loss(out, batch, frame_weights=torch.zeros(3)) is None


def test_virial_becomes_stress(tmp_path):
    atoms = emt_frames(1)[0]
    stress = atoms.get_stress(voigt=False)
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy())
    frame.info["virial"] = -stress * frame.get_volume()  # W = −σV
    labels = frame_labels(frame, KeysConfig(), "frame 0")
    assert np.allclose(labels["stress"], atoms.get_stress())


# -------------------------------------------------------------------------------------------
def test_missing_energy_key_names_file_frame_and_keys(tmp_path, emt_file):
    config = small_config(tmp_path, emt_file)
    config["data"]["keys"] = {"energy": "REF_energy"}
    with pytest.raises(DataError, match=r"emt.extxyz, frame 0 has no energy key 'REF_energy'; "
                                        r"keys found: \['energy', 'forces', 'stress'\]"):
        fit(config_from_dict(config))


def test_custom_keys_are_read(tmp_path):
    frames = emt_frames(8)
    for f in frames:
        f.info["dft_energy"] = f.get_potential_energy()
        f.arrays["REF_forces"] = f.get_forces()
        f.calc = None
    path = tmp_path / "custom.extxyz"
    ase.io.write(path, frames, format="extxyz")
    config = small_config(tmp_path, path, max_epochs=1, loss={"stress": 0.0})
    config["data"]["keys"] = {"energy": "dft_energy", "forces": "REF_forces"}
    assert nnpot.load(fit(config_from_dict(config))).species == ["Cu"]


def test_forces_key_absent_everywhere_is_an_error(tmp_path, emt_file):
    config = small_config(tmp_path, emt_file)
    config["data"]["keys"] = {"forces": "REF_forces"}
    with pytest.raises(DataError, match="no training frame has forces under the key 'REF_forces'"):
        fit(config_from_dict(config))


def test_wrong_force_shape_names_the_frame(tmp_path):
    frames = emt_frames(3)
    frames[2].info["bad_forces"] = np.zeros(5)
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(DataError, match="frame 2: forces 'bad_forces' have shape"):
        frame_labels(ase.io.read(path, 2), KeysConfig(forces="bad_forces"), f"{path}, frame 2")


@pytest.mark.parametrize("patch, message", [
    ({"training": {"lr": "fast"}}, "training.lr must be a number"),
    ({"training": {"learning_rate": 1e-3}}, "unknown key 'training.learning_rate'"),
    ({"modle": {}}, "unknown key 'modle'"),
    ({"model": {"type": "Transformer"}}, "model.type 'Transformer' is not a known model"),
    ({"data": {"train": "nowhere.extxyz"}}, "data.train: file nowhere.extxyz not found"),
    ({"training": {"batch_size": 0}}, "training.batch_size must be ≥ 1"),
    ({"data": {"e0": "guess"}}, "data.e0 must be"),
    ({"model": {"pair_repulsion": "lj"}}, r"model.pair_repulsion must be null or one of \['zbl'\]"),
])
def test_config_errors_name_the_key(tmp_path, emt_file, patch, message):
    config = small_config(tmp_path, emt_file)
    for section, values in patch.items():
        if isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    with pytest.raises(ConfigError, match=message):
        config_from_dict(config)


def test_yaml_config_paths_are_relative_to_the_file(tmp_path, emt_file):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "../emt.extxyz"}}))
    assert load_config(path).data.train == str(emt_file.resolve())
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_graph_cache_is_reused(tmp_path, emt_file):
    first = build_cache(emt_file, 4.0, KeysConfig(), tmp_path / "c", progress=False)
    stamp = first.stat().st_mtime_ns
    again = build_cache(emt_file, 4.0, KeysConfig(), tmp_path / "c", progress=False)
    assert again == first and again.stat().st_mtime_ns == stamp
    other = build_cache(emt_file, 3.0, KeysConfig(), tmp_path / "c", progress=False)
    assert other != first  # the cutoff is part of the key


def test_graph_cache_written_in_chunks_holds_every_frame(tmp_path, emt_file):
    """The cache is streamed in chunks (files larger than memory); chunking must not show."""
    from nnpot.core.neighbors import neighbor_pairs
    from nnpot.train.data import GraphDataset

    chunked = GraphDataset(build_cache(emt_file, 4.0, KeysConfig(), tmp_path / "a",
                                       progress=False, chunk_frames=3))
    frames = ase.io.read(emt_file, ":")
    assert len(chunked) == len(frames) == 16
    for k in (0, 2, 3, 7, 15):  # frames at chunk borders and inside chunks
        graph, atoms = chunked[k], frames[k]
        pairs, shifts = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
        assert torch.equal(graph.pos, torch.from_numpy(atoms.positions))
        assert torch.equal(graph.pair_index, pairs) and torch.equal(graph.pair_shifts, shifts)
        assert float(graph.energy) == atoms.get_potential_energy()
        assert torch.equal(graph.forces, torch.from_numpy(atoms.get_forces()))
    whole = GraphDataset(build_cache(emt_file, 4.0, KeysConfig(), tmp_path / "b", progress=False))
    for name in ("positions", "pair_index", "pair_ptr", "atom_ptr", "stress", "has_stress"):
        assert np.array_equal(chunked.arrays(name), whole.arrays(name)), name


def test_eval_json_has_the_documented_keys(tmp_path, emt_file, capsys):
    best = fit(config_from_dict(small_config(tmp_path, emt_file, max_epochs=1)))
    out = tmp_path / "metrics.json"
    assert cli_main(["eval", str(best), str(emt_file), "--json", str(out),
                     "--plots-dir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"model", "data", "frames", "energy", "forces", "stress"}
    for name in ("energy", "forces", "stress"):
        assert set(result[name]) == {"mae", "rmse", "count", "unit"}
    assert result["frames"] == 16
    assert (tmp_path / "parity_emt.png").is_file()
    assert "energy MAE" in capsys.readouterr().out


def test_final_stage_switches_the_energy_weight():
    loss = WeightedLoss(LossConfig(energy=1.0, final_energy=30.0, final_fraction=0.25))
    assert not loss.set_progress(0.5) and loss.weights["energy"] == 1.0
    assert loss.set_progress(0.8) and loss.weights["energy"] == 30.0
    assert not loss.set_progress(0.9)


def test_stratified_split_takes_every_group():
    from nnpot.train.data import split_indices

    groups = ["bulk"] * 50 + ["surface"] * 10 + ["vacancy"] * 20
    train, validation = split_indices(80, 0.1, seed=0, groups=groups)
    picked = [groups[k] for k in validation]
    assert (picked.count("bulk"), picked.count("surface"), picked.count("vacancy")) == (5, 1, 2)
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(80))
    again = split_indices(80, 0.1, seed=0, groups=groups)
    assert np.array_equal(again[1], validation)  # seeded


def test_final_stage_starts_from_the_best_model(tmp_path, emt_file, monkeypatch):
    """At the switch, the (EMA) weights of best.pt replace the latest weights; best tracking restarts."""
    from nnpot.train.trainer import Trainer

    seen = {}
    original = Trainer._start_final_stage

    def same_as_best(trainer) -> bool:
        best = torch.load(trainer.best_path, weights_only=True)["state_dict"]
        current = trainer.potential.state_dict()
        return all(torch.equal(value, current[key]) for key, value in best.items())

    def spy(trainer):
        seen["before"] = same_as_best(trainer)
        original(trainer)
        seen["after"], seen["best_loss"] = same_as_best(trainer), trainer.best_loss

    monkeypatch.setattr(Trainer, "_start_final_stage", spy)
    fit(config_from_dict(small_config(tmp_path, emt_file, ema_decay=0.9,
                                      loss={"final_energy": 5.0, "final_fraction": 0.5})))
    assert seen == {"before": False, "after": True, "best_loss": float("inf")}
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    column = log[0].split(",").index("energy_weight")
    assert [float(line.split(",")[column]) for line in log[1:]] == [1.0, 1.0, 5.0, 5.0]


def test_keep_epoch_last_saves_the_latest_weights(tmp_path, emt_file, monkeypatch):
    """keep_epoch: last saves the final epoch's (EMA) weights, whatever the validation loss did;
    best.pt is written with the checkpoints, not every epoch."""
    from nnpot.train.trainer import Trainer

    writes, trainers = [], []
    original_write, original_finish = Trainer._write_best, Trainer.finish

    def count_writes(trainer):
        writes.append(trainer.epoch)
        original_write(trainer)

    def keep(trainer):
        trainers.append(trainer)
        original_finish(trainer)

    monkeypatch.setattr(Trainer, "_write_best", count_writes)
    monkeypatch.setattr(Trainer, "finish", keep)
    best = fit(config_from_dict(small_config(tmp_path, emt_file, ema_decay=0.9, max_epochs=5,
                                             checkpoint_every=2, keep_epoch="last")))
    trainer = trainers[0]
    assert writes == [2, 4, 5]
    assert trainer.best_epoch == 5
    saved = torch.load(best, weights_only=True)
    assert saved["provenance"]["best_epoch"] == 5
    with trainer.ema.applied(trainer.potential):  # the EMA weights of the last epoch
        latest = trainer.potential.state_dict()
        assert all(torch.equal(value.cpu(), latest[key].cpu())
                   for key, value in saved["state_dict"].items())
    assert "kept the last epoch, 5" in (tmp_path / "run" / "model_card.md").read_text()


def test_snapshot_committee_joins_the_start_model_and_the_run(tmp_path, emt_file):
    """model.snapshot_committee: best.pt is the committee of the init_from model and the kept
    epoch; its validation metrics are the committee's; a finish run again writes the same."""
    from nnpot.train.evaluate import evaluate
    from nnpot.train.trainer import Trainer

    first = small_config(tmp_path, emt_file, max_epochs=2)
    first["output"] = str(tmp_path / "stage1")
    start = fit(config_from_dict(first))
    second = small_config(tmp_path, emt_file, max_epochs=3, keep_epoch="last")
    second["model"].update(init_from=str(start), snapshot_committee=True)
    best = fit(config_from_dict(second))
    committee = nnpot.load(best)
    assert isinstance(committee, nnpot.Committee) and len(committee) == 2
    stage1 = nnpot.load(start)
    for key, value in stage1.state_dict().items():
        assert torch.equal(committee.members[0].state_dict()[key], value), key
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    for key, value in checkpoint["best_state"].items():
        assert torch.equal(committee.members[1].state_dict()[key], value), key
    assert committee.provenance["best_epoch"] == 3 and committee.provenance["train_sha256"]
    assert committee.provenance["init_from"]["provenance"]["training"]["epochs"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    trainer = Trainer(config_from_dict(second), resume=True)
    trainer.prepare_data()
    again, _ = evaluate(committee, trainer.val_set, 4)
    assert again.summary()["forces"]["mae"] == pytest.approx(
        metrics["validation"]["metrics"]["forces"]["mae"], rel=1e-6)
    assert "snapshot ensemble" in (tmp_path / "run" / "model_card.md").read_text()
    fit(config_from_dict(second), resume=True)   # budget spent: finish only, same committee
    again = nnpot.load(best)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                  committee.state_dict().values()))


def test_committee_with_joins_runs_trained_separately(tmp_path, emt_file):
    """model.committee_with: best.pt holds the members of the named files (a committee gives
    all of its members) and this run's; data.split_seed gives runs of other seeds one
    validation set, so the committee's validation error is measured on frames none trained on."""
    from nnpot.train.trainer import Trainer

    first = small_config(tmp_path, emt_file, max_epochs=2)
    first["output"] = str(tmp_path / "seed3")
    a = fit(config_from_dict(first))
    second = small_config(tmp_path, emt_file, max_epochs=2)
    second.update(output=str(tmp_path / "seed4"), seed=4)
    second["data"]["split_seed"] = 3
    second["model"]["committee_with"] = [str(a)]
    b = fit(config_from_dict(second))
    pair = nnpot.load(b)
    assert isinstance(pair, nnpot.Committee) and len(pair) == 2
    for key, value in nnpot.load(a).state_dict().items():
        assert torch.equal(pair.members[0].state_dict()[key], value), key
    own = torch.load(tmp_path / "seed4" / "checkpoint.pt", weights_only=True)["best_state"]
    for key, value in own.items():
        assert torch.equal(pair.members[1].state_dict()[key], value), key
    validation = [Trainer(config_from_dict(c), resume=True) for c in (first, second)]
    for trainer in validation:
        trainer.prepare_data()
    assert list(validation[0].val_set.indices) == list(validation[1].val_set.indices)
    card = (tmp_path / "seed4" / "model_card.md").read_text()
    assert "committee of 2 SchNet potentials" in card and "model.committee_with" in card
    joined = pair.provenance["committee_with"]  # the runs that made the members, recorded
    assert joined[0]["file"] == str(a) and joined[0]["provenance"]["training"]["epochs"] == 2

    third = small_config(tmp_path, emt_file, max_epochs=1)  # a committee file: its members
    third.update(output=str(tmp_path / "seed5"), seed=5)
    third["model"]["committee_with"] = [str(b)]
    assert len(nnpot.load(fit(config_from_dict(third)))) == 3

    # members of another cutoff: a shorter one joins (it sees the pairs inside its own), a
    # longer one is refused (this run's graphs lack its outer pairs), as are other species
    longer = small_config(tmp_path, emt_file, max_epochs=1)
    longer.update(output=str(tmp_path / "longer"), seed=6)
    longer["model"].update(cutoff=4.5, committee_with=[str(a)])
    mixed = nnpot.load(fit(config_from_dict(longer)))
    assert [m.cutoff for m in mixed.members] == [4.0, 4.5] and mixed.cutoff == 4.5
    other = small_config(tmp_path, emt_file, max_epochs=1)
    other["output"] = str(tmp_path / "other")
    other["model"].update(cutoff=3.5, committee_with=[str(a)])
    with pytest.raises(ConfigError, match=r"committee_with: .*seed3/best.pt has cutoff 4 Å, "
                                          r"longer than this run's 3.5 Å"):
        fit(config_from_dict(other))
    assert not (tmp_path / "other" / "checkpoint.pt").exists()  # refused before training
    copper_oxygen = make_potential().save(tmp_path / "cu_o.pt")
    other["model"].update(cutoff=4.0, committee_with=[str(copper_oxygen)])
    with pytest.raises(ConfigError, match=r"cu_o.pt has species \['Cu', 'O'\], this run "
                                          r"\['Cu'\]"):
        fit(config_from_dict(other))
    with pytest.raises(ConfigError, match="model.committee_with: file nowhere.pt not found"):
        other["model"]["committee_with"] = ["nowhere.pt"]
        config_from_dict(other)


def test_a_finished_time_limited_run_resumes_into_finish(tmp_path, emt_file, monkeypatch):
    """The time limit stops a run when one more epoch would not fit; resuming the finished run
    (to add a committee_with file, say) must decide the same, not train one epoch more."""
    import nnpot.train.trainer as trainer_module

    clock = [0.0]  # a fake clock: each epoch takes 10 s, nothing else takes time
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    original = trainer_module.Trainer.train_epoch

    def ten_seconds(trainer):
        clock[0] += 10.0
        return original(trainer)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", ten_seconds)
    config = small_config(tmp_path, emt_file, max_epochs=100, max_time_min=0.55)  # 33 s
    fit(config_from_dict(config))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3  # at 30 s, 40 > 33
    fit(config_from_dict(config), resume=True)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 3


def test_interrupted_training_says_how_to_resume(monkeypatch, capsys):
    import nnpot.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nnpot.train, "fit", interrupted)
    assert cli_main(["train", "my.yaml"]) == 130
    assert "nnpot train my.yaml --resume" in capsys.readouterr().err


# A torchrun entry point that breaks one rank on purpose, then runs `nnpot train`.
FAULTY_RANK = r'''
import os, sys
import torch
fault = sys.argv[1]
if fault == "nan-loss" and os.environ["RANK"] == "1":
    import nnpot.train.loss as loss
    loss.WeightedLoss.__call__ = lambda self, out, batch: out["energy"].sum() * float("nan")
from nnpot.cli import main
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.parametrize("fault, message", [
    ("bad-data", r"frame 3: the structure has no atoms"),
    ("nan-loss", r"the training loss became nan in epoch 1 \(on 1 of 2 process"),
])
def test_a_failure_on_one_ddp_rank_stops_every_rank(tmp_path, emt_file, fault, message):
    if fault == "bad-data":  # rank 0 fails while building the cache; rank 1 must not wait
        frames = emt_frames(6)
        from ase import Atoms
        empty = Atoms(cell=np.eye(3) * 3, pbc=True)
        empty.calc = SinglePointCalculator(empty, energy=0.0)
        frames.insert(3, empty)
        emt_file = tmp_path / "broken.extxyz"
        ase.io.write(emt_file, frames, format="extxyz")
    config = small_config(tmp_path, emt_file, max_epochs=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY_RANK)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), fault, "train", str(path)],
                          capture_output=True, text=True, env=env, timeout=240)
    elapsed = time.perf_counter() - started
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert re.search(message, output), output[-3000:]
    assert output.count("nnpot: error:") == 2, output[-3000:]  # both ranks report it, one line each
    assert elapsed < 60, elapsed  # seconds, not a barrier time-out


def test_statistics_stream_over_a_cache_larger_than_a_block(tmp_path):
    """E0 counts and the force scale are gathered block by block: peak memory stays a small
    fraction of the data (measured with tracemalloc, which sees numpy's buffers)."""
    import tracemalloc

    from nnpot.train.data import GraphDataset
    from nnpot.train.statistics import scan_dataset

    rng = np.random.default_rng(0)
    frames = []
    for k in range(120):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((4, 4, 4))
        atoms.symbols[rng.choice(len(atoms), 10, replace=False)] = "Ag"
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=float(k),
                                           forces=rng.normal(0, 0.3, (len(atoms), 3)))
        frames.append(frame)
    path = tmp_path / "big.extxyz"
    ase.io.write(path, frames, format="extxyz")
    dataset = GraphDataset(build_cache(path, 2.6, KeysConfig(), tmp_path / "c", progress=False))
    forces = dataset.arrays("forces")
    tracemalloc.start()
    scan = scan_dataset(dataset, max_atoms=1024)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < forces.nbytes / 5, (peak, forces.nbytes)  # measured: ~0.1 of 737 kB
    assert scan.species == ["Cu", "Ag"]
    assert scan.force_rms == pytest.approx(float(np.sqrt(np.mean(forces ** 2))), rel=1e-12)
    assert scan.counts.sum(axis=0).tolist() == [120 * 246, 120 * 10]


def test_batches_without_a_labelled_term_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "partial.extxyz"
    ase.io.write(path, emt_frames(8, drop_forces=(0, 2, 4, 6)), format="extxyz")
    config = small_config(tmp_path, path, max_epochs=2, batch_size=1,
                          loss={"energy": 0.0, "forces": 1.0, "stress": 0.0})
    with pytest.warns(UserWarning, match=r"skipped \d+ of \d+ batches with no labelled term"):
        best = fit(config_from_dict(config))
    assert nnpot.load(best) is not None


def test_stratified_split_gives_small_groups_a_validation_frame():
    from nnpot.train.data import split_indices

    groups = ["bulk"] * 30 + ["dimer"] * 2 + ["surface"] * 3 + ["isolated"]
    train, validation = split_indices(len(groups), 0.1, seed=1, groups=groups)
    picked = [groups[k] for k in validation]
    assert picked.count("dimer") == 1 and picked.count("surface") == 1  # round(0.2), round(0.3) → 1
    assert picked.count("isolated") == 0  # a single frame stays in training
    assert picked.count("bulk") == 3


def test_a_committee_trains_in_one_run_each_member_as_if_alone(tmp_path, emt_file):
    """model.committee: 2 trains members of seeds s and s+1 together; the loss is the sum of
    their own losses, so member 0 follows the same path as a single model of seed s."""
    single = small_config(tmp_path, emt_file, max_epochs=2)
    fit(config_from_dict(single))
    committee = small_config(tmp_path, emt_file, max_epochs=2)
    committee["output"] = str(tmp_path / "committee")
    committee["model"]["committee"] = 2
    best = fit(config_from_dict(committee))
    loaded = nnpot.load(best)
    assert isinstance(loaded, nnpot.Committee) and len(loaded) == 2
    a = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "committee" / "checkpoint.pt", weights_only=True)["model"]
    for key, value in a.items():
        torch.testing.assert_close(b[f"members.0.{key}"], value, rtol=1e-5, atol=1e-6)
    differs = [key for key in a if key.endswith("weight")
               and not torch.equal(b[f"members.0.{key}"], b[f"members.1.{key}"])]
    assert differs  # the second member is its own model
    atoms = emt_frames(1, seed=9)[0]
    atoms.calc = nnpot.NNPCalculator(best)
    atoms.get_forces()
    assert atoms.calc.results["forces_std"].shape == (len(atoms),)
    card = (tmp_path / "committee" / "model_card.md").read_text()
    assert "committee" in card
    with pytest.raises(ConfigError, match="model.committee must be a whole number"):
        bad = small_config(tmp_path, emt_file)
        bad["model"]["committee"] = 0
        config_from_dict(bad)


def test_bootstrap_gives_each_member_its_own_resample(tmp_path, emt_file):
    """model.bootstrap: member k fits n draws with replacement (seed + k) of the n training
    frames; the resamples differ between members, are the same on every run, and the committee
    trains and resumes."""
    from nnpot.train.trainer import Trainer

    config = small_config(tmp_path, emt_file, max_epochs=1)
    config["model"]["committee"] = 2
    config["model"]["bootstrap"] = True
    best = fit(config_from_dict(config))
    counts = []
    for _ in range(2):
        trainer = Trainer(config_from_dict(config), resume=True)
        trainer.prepare_data()
        trainer.compute_statistics()
        trainer.build()
        counts.append(trainer.frame_counts)
    n_frames = len(trainer.train_set)
    assert counts[0].shape == (2, n_frames) and (counts[0].sum(dim=1) == n_frames).all()
    assert not torch.equal(counts[0][0], counts[0][1]) and (counts[0] == 0).any()
    assert torch.equal(counts[0], counts[1])
    assert "bootstrap resample" in (tmp_path / "run" / "model_card.md").read_text()
    config["training"]["max_epochs"] = 2
    fit(config_from_dict(config), resume=True)
    assert isinstance(nnpot.load(best), nnpot.Committee)
    with pytest.raises(ConfigError, match="model.bootstrap .* needs model.committee ≥ 2"):
        config["model"]["committee"] = 1
        config_from_dict(config)


def test_a_checkpoint_from_before_a_new_config_key_still_resumes(tmp_path, emt_file):
    config = small_config(tmp_path, emt_file, max_epochs=1)
    fit(config_from_dict(config))
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["model"]["committee"]  # as written before model.committee existed
    torch.save(state, path)
    config["training"]["max_epochs"] = 2
    fit(config_from_dict(config), resume=True)
    assert torch.load(path, weights_only=True)["epoch"] == 2


def test_init_from_starts_from_the_file_and_checks_it_fits(tmp_path, emt_file):
    first = nnpot.load(fit(config_from_dict(small_config(tmp_path / "a", emt_file,
                                                           max_epochs=2))))
    config = small_config(tmp_path / "b", emt_file, max_epochs=1, lr=1e-12, ema_decay=None,
                          scheduler={"type": "none", "min_lr": 0.0})
    config["model"]["init_from"] = str(tmp_path / "a" / "run" / "best.pt")
    config["seed"] = 11  # a fresh model of another seed would differ: the file's weights win
    again = nnpot.load(fit(config_from_dict(config)))
    assert again.e0_dict() == pytest.approx(first.e0_dict())
    chain = again.provenance["init_from"]  # the runs that made it, newest first
    assert chain["file"] == config["model"]["init_from"]
    assert (again.provenance["training"]["epochs"], chain["provenance"]["training"]["epochs"]) \
        == (1, 2)
    atoms = emt_frames(1, seed=9)[0]
    energies = []
    for potential in (first, again):
        atoms.calc = nnpot.NNPCalculator(potential)
        energies.append(atoms.get_potential_energy())
    assert energies[1] == pytest.approx(energies[0], abs=1e-5)

    wider = copy.deepcopy(config)
    wider["model"]["params"]["n_features"] = 16
    wider["output"] = str(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"n_features = 8, the config gives 16 "
                                          r"\(model.params.n_features\)"):
        fit(config_from_dict(wider))
    other = copy.deepcopy(config)
    other["model"]["cutoff"] = 3.5
    other["output"] = str(tmp_path / "d")
    with pytest.raises(ConfigError, match="has cutoff 4.0, the config model.cutoff 3.5"):
        fit(config_from_dict(other))
    committee = copy.deepcopy(config)
    committee["model"]["committee"] = 2
    with pytest.raises(ConfigError, match="model.init_from starts one model"):
        config_from_dict(committee)
    config["model"]["init_from"] = "missing.pt"
    with pytest.raises(ConfigError, match="model.init_from: file missing.pt not found"):
        config_from_dict(config)


def test_group_weights_scale_a_term_of_each_frame_without_renormalising():
    frames = emt_frames(3)
    batch = labelled_batch(frames)
    shift = torch.tensor([0.01, 0.02, 0.03], dtype=torch.float64)  # eV/atom errors
    n_atoms = torch.tensor([len(a) for a in frames], dtype=torch.float64)
    out = {"energy": batch.energy + shift * n_atoms, "forces": batch.forces + 0.1,
           "stress": batch.stress}
    energy_only = WeightedLoss(LossConfig(energy=1.0, forces=0.0, stress=0.0))
    scales = {"energy": torch.tensor([3.0, 0.0, 1.0], dtype=torch.float64)}
    expected = float((scales["energy"] * shift ** 2).sum() / 3)  # all three frames count
    assert float(energy_only(out, batch, term_scales=scales)) == pytest.approx(expected,
                                                                                rel=1e-6)
    both = WeightedLoss(LossConfig(energy=1.0, forces=1.0, stress=0.0))
    unscaled = float(both(out, batch))
    doubled = {"forces": torch.full((3,), 2.0, dtype=torch.float64)}
    assert float(both(out, batch, term_scales=doubled)) == pytest.approx(
        unscaled + 0.1 ** 2, rel=1e-6)  # only the force term (0.1² per component) doubles


def test_group_weights_are_checked_against_the_data(tmp_path):
    frames = emt_frames(8)
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "bulk" if k % 2 else "surface"
    path = tmp_path / "groups.extxyz"
    ase.io.write(path, frames, format="extxyz")
    config = small_config(tmp_path, path, max_epochs=1)
    config["training"]["loss"] = {"group_weights": {"surface": {"energy": 4.0}, "bulk": 0.5}}
    assert nnpot.load(fit(config_from_dict(config))).species == ["Cu"]
    config["output"] = str(tmp_path / "run2")
    config["training"]["loss"] = {"group_weights": {"liquid": 2.0}}
    with pytest.raises(ConfigError, match=r"group_weights names \['liquid'\], but no training "
                                          r"frame has that 'config_type' .*\['bulk', 'surface'\]"):
        fit(config_from_dict(config))
    for weights, message in (({"bulk": -1.0}, "group_weights.bulk must be a number ≥ 0"),
                             ({"bulk": {"virial": 2.0}}, "unknown term 'virial'")):
        config["training"]["loss"] = {"group_weights": weights}
        with pytest.raises(ConfigError, match=message):
            config_from_dict(config)


def test_huber_loss_takes_a_delta_per_term():
    """Huber: ½d² within δ, δ(|d| − ½δ) beyond, with each term's own δ (energy eV/atom,
    forces eV/Å); a term left out of the mapping keeps δ = 0.01."""
    frames = emt_frames(2)
    batch = labelled_batch(frames)
    n_atoms = torch.tensor([len(a) for a in frames], dtype=torch.float64)
    out = {"energy": batch.energy + 0.002 * n_atoms, "forces": batch.forces + 0.05,
           "stress": batch.stress + 0.02}

    def huber(d, delta):
        return 0.5 * d * d if abs(d) <= delta else delta * (abs(d) - 0.5 * delta)

    config = LossConfig(type="huber", energy=1.0, forces=2.0, stress=3.0,
                        huber_delta={"energy": 0.001, "forces": 0.1})
    expected = huber(0.002, 0.001) + 2.0 * huber(0.05, 0.1) + 3.0 * huber(0.02, 0.01)
    assert float(WeightedLoss(config)(out, batch)) == pytest.approx(expected, rel=1e-6)
    one_delta = LossConfig(type="huber", energy=1.0, forces=2.0, stress=3.0, huber_delta=0.03)
    expected = huber(0.002, 0.03) + 2.0 * huber(0.05, 0.03) + 3.0 * huber(0.02, 0.03)
    assert float(WeightedLoss(one_delta)(out, batch)) == pytest.approx(expected, rel=1e-6)
