"""Training you can trust after a kill: SIGKILL at random points, resume, and the run ends as if
never interrupted, with a best.pt that is the best epoch of log.csv."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from test_train import emt_frames, small_config

import nnpot
from nnpot.train import ConfigError, config_from_dict, fit
from nnpot.train.evaluate import evaluate
from nnpot.train.trainer import Trainer

# Runs `nnpot train` in a child process that SIGKILLs itself at a chosen point.
KILLER = r'''
import io, os, signal, sys
mode, n = sys.argv[1], int(sys.argv[2])
calls = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counting(original, then=lambda *a, **k: die()):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            return then(*args, **kwargs)
        return original(*args, **kwargs)
    return wrapper

if mode == "cache":        # during the graph-cache build, at frame n
    import nnpot.train.data as data
    data.frame_pairs = counting(data.frame_pairs)
elif mode == "batch":      # in the middle of an epoch, at training batch n
    import nnpot.train.loss as loss
    loss.WeightedLoss.__call__ = counting(loss.WeightedLoss.__call__)
elif mode == "checkpoint": # half-way through writing the n-th checkpoint file
    import nnpot.core.files as files
    original = files.atomic_write

    def half_then_die(path, write):
        def partial(f):
            buffer = io.BytesIO()
            write(buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        return original(path, partial)

    def atomic_write(path, write):
        if os.path.basename(path) == "checkpoint.pt":
            return counting(original, half_then_die)(path, write)
        return original(path, write)
    files.atomic_write = atomic_write
from nnpot.cli import main
sys.exit(main(sys.argv[3:]))
'''


def run_killed(tmp_path: Path, mode: str, n: int, args: list[str], kill_after: float | None = None):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, str(script), mode, str(n), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def validation_loss_of(model_file: Path, config, energy_weight: float) -> float:
    """The validation loss of a model file, computed as the trainer computes it (with the energy
    weight of the epoch's stage, as log.csv records it)."""
    trainer = Trainer(config, resume=True)
    trainer.prepare_data()
    metrics, _ = evaluate(nnpot.load(model_file), trainer.val_set, config.training.batch_size)
    loss = config.training.loss
    weights = {"energy": energy_weight, "forces": loss.forces, "stress": loss.stress}
    return sum(weights[k] * (m["rmse"] / 1e3) ** 2 for k, m in metrics.summary().items()
               if weights[k] > 0)


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "emt.extxyz"
    ase.io.write(path, emt_frames(16), format="extxyz")
    return path


@pytest.mark.slow  # test_train's resume tests kill once per model; this kills five times
def test_five_kills_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, data_file):
    config = small_config(tmp_path, data_file, max_epochs=8, checkpoint_every=2,
                          scheduler={"type": "cosine", "warmup_epochs": 1})
    config["output"] = str(tmp_path / "straight")
    fit(config_from_dict(config))

    config["output"] = str(tmp_path / "killed")
    config["data"]["cache_dir"] = str(tmp_path / "killed_cache")  # the cache build is killed too
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(config))
    train = ["train", str(path)]
    rng = np.random.default_rng(0)
    kills = [("cache", 5, None),                                   # while building the cache
             ("batch", int(rng.integers(5, 9)), None),             # inside epoch 2 or 3
             ("checkpoint", 2, None),                              # half-way through a checkpoint
             ("batch", int(rng.integers(3, 12)), None),            # inside a later epoch
             ("none", 0, float(rng.uniform(4.0, 6.0)))]            # at a random time
    outcomes = []
    for k, (mode, n, after) in enumerate(kills):
        code, output = run_killed(tmp_path, mode, n, train + (["--resume"] if k else []), after)
        assert code in (-signal.SIGKILL, 0), output[-3000:]
        outcomes.append(code)
        if code == 0:
            break
    assert outcomes[:4] == [-signal.SIGKILL] * 4  # the targeted kills did happen
    if outcomes[-1] != 0:
        code, output = run_killed(tmp_path, "none", 0, train + ["--resume"])
        assert code == 0, output[-3000:]

    run = tmp_path / "killed"
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    rows = log_rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))  # every epoch once
    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    best = nnpot.load(run / "best.pt")
    assert best.provenance["best_epoch"] == int(best_row["epoch"])
    measured = validation_loss_of(run / "best.pt", config_from_dict(config),
                                  float(best_row["energy_weight"]))
    assert measured == pytest.approx(float(best_row["val_loss"]), rel=1e-5)
    assert not list(run.glob(".*.tmp"))  # the half-written checkpoint's temp file is gone


def test_time_budget_resume_keeps_best_pt_in_the_resumed_history(tmp_path, data_file):
    """Killed after best.pt was written past the last checkpoint: the resumed run must not keep
    (or start its final stage from) that orphaned best.pt."""
    config = small_config(tmp_path, data_file, max_epochs=100, max_time_min=0.12,
                          checkpoint_every=3, loss={"final_energy": 5.0, "final_fraction": 0.3})
    path = tmp_path / "timed.yaml"
    path.write_text(yaml.safe_dump(config))
    # 3 batches an epoch: batch 14 is inside epoch 5, after best.pt of epoch 4 (checkpoint: 3)
    code, output = run_killed(tmp_path, "batch", 14, ["train", str(path)])
    assert code == -signal.SIGKILL, output[-3000:]
    run = tmp_path / "run"
    orphan = nnpot.load(run / "best.pt").provenance["best_epoch"]
    assert orphan > 3
    resumed = Trainer(config_from_dict(config), resume=True)
    resumed.prepare_data()
    resumed.compute_statistics()
    resumed.build()
    resumed.load_checkpoint()
    assert nnpot.load(run / "best.pt").provenance["best_epoch"] == resumed.best_epoch <= 3
    code, output = run_killed(tmp_path, "none", 0, ["train", str(path), "--resume"])
    assert code == 0, output[-3000:]
    rows = log_rows(run)
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(1, len(epochs) + 1))
    weights = [float(r["energy_weight"]) for r in rows]
    final = [r for r, w in zip(rows, weights) if w == 5.0] or rows  # best is chosen in the last stage
    best_row = min(final, key=lambda r: float(r["val_loss"]))
    assert nnpot.load(run / "best.pt").provenance["best_epoch"] == int(best_row["epoch"])
    measured = validation_loss_of(run / "best.pt", config_from_dict(config),
                                  float(best_row["energy_weight"]))
    assert measured == pytest.approx(float(best_row["val_loss"]), rel=1e-5)


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(seed=4), "seed"),
    (lambda c: c["training"].update(lr=1e-2), "training.lr"),
    (lambda c: c["data"].update(validation_fraction=0.5), "data.validation_fraction"),
    (lambda c: c["model"]["params"].update(n_features=16), "model.params"),
])
def test_resume_refuses_what_would_change_split_order_or_optimisation(tmp_path, data_file,
                                                                       change, key):
    config = small_config(tmp_path, data_file, max_epochs=1)
    fit(config_from_dict(config))
    change(config)
    with pytest.raises(ConfigError, match=rf"--resume: {key} is .* in the config but"):
        fit(config_from_dict(config), resume=True)


def test_resume_may_extend_the_budget(tmp_path, data_file):
    config = small_config(tmp_path, data_file, max_epochs=2)
    fit(config_from_dict(config))
    config["training"]["max_epochs"] = 3
    fit(config_from_dict(config), resume=True)
    assert len(log_rows(tmp_path / "run")) == 3


def test_resume_with_keep_epoch_last_keeps_the_latest_epoch(tmp_path, data_file):
    """A finished run that kept its best epoch, resumed with keep_epoch: last, saves the last
    epoch's weights: bitwise those of a run that kept its last epoch from the start."""
    config = small_config(tmp_path, data_file, max_epochs=3, keep_epoch="best")
    config["training"]["lr"] = 0.2  # large enough that a later epoch is worse than an earlier
    fit(config_from_dict(config))
    config["training"]["keep_epoch"] = "last"
    resumed = fit(config_from_dict(config), resume=True)
    config["output"] = str(tmp_path / "last_from_the_start")
    reference = fit(config_from_dict(config))
    a, b = nnpot.load(resumed).state_dict(), nnpot.load(reference).state_dict()
    assert all(torch.equal(a[key], b[key]) for key in b)


def test_the_model_records_where_each_stretch_of_epochs_ran(tmp_path, data_file):
    """A run resumed with another run-time setting (here threads; a GPU run finished on CPU is
    the same case) records both stretches; a resume on the same setting joins its stretch."""
    config = small_config(tmp_path, data_file, max_epochs=2)
    config["training"]["threads"] = 1
    fit(config_from_dict(config))
    config["training"]["max_epochs"] = 3
    fit(config_from_dict(config), resume=True)
    config["training"].update(max_epochs=4, threads=2)
    path = fit(config_from_dict(config), resume=True)
    training = nnpot.load(path).provenance["training"]
    assert training["epochs"] == 4 and training["device"] == "cpu"
    cpu = torch.backends.cpu.get_cpu_capability()   # e.g. AVX2, AVX512: how float32 rounds
    assert training["segments"] == [
        {"device": "cpu", "processes": 1, "threads": 1, "cpu": cpu, "epochs": [1, 3]},
        {"device": "cpu", "processes": 1, "threads": 2, "cpu": cpu, "epochs": [4, 4]}]


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path, data_file):
    config = small_config(tmp_path, data_file, max_epochs=1)
    fit(config_from_dict(config))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=r"checkpoint\.pt cannot be read .*damaged"):
        fit(config_from_dict(config), resume=True)


def test_a_damaged_graph_cache_is_rebuilt(tmp_path, data_file):
    from nnpot.train.config import KeysConfig
    from nnpot.train.data import build_cache

    cache = build_cache(data_file, 4.0, KeysConfig(), tmp_path / "c", progress=False)
    cache.write_bytes(cache.read_bytes()[:5000])
    with pytest.warns(UserWarning, match="damaged"):
        again = build_cache(data_file, 4.0, KeysConfig(), tmp_path / "c", progress=False)
    assert again == cache
    from nnpot.train.data import GraphDataset
    assert len(GraphDataset(again)) == 16


def test_atomically_written_files_get_an_ordinary_files_mode(tmp_path):
    from nnpot.core.files import atomic_write_text

    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert written.stat().st_mode & 0o777 == ordinary.stat().st_mode & 0o777
