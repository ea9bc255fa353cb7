"""Running the folds of ``nnpot cv`` and watching them: each unfinished fold is an
``nnpot train`` process of its own, ``jobs`` at a time, logging to its folder's ``train.log``;
where each stands (epoch, speed, last validation errors) is read back from its folder.

Stopping ``nnpot cv`` stops its folds, whether by Ctrl-C or by ``kill`` (SIGTERM, as a batch
system sends at the end of a job): a fold left training would keep writing its folder, and a
later ``--resume`` would start a second run in it. Each keeps its last checkpoint.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

PROGRESS_EVERY_S = 300.0  # how often a running `nnpot cv` says where its folds stand


class FoldFailed(RuntimeError):
    """A fold's training stopped with an error (its log's last lines in the message)."""


def _stop_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through train_folds' cleanup, as Ctrl-C does


def fold_state(fold_dir: Path) -> str:
    """'done' (its metrics are written), 'started' (a checkpoint to resume from) or 'new'."""
    if (fold_dir / "metrics.json").is_file():
        return "done"
    return "started" if (fold_dir / "checkpoint.pt").is_file() else "new"


def train_folds(fold_dirs: list[Path], jobs: int) -> None:
    """Run ``nnpot train`` for every unfinished fold, ``jobs`` at a time, each logging to its
    folder's ``train.log``; a failed fold stops the rest with its log's last lines."""
    pending = [d for d in fold_dirs if fold_state(d) != "done"]
    for d in fold_dirs:
        if d not in pending:
            print(f"cv: {d.name} already trained", flush=True)
    running: list[tuple[Path, subprocess.Popen, object]] = []
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    main = threading.current_thread() is threading.main_thread()  # where handlers may be set
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if main else None
    try:
        while pending or running:
            while pending and len(running) < jobs:
                fold_dir = pending.pop(0)
                command = [sys.executable, "-m", "nnpot.cli", "train",
                           str(fold_dir / "cv_fold.yaml")]
                if fold_state(fold_dir) == "started":
                    command.append("--resume")
                log = open(fold_dir / "train.log", "a")
                print(f"cv: training {fold_dir.name}"
                      f"{' (resumed)' if '--resume' in command else ''}; log: "
                      f"{fold_dir / 'train.log'}", flush=True)
                running.append((fold_dir, subprocess.Popen(command, stdout=log,
                                                           stderr=subprocess.STDOUT), log))
            time.sleep(0.5)
            for item in list(running):
                fold_dir, process, log = item
                if process.poll() is None:
                    continue
                running.remove(item)
                log.close()
                if process.returncode != 0:
                    tail = (fold_dir / "train.log").read_text().strip().splitlines()[-5:]
                    raise FoldFailed(f"cv: {fold_dir.name} failed (exit {process.returncode})"
                                       f"; the end of {fold_dir / 'train.log'}:\n"
                                       + "\n".join(tail))
                print(f"cv: {fold_dir.name} done", flush=True)
            if running and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + PROGRESS_EVERY_S
                print(progress_text(fold_dirs, jobs), flush=True)
    finally:  # an interrupt or a failure stops the other folds; their checkpoints remain
        for _, process, log in running:
            process.terminate()
            process.wait()
            log.close()
        if main:
            signal.signal(signal.SIGTERM, previous)


def fold_progress(fold_dir: Path) -> dict:
    """Where one fold's training stands, read from its folder: ``state`` ('new', 'started',
    'done'), ``epoch`` (the last logged), ``max_epochs`` (None when only a time budget is
    set), ``s_per_epoch`` (the median over its last ten logged epochs; None before two), and the last
    epoch's validation errors ``energy_mae`` (meV/atom) and ``forces_mae`` (meV/Å)."""
    training = yaml.safe_load((fold_dir / "cv_fold.yaml").read_text())["training"]
    max_epochs = training.get("max_epochs")
    if training.get("max_time_min") is not None and (max_epochs or 0) >= 100000:
        max_epochs = None  # a time budget only: its epoch cap is a formality
    rows = []
    if (fold_dir / "log.csv").is_file():
        with open(fold_dir / "log.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    last = rows[-1] if rows else {}
    recent = rows[-11:]
    steps = [(float(b["time_s"]) - float(a["time_s"])) / (int(b["epoch"]) - int(a["epoch"]))
             for a, b in zip(recent, recent[1:]) if int(b["epoch"]) > int(a["epoch"])]
    # the median: a resume's restart or a pause shows as one long step
    s_per_epoch = float(np.median(steps)) if steps else None

    def number(key):
        return float(last[key]) if last.get(key) not in (None, "") else None
    state = fold_state(fold_dir)
    if state == "new" and rows:
        state = "started"  # training, before its first checkpoint
    return {"fold": fold_dir.name, "state": state,
            "epoch": int(last["epoch"]) if last else 0, "max_epochs": max_epochs,
            "s_per_epoch": s_per_epoch, "energy_mae": number("val_energy_mae"),
            "forces_mae": number("val_forces_mae")}


def progress_text(fold_dirs: Sequence[Path], jobs: int = 1) -> str:
    """One line per fold and, where every fold has an epoch budget and a speed is known,
    about how long the training has left with ``jobs`` folds at a time."""
    folds = [fold_progress(d) for d in fold_dirs]
    lines = []
    for f in folds:
        budget = f"/{f['max_epochs']}" if f["max_epochs"] else ""
        line = f"cv: {f['fold']} {f['state']}, epoch {f['epoch']}{budget}"
        if f["s_per_epoch"] and f["state"] != "done":
            line += f", {f['s_per_epoch']:.1f} s/epoch"
        if f["energy_mae"] is not None and f["forces_mae"] is not None:
            line += (f"; validation E {f['energy_mae']:.2f} meV/atom, "
                     f"F {f['forces_mae']:.1f} meV/Å")
        lines.append(line)
    speeds = [f["s_per_epoch"] for f in folds if f["s_per_epoch"]]
    if speeds and all(f["max_epochs"] for f in folds) and any(f["state"] != "done"
                                                               for f in folds):
        typical = float(np.median(speeds))
        left_s = sum((f["max_epochs"] - f["epoch"]) * (f["s_per_epoch"] or typical)
                     for f in folds if f["state"] != "done")
        left_min = left_s / max(1, min(jobs, sum(f["state"] != "done" for f in folds))) / 60
        lines.append(f"cv: about {left_min:.0f} min of training left at {jobs} "
                     f"fold{'s' if jobs > 1 else ''} at a time" if left_min < 120 else
                     f"cv: about {left_min / 60:.1f} h of training left at {jobs} "
                     f"fold{'s' if jobs > 1 else ''} at a time")
    return "\n".join(lines)
