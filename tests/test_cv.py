"""``nnpot cv``: the fold assignment (disjoint, covering, groups whole, every config type in
every fold), the folds' runs and report, resuming a killed fold, and errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train import emt_frames, small_config

from nnpot.train.config import ConfigError
from nnpot.train.cv import (
    assign_folds,
    cross_validate,
    cv_status,
    mean_and_stderr,
    progress_text,
    report_json,
    report_markdown,
    summarise,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 12)), min_size=8, max_size=60),
       st.integers(2, 5), st.integers(0, 1000))
def test_folds_are_disjoint_cover_the_file_and_keep_groups_whole(frames, k, seed):
    """Random labels: folds are disjoint and cover every frame; a group never straddles two
    folds; a config type with at least k groups appears in every fold."""
    types = [t for t, _ in frames]
    groups = [f"{t}{g}" for t, g in frames]  # a group has one type here
    if len(set(groups)) < k:
        with pytest.raises(ConfigError, match="cannot fill"):
            assign_folds(types, groups, k, seed)
        return
    folds = assign_folds(types, groups, k, seed)
    everything = np.concatenate(folds)
    assert sorted(everything.tolist()) == list(range(len(frames)))
    fold_of = {int(i): f for f, members in enumerate(folds) for i in members}
    for group in set(groups):
        assert len({fold_of[i] for i, g in enumerate(groups) if g == group}) == 1
    for kind in set(types):
        if len({g for g, t in zip(groups, types) if t == kind}) >= k:
            assert all(any(types[i] == kind for i in members) for members in folds), kind


def test_folds_depend_on_the_seed_only():
    types = ["A"] * 20 + ["B"] * 10
    groups = [str(i // 2) for i in range(30)]
    first = assign_folds(types, groups, 3, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, assign_folds(types, groups, 3, 7)))
    assert not all(np.array_equal(a, b)
                   for a, b in zip(first, assign_folds(types, groups, 3, 8)))


def test_standard_error_is_the_sample_deviation_over_root_n():
    mean, stderr = mean_and_stderr([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert stderr == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1) / np.sqrt(3))


def test_one_fold_report_is_strict_json_with_the_mean_alone():
    """One fold (a partial report, or a config type one fold validated on) has no standard
    error: null in cv_report.json, which must stay strict JSON, and the mean alone in the table."""
    errors = {"energy_mae": 2.5, "energy_rmse": 3.0, "forces_mae": 40.0, "forces_rmse": 60.0}
    fold = {"fold": "fold_0", "frames": 4, **errors, "epochs": 10, "time_min": 1.0,
            "by_config_type": {"Surface": {"frames": 1, **errors}}}
    report = summarise([fold]) | {"config": "c.yaml", "train": "t.extxyz"}
    assert report["mean"]["energy_mae"] == {"mean": 2.5, "stderr": None}
    assert json.loads(report_json(report)) == report
    table = report_markdown(report)
    assert "| **mean** | 4 | 2.50 | 3.00 | 40.00 | 60.00 | 10.00 |" in table
    assert " ± " not in table.split("## Folds")[1] and "nan" not in table
    with pytest.raises(ValueError):  # a NaN that slipped in is refused, not written
        report_json({"mean": float("nan")})


def cv_data(tmp_path: Path) -> Path:
    """16 EMT frames of two config types, in snapshot pairs (mlearn's description key)."""
    frames = emt_frames(16)
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "bulk" if k < 10 else "strained"
        atoms.info["snapshot"] = f"snapshot {k // 2}"
    path = tmp_path / "cv.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def cv_config(tmp_path: Path, data: Path, **training) -> Path:
    values = small_config(tmp_path, data, **training)
    values["data"]["group_key"] = "snapshot"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def finished_cv(tmp_path_factory):
    """A finished 2-fold CV of 2 epochs: (its folder, the data, the config, its report)."""
    tmp_path = tmp_path_factory.mktemp("cv")
    data = cv_data(tmp_path)
    config = cv_config(tmp_path, data, max_epochs=2)
    return tmp_path, data, config, cross_validate(config, folds=2, jobs=2)


def test_cv_trains_every_fold_and_reports_their_mean(finished_cv):
    tmp_path, data, _, report = finished_cv
    out = tmp_path / "run"
    assert report == out / "cv_report.md" and report.is_file()
    result = json.loads((out / "cv_report.json").read_text())
    frames = [json.loads((out / f"fold_{k}" / "validation_frames.json").read_text())
              for k in range(2)]
    assert sorted(frames[0] + frames[1]) == list(range(16))
    for k in range(2):
        assert (out / f"fold_{k}" / "best.pt").is_file()
        assert (out / f"fold_{k}" / "metrics.json").is_file()
        fold = result["folds"][k]
        assert fold["frames"] == len(frames[k]) and fold["epochs"] == 2
        # the fold trained on the others: its run's validation set is these frames
        metrics = json.loads((out / f"fold_{k}" / "metrics.json").read_text())
        assert metrics["validation"]["frames"] == len(frames[k])
        assert fold["forces_mae"] == pytest.approx(
            metrics["validation"]["metrics"]["forces"]["mae"], rel=1e-6)
        for pair in range(8):  # snapshots stay together
            assert (2 * pair in frames[k]) == (2 * pair + 1 in frames[k])
        assert set(fold["by_config_type"]) == {"bulk", "strained"}
    for key in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse"):
        values = [f[key] for f in result["folds"]]
        assert result["mean"][key]["mean"] == pytest.approx(np.mean(values))
        assert result["mean"][key]["stderr"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2))
        # its validation frames chose nothing: trained to the budget, the last epoch kept
        fold_config = yaml.safe_load((out / f"fold_{k}" / "config.yaml").read_text())
        assert fold_config["training"]["keep_epoch"] == "last"
        assert fold_config["training"]["early_stopping_patience"] is None
        last = torch.load(out / f"fold_{k}" / "checkpoint.pt", weights_only=False)
        assert last["best"]["epoch"] == last["epoch"] == 2
    per_type = [f["by_config_type"]["bulk"]["forces_mae"] for f in result["folds"]]
    assert result["by_config_type"]["bulk"]["forces_mae"]["mean"] == pytest.approx(
        np.mean(per_type))
    assert "± " in report.read_text()
    assert (out / "cv_parity.png").stat().st_size > 10_000   # out-of-fold parity, by type
    status = cv_status(cv_config(tmp_path, data, max_epochs=2)).splitlines()
    assert status[0].startswith("cv: fold_0 done, epoch 2/2; validation E ")
    assert status[-1] == f"cv: report {report}"
    with pytest.raises(ConfigError, match="already holds a cross-validation run"):
        cross_validate(cv_config(tmp_path, data, max_epochs=2), folds=2)
    with pytest.raises(ConfigError, match="other folds"):
        cross_validate(cv_config(tmp_path, data, max_epochs=2), folds=3, resume=True)


def test_progress_says_where_each_fold_stands_and_how_long_is_left(tmp_path):
    """Speed is the median over the last logged epochs (a resume's pause is one long step);
    the time left is the folds' remaining epochs at their speed, shared among the jobs."""
    columns = "epoch,time_s,val_energy_mae,val_forces_mae"
    times = {"fold_0": [0, 10, 20, 30, 40, 900, 910, 920], "fold_1": [], "fold_2": [0, 5, 10],
             "fold_3": [0, 5]}
    for name, fold_times in times.items():
        fold = tmp_path / name
        fold.mkdir()
        (fold / "cv_fold.yaml").write_text(yaml.safe_dump({"training": {"max_epochs": 100}}))
        if fold_times:
            rows = [f"{e + 1},{t},{3.0 + e},{50.0 + e}" for e, t in enumerate(fold_times)]
            (fold / "log.csv").write_text("\n".join([columns, *rows]) + "\n")
            if name != "fold_3":  # fold_3: logging, no checkpoint yet
                (fold / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "fold_2" / "metrics.json").write_text("{}")
    lines = progress_text([tmp_path / n for n in times], jobs=2).splitlines()
    assert lines[0] == ("cv: fold_0 started, epoch 8/100, 10.0 s/epoch; validation E 10.00 "
                        "meV/atom, F 57.0 meV/Å")
    assert lines[1] == "cv: fold_1 new, epoch 0/100"
    assert lines[2].startswith("cv: fold_2 done, epoch 3/100; validation E 5.00")
    assert lines[3].startswith("cv: fold_3 started, epoch 2/100, 5.0 s/epoch")
    # fold_0: 92 epochs × 10 s; fold_1: 100 epochs at the median speed (5, 10, 5 → 5 s);
    # fold_3: 98 epochs × 5 s
    assert lines[4] == f"cv: about {(92 * 10 + 100 * 5 + 98 * 5) / 2 / 60:.0f} min of training " \
                       "left at 2 folds at a time"


def test_cv_only_trains_the_folds_named_and_reports_them_as_partial(finished_cv, tmp_path):
    """`nnpot cv --only`: fold 1 alone (a partial report that says so, fold 0 untouched),
    then fold 0 with --resume: the whole report, equal to the one a single run wrote."""
    _, _, config, report = finished_cv
    whole = json.loads((report.parent / "cv_report.json").read_text())
    out = tmp_path / "split"
    first = cross_validate(config, folds=2, output=out, only=[1])
    part = json.loads((out / "cv_report.json").read_text())
    assert part["partial"] == {"folds": [1], "of": 2}
    assert [f["fold"] for f in part["folds"]] == ["fold_1"]
    assert first.read_text().startswith("# Cross-validation: folds 1 of 2 (a partial report)")
    assert not (out / "fold_0" / "log.csv").exists()  # planned, not trained
    cross_validate(config, folds=2, output=out, resume=True, only=[0])
    joined = json.loads((out / "cv_report.json").read_text())
    assert "partial" not in joined
    assert (out / "cv_report.md").read_text().startswith("# Cross-validation: 2 folds")
    for key in ("energy_mae", "forces_rmse"):
        assert joined["mean"][key] == pytest.approx(whole["mean"][key], rel=1e-9)
    with pytest.raises(ConfigError, match="--only: no fold 2 in a 2-fold CV"):
        cross_validate(config, folds=2, output=out, resume=True, only=[2])
    with pytest.raises(ConfigError, match="--only names a fold twice"):
        cross_validate(config, folds=2, output=out, resume=True, only=[0, 0])


def test_a_killed_fold_resumes(tmp_path):
    """Kill `nnpot cv` while fold 0 trains (after its first checkpoint); `--resume` finishes
    it from the checkpoint (its log says so) and trains fold 1."""
    data = cv_data(tmp_path)
    config = cv_config(tmp_path, data, max_epochs=10)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "nnpot.cli", "cv", str(config),
                                "--folds", "2"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "fold_0" / "checkpoint.pt").is_file() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / "fold_0" / "checkpoint.pt").is_file()
    assert not (out / "fold_0" / "metrics.json").is_file(), "fold 0 finished before the kill"
    cross_validate(config, folds=2, resume=True)
    log = (out / "fold_0" / "train.log").read_text()
    assert "resum" in log.lower()
    result = json.loads((out / "cv_report.json").read_text())
    assert [f["epochs"] for f in result["folds"]] == [10, 10]


def test_killing_cv_stops_its_folds(tmp_path):
    """`kill` (SIGTERM) of `nnpot cv` stops the fold it is training too: a fold left running
    would keep writing its folder beside a later --resume's run of the same fold."""
    data = cv_data(tmp_path)
    config = cv_config(tmp_path, data, max_epochs=100000)
    process = subprocess.Popen([sys.executable, "-m", "nnpot.cli", "cv", str(config),
                                "--folds", "2"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "fold_0" / "log.csv").is_file() and time.time() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "run" / "fold_0" / "log.csv").is_file(), "fold 0 never started"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.time() + 30
        while time.time() < deadline:  # the fold's process, in the same group, is gone
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the fold kept training after `nnpot cv` was killed")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_cv_errors_name_the_problem(tmp_path):
    data = cv_data(tmp_path)
    config = cv_config(tmp_path, data)
    with pytest.raises(ConfigError, match="holds no cross-validation run"):
        cross_validate(config, folds=2, resume=True)
    with pytest.raises(ConfigError, match="holds no cross-validation run; start one with"):
        cv_status(config)
    with pytest.raises(ConfigError, match="cannot fill 20 folds"):
        cross_validate(config, folds=20)
    values = yaml.safe_load(config.read_text())
    values["data"]["validation"] = str(data)
    config.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="separate validation file"):
        cross_validate(config, folds=2)


@pytest.mark.parametrize("frames, message", [
    ([0, 99], "has 16 frames"), ([1, 1], "repeats"), (list(range(16)), "none is left"),
    ([], "non-empty list"), (["0"], "non-empty list")])
def test_bad_validation_frames_name_the_key(tmp_path, frames, message):
    from nnpot.train import fit

    values = small_config(tmp_path, cv_data(tmp_path), max_epochs=1)
    values["data"]["validation_frames"] = frames
    with pytest.raises(ConfigError, match=message) as error:
        fit(values)
    assert "validation_frames" in str(error.value)


def test_a_full_data_fit_keeps_its_last_epoch(tmp_path):
    """The final fit cross-validation leads to: every frame trains, no validation set, the
    last epoch is the model."""
    from nnpot import load
    from nnpot.train import fit

    values = small_config(tmp_path, cv_data(tmp_path), max_epochs=2, keep_epoch="last")
    values["data"]["validation_fraction"] = 0
    best = load(fit(values))
    assert best.provenance["training"]["epochs"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"train"} and metrics["train"]["frames"] == 16
    assert best.provenance["metrics"]["train"] == metrics["train"]["metrics"]
    assert (tmp_path / "run" / "parity_train.png").is_file()
    card = (tmp_path / "run" / "model_card.md").read_text()
    assert "not on new ones" in card and "`parity_validation.png`" not in card
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # a header and the two epochs


def _kept_cv_run(folder, errors, plan, partial=None):
    """A cv output folder as benchmarks/cv_compare.py reads it: a report of per-fold (E, F)
    MAEs (a partial one when ``partial`` names its folds) and the plan's validation frames."""
    folder.mkdir()
    report = {"folds": [{"energy_mae": e, "forces_mae": f} for e, f in errors]}
    if partial:
        report["partial"] = {"folds": partial, "of": len(plan)}
    (folder / "cv_report.json").write_text(json.dumps(report))
    (folder / "cv_plan.json").write_text(json.dumps({"validation_frames": plan}))
    return folder


def test_cv_compare_pairs_folds_only_when_they_are_the_same(tmp_path):
    """benchmarks/cv_compare.py: the score is max(E/E_MTP, F/F_MTP) per fold; paired
    differences only between runs that dealt the same frames into the same folds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cv_compare import compare

    def run(name, errors, frames):
        return _kept_cv_run(tmp_path / name, errors, frames)

    same = [[0, 1], [2, 3]]
    a = run("a", [(2.21, 30.0), (1.105, 90.0)], same)   # Si MTP: 2.21 meV/atom, 60 meV/Å
    b = run("b", [(4.42, 30.0), (1.105, 30.0)], same)
    c = run("c", [(4.42, 30.0), (1.105, 30.0)], [[0, 2], [1, 3]])
    rows = compare("Si", [a, b, c])
    assert rows[0]["score"][0] == pytest.approx((1.0 + 1.5) / 2)
    assert rows[1]["score"][0] == pytest.approx((2.0 + 0.5) / 2)
    assert rows[1]["paired"]["score"][0] == pytest.approx(((2.0 - 1.0) + (0.5 - 1.5)) / 2)
    assert rows[1]["paired"]["forces_mae"][1] == pytest.approx(
        np.std([0.0, -60.0], ddof=1) / np.sqrt(2))
    assert rows[0]["paired"] is None and rows[2]["paired"] is None


def test_cv_compare_pairs_partial_reports_through_the_folds_they_name(tmp_path):
    """Two partial reports (`nnpot cv --only`) of the same plan pair when they hold the same
    folds, not when they hold different ones."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cv_compare import compare

    plan = [[0, 1], [2, 3], [4, 5]]

    def run(name, errors, folds):
        return _kept_cv_run(tmp_path / name, errors, plan, partial=folds)

    a = run("a", [(2.0, 30.0), (3.0, 40.0)], [1, 2])
    b = run("b", [(1.0, 35.0), (2.0, 40.0)], [1, 2])
    c = run("c", [(1.0, 35.0), (2.0, 40.0)], [0, 1])
    rows = compare("Si", [a, b, c])
    assert rows[1]["paired"]["energy_mae"][0] == pytest.approx(-1.0)
    assert rows[1]["paired"]["forces_mae"][0] == pytest.approx(2.5)
    assert rows[2]["paired"] is None


def test_cv_compare_pairs_a_partial_report_with_a_full_one_on_the_folds_it_holds(tmp_path):
    """A partial report (folds 1 and 2 of 3) beside a full report of the same plan pairs on
    those two folds, each with its own fold of the full report, whatever the order."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cv_compare import compare, markdown

    plan = [[0, 1], [2, 3], [4, 5]]

    def run(name, errors, partial=None):
        return _kept_cv_run(tmp_path / name, errors, plan, partial)

    full = run("full", [(9.0, 90.0), (2.0, 30.0), (3.0, 40.0)])
    part = run("part", [(1.0, 35.0), (2.5, 40.0)], partial=[1, 2])
    rows = compare("Si", [full, part])
    assert rows[1]["paired"]["folds"] == 2
    assert rows[1]["paired"]["energy_mae"][0] == pytest.approx(((1.0 - 2.0) + (2.5 - 3.0)) / 2)
    assert rows[1]["paired"]["forces_mae"][0] == pytest.approx(2.5)
    assert "(2 folds)" in markdown("Si", rows)
    back = compare("Si", [part, full])
    assert back[1]["paired"]["energy_mae"][0] == pytest.approx(0.75)


def test_cv_compare_pairs_a_kept_report_through_the_folds_its_config_deals(finished_cv,
                                                                           tmp_path):
    """A report kept without its run folder (benchmarks/results/cv/) pairs with the run it
    came from: its config deals the same folds again. A report whose fold sizes differ from
    what its config deals, or whose config is gone, pairs with nothing."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cv_compare import compare

    base = finished_cv[0] / "run"
    report = json.loads((base / "cv_report.json").read_text())
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps(report))
    resized = json.loads(json.dumps(report))
    resized["folds"][0]["frames"] += 2
    resized["folds"][1]["frames"] -= 2
    (tmp_path / "resized.json").write_text(json.dumps(resized))
    orphan = dict(report, config=str(tmp_path / "gone.yaml"))
    (tmp_path / "orphan.json").write_text(json.dumps(orphan))
    rows = compare("Si", [base, kept, tmp_path / "resized.json", tmp_path / "orphan.json"])
    assert rows[1]["paired"] is not None
    assert rows[1]["paired"]["energy_mae"] == pytest.approx((0.0, 0.0))
    assert rows[2]["paired"] is None and rows[3]["paired"] is None


def test_cv_committee_is_no_worse_than_its_members_on_every_fold(finished_cv, tmp_path):
    """benchmarks/cv_committee.py: fold k's committee is the mean of the runs' fold-k models,
    so its MAE on fold k's frames is at most the mean of its members' (|mean e| ≤ mean |e|);
    the early look at finished folds agrees with the report; runs with other folds, and folds
    not trained, are refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import shutil

    from cv_committee import committee_cv, committee_folds

    from nnpot.core.model_file import load
    from nnpot.train import load_config
    from nnpot.train.cv import evaluate_fold, frame_labels_for_folds
    from nnpot.train.evaluate import labelled_graphs

    base, _, config_path, _ = finished_cv
    run_a, run_b = base / "run", tmp_path / "other_seed"
    shutil.copytree(run_a, run_b)
    torch.manual_seed(0)
    for k in range(2):   # a second member: the fold's model with other weights
        member = load(run_b / f"fold_{k}" / "best.pt")
        with torch.no_grad():
            for parameter in member.parameters():
                parameter.mul_(1 + 0.2 * torch.randn_like(parameter))
        member.save(run_b / f"fold_{k}" / "best.pt")
    committee_cv(tmp_path / "committee", [run_a, run_b])
    committee = json.loads((tmp_path / "committee" / "cv_report.json").read_text())
    assert (tmp_path / "committee" / "cv_parity.png").is_file()
    assert "| None |" not in (tmp_path / "committee" / "cv_report.md").read_text()
    config = load_config(config_path)
    types, _ = frame_labels_for_folds(config.data.train, config.data.keys.group,
                                      config.data.group_key)
    graphs = labelled_graphs(config.data.train, config.model.cutoff, config.data.keys)
    for k in range(2):
        members = [evaluate_fold(run / f"fold_{k}", config, types, graphs)[0]
                   for run in (run_a, run_b)]
        assert members[0]["forces_mae"] != members[1]["forces_mae"]
        for key in ("energy_mae", "forces_mae"):
            # equal where every frame's two errors share a sign; float32 rounding aside
            assert committee["folds"][k][key] <= (members[0][key] + members[1][key]) / 2 * (
                1 + 1e-6)
    # runs of other cutoffs: the pairs are built out to the longest config's cutoff (this one
    # claims 1 Å less than its models have: its own cutoff would drop their outer pairs)
    shorter = yaml.safe_load(Path(config_path).read_text())
    shorter["model"]["cutoff"] -= 1.0
    shorter_path = Path(config_path).with_name("shorter.yaml")
    shorter_path.write_text(yaml.safe_dump(shorter))
    run_c = tmp_path / "shorter_cutoff"
    shutil.copytree(run_a, run_c)
    plan = json.loads((run_c / "cv_plan.json").read_text())
    (run_c / "cv_plan.json").write_text(json.dumps({**plan, "config": str(shorter_path)}))
    committee_cv(tmp_path / "mixed", [run_c, run_b])
    mixed = json.loads((tmp_path / "mixed" / "cv_report.json").read_text())
    for k in range(2):
        for key in ("energy_mae", "forces_mae"):
            assert mixed["folds"][k][key] == pytest.approx(committee["folds"][k][key], rel=1e-9)
    # the early look (--folds) gives the report's figures for the folds it is asked about
    [row] = committee_folds([run_a, run_b], [1])
    assert row["committee"] == pytest.approx((committee["folds"][1]["energy_mae"],
                                              committee["folds"][1]["forces_mae"]))
    for run, member in zip((run_a, run_b), row["members"]):
        errors = json.loads((run / "fold_1" / "metrics.json").read_text())["validation"]["metrics"]
        assert member == (errors["energy"]["mae"], errors["forces"]["mae"])
    with pytest.raises(SystemExit, match="no fold 2"):
        committee_folds([run_a, run_b], [2])
    (run_b / "fold_0" / "metrics.json").unlink()
    with pytest.raises(SystemExit, match="fold_0 not trained yet"):
        committee_folds([run_a, run_b], [0, 1])
    assert committee_folds([run_a, run_b], [1])[0]["fold"] == 1
    plan = json.loads((run_b / "cv_plan.json").read_text())
    plan["validation_frames"].reverse()
    (run_b / "cv_plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match="other folds"):
        committee_cv(tmp_path / "committee2", [run_a, run_b])


def test_cv_partial_reports_merge_into_the_whole_report(finished_cv, tmp_path):
    """benchmarks/cv_partial.py: fold 0 and fold 1 reported apart (as if trained in two
    sessions) and merged give the report `nnpot cv` wrote; a fold twice, another config's
    report, a fold not finished and a fold size the config does not deal are refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cv_partial import merge_reports, report_folds

    run = finished_cv[0] / "run"
    whole = json.loads((run / "cv_report.json").read_text())
    parts = [report_folds(run, tmp_path / f"part{k}", [k]) for k in range(2)]
    assert parts[1]["partial"] == {"folds": [1], "of": 2}
    for key in ("energy_mae", "forces_mae", "frames", "epochs"):
        assert parts[1]["folds"][0][key] == pytest.approx(whole["folds"][1][key], rel=1e-9)
    assert "folds 1 of 2" in (tmp_path / "part1" / "cv_report.md").read_text().splitlines()[0]
    # the parts in either order: the merged report is the whole one, no longer partial
    merged = merge_reports([tmp_path / "part1" / "cv_report.json",
                            tmp_path / "part0" / "cv_report.json"], tmp_path / "merged")
    assert "partial" not in merged
    for key in ("energy_mae", "forces_rmse"):
        assert merged["mean"][key] == pytest.approx(whole["mean"][key], rel=1e-12)
        assert merged["by_config_type"]["strained"][key] == \
            pytest.approx(whole["by_config_type"]["strained"][key], rel=1e-12)
    assert (tmp_path / "merged" / "cv_report.md").read_text().startswith(
        "# Cross-validation: 2 folds")
    with pytest.raises(SystemExit, match="fold_0 is in more than one report"):
        merge_reports([tmp_path / "part0" / "cv_report.json", run / "cv_report.json"],
                      tmp_path / "bad")
    other = dict(parts[0], config=str(tmp_path / "other.yaml"))
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other.yaml"):
        merge_reports([tmp_path / "part1" / "cv_report.json", tmp_path / "other.json"],
                      tmp_path / "bad")
    resized = json.loads(json.dumps(parts[0]))
    resized["folds"][0]["frames"] += 1
    (tmp_path / "resized.json").write_text(json.dumps(resized))
    with pytest.raises(SystemExit, match="fold_0 has"):
        merge_reports([tmp_path / "resized.json"], tmp_path / "bad")
    with pytest.raises(SystemExit, match="no fold 2"):
        report_folds(run, tmp_path / "bad", [2])
    with pytest.raises(SystemExit, match="is not a nnpot cv run"):
        report_folds(tmp_path, tmp_path / "bad", [0])
    with pytest.raises(SystemExit, match="no report .*missing.json"):
        merge_reports([tmp_path / "missing.json"], tmp_path / "bad")
    (tmp_path / "notes.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="notes.json is not a cv_report.json"):
        merge_reports([tmp_path / "part0" / "cv_report.json", tmp_path / "notes.json"],
                      tmp_path / "bad")
