"""Active learning: train a committee, explore with MD, label what it disagrees on, repeat.

``nnpot learn config.yaml`` (or ``nnpot.active_learning.learn``). Each iteration k, in
``<output>/iter_<k>/``:

1. **train** a committee (``model.committee ≥ 2``) on ``<output>/train.extxyz`` — the start set
   plus every frame labelled so far — with ``nnpot train`` (``model/``; the last training with
   ``final_train`` applied, e.g. a longer budget), and evaluate it on the test file when one is
   given;
2. stop when the label budget is spent or the last iteration is reached: that committee is the
   result (``<output>/model.pt``);
3. **explore**: MD from every start structure at every temperature (``explore/``); a frame is
   looked at every ``interval`` steps. ``explore.engine: lammps`` runs it in LAMMPS
   (``pair_style nnpot`` with the committee exported once per iteration, its per-atom
   deviation dumped; ``nnpot.lammps.explore``) instead of ASE;
4. **select** the frames whose largest per-atom force deviation lies in (lower, upper] — above
   ``upper`` the model is too far off for the frame to be trusted as physical — and from them a
   diverse subset by farthest-point sampling on per-structure fingerprints (the mean and spread
   over atoms of symmetry functions), starting from the most uncertain frame. Frames with two
   atoms closer than ``min_distance_factor`` × the training set's shortest distance (an MD gone
   astray) are never selected: a committee can agree on nonsense. When every physical frame is
   above ``upper``, the least uncertain of them are taken instead. With ``select.method:
   random`` the subset is drawn uniformly from every explored physical frame (the baseline
   active learning must beat). No frame above ``lower``: the loop has converged;
5. **label** them with the ASE calculator named in the config (EMT for the examples; GPAW, VASP,
   Quantum ESPRESSO… in real use), one frame at a time, each appended to ``labelled.extxyz`` as
   soon as it is done; a frame whose calculation raises is logged in ``label_failures.txt``
   and skipped — it costs that frame, not the loop;
6. **merge** the labelled frames into ``train.extxyz`` (atomically; frames carry
   ``al_iteration``/``al_index`` so none is ever added twice).

``state.json`` records the phase reached (written atomically after each). A killed loop resumes
with ``--resume`` where it stopped: training resumes from its checkpoint, exploration is re-run
with the same seeds, labelling skips every frame already labelled or failed. ``report.md``,
``report.csv`` and ``learning_curve.png`` give, per iteration, the labels used, the validation
and test errors and the candidate fraction.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from ..core.files import atomic_write_text, durable_append
from ..train.config import ConfigError
from .config import LearnConfig, _training_config, load_learn_config
from .labelling import _append_frame, _extxyz_text, calculator_class, label_frame, read_extxyz
from .report import plot_learning_curve
from .selection import farthest_point_sampling, shortest_distance, structure_fingerprints

STATE_VERSION = 1
PHASES = ("train", "explore", "select", "label", "merge")


class ActiveLearning:
    """The loop over one output folder (see the module docstring)."""

    def __init__(self, config: LearnConfig, resume: bool = False, log=print):
        self.config, self.log = config, log
        self.out = Path(config.output)
        self.state_path = self.out / "state.json"
        self.train_file = self.out / "train.extxyz"
        self.calculator_class = calculator_class(config.label.calculator)
        if self.state_path.exists() and not resume:
            raise ConfigError(f"{self.out} holds an active-learning run; continue it with "
                              f"--resume, or choose another output folder")
        if resume and not self.state_path.exists():
            raise ConfigError(f"--resume: {self.out} holds no active-learning run "
                              f"(no state.json)")
        self.out.mkdir(parents=True, exist_ok=True)
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
            if self.state.get("version") != STATE_VERSION:
                raise ConfigError(f"{self.state_path}: unknown state version "
                                  f"{self.state.get('version')}")
        else:
            start = read_extxyz(config.start)
            if not start:
                raise ConfigError(f"start: {config.start} holds no frames")
            for frame in start:
                frame.info["al_iteration"] = -1
            atomic_write_text(self.train_file, _extxyz_text(start))
            self.state = {"version": STATE_VERSION, "iteration": 0, "phase": "train",
                          "history": [], "stopped": None}
            self._save_state()

    def _save_state(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=1))

    def _advance(self, phase: str) -> None:
        self.state["phase"] = phase
        self._save_state()

    def iteration_dir(self, k: int | None = None) -> Path:
        return self.out / f"iter_{self.state['iteration'] if k is None else k:02d}"

    @property
    def labels_used(self) -> int:
        return sum(1 for f in read_extxyz(self.train_file) if f.info.get("al_iteration", -1) >= 0)

    def run(self) -> Path:
        """Run (or continue) the loop; returns the final committee's model file."""
        while self.state["stopped"] is None:
            phase = self.state["phase"]
            self.log(f"iteration {self.state['iteration']}: {phase}")
            getattr(self, f"_{phase}")()
        self.write_report()
        return self.out / "model.pt"

    def _train(self) -> None:
        from ..train import fit

        k, folder = self.state["iteration"], self.iteration_dir()
        run = folder / "model"
        labels = self.labels_used
        final = labels >= self.config.budget.labels or k + 1 >= self.config.budget.iterations
        config = _training_config(self.config, self.train_file, run, final)
        if (run / "metrics.json").exists() and (run / "best.pt").exists():
            best = run / "best.pt"  # trained before a kill; its report is written
        else:
            best = fit(config, resume=(run / "checkpoint.pt").exists())
        row = {"iteration": k, "labels": labels,
               "train_frames": len(read_extxyz(self.train_file))}
        metrics = json.loads((run / "metrics.json").read_text())
        for role, entry in metrics.items():
            for name, values in entry["metrics"].items():
                row[f"{role}_{name}_mae"] = values["mae"]
        if self.config.test:
            from ..core.model_file import load
            from ..train.evaluate import evaluate, labelled_graphs

            committee = load(best)
            graphs = labelled_graphs(self.config.test, committee.cutoff, config.data.keys)
            summary = evaluate(committee, graphs, config.training.batch_size)[0].summary()
            for name, values in summary.items():
                row[f"test_{name}_mae"] = values["mae"]
        self._record(row)
        if row["labels"] >= self.config.budget.labels:
            return self._stop(best, f"label budget spent ({row['labels']} labels)")
        if k + 1 >= self.config.budget.iterations:
            return self._stop(best, f"{self.config.budget.iterations} iterations done")
        self._advance("explore")

    def _record(self, row: dict) -> None:
        history = [r for r in self.state["history"] if r["iteration"] != row["iteration"]]
        self.state["history"] = history + [row]
        self._save_state()

    def _stop(self, best: Path, reason: str) -> None:
        shutil.copyfile(best, self.out / ".model.pt.partial")
        os.replace(self.out / ".model.pt.partial", self.out / "model.pt")
        self.state["stopped"] = reason
        self._save_state()
        self.log(f"stopped: {reason}; model: {self.out / 'model.pt'}")

    def _explore(self) -> None:
        from ..core.model_file import load
        from ..md import MDInstabilityError, md

        folder = self.iteration_dir() / "explore"
        folder.mkdir(parents=True, exist_ok=True)
        committee = load(self.iteration_dir() / "model" / "best.pt")
        e, k = self.config.explore, self.state["iteration"]
        starts = [frame for path in e.structures for frame in read_extxyz(path)]
        summary = {"runs": [], "frames": 0, "candidates": 0, "above_upper": 0}
        for s, start in enumerate(starts):
            for temperature in e.temperatures:
                name = f"s{s:02d}_T{float(temperature):g}"
                trajectory, found = folder / f"{name}.extxyz", folder / f"{name}_candidates.extxyz"
                seed = self.config.seed + 1000 * k + 17 * s + int(temperature)
                note = "finished"
                if e.engine == "lammps":
                    note = self._explore_in_lammps(committee, start, float(temperature), seed,
                                                   folder / name, trajectory, found)
                else:
                    try:
                        md(start.copy(), committee, ensemble=e.ensemble,
                           temperature=float(temperature), timestep=e.timestep, steps=e.steps,
                           pressure=e.pressure, seed=seed, output=trajectory,
                           interval=e.interval, progress=False,
                           uncertainty_threshold=self.config.select.lower, candidates=found)
                    except MDInstabilityError as error:  # what was explored before counts
                        note = f"stopped early: {error}"
                frames, flagged = read_extxyz(trajectory), read_extxyz(found)
                above = [f for f in flagged if f.info["max_force_std"] > self.config.select.upper]
                candidates = len(flagged) - len(above)
                summary["runs"].append({"run": name, "frames": len(frames),
                                        "candidates": candidates, "above_upper": len(above),
                                        "note": note})
                summary["frames"] += len(frames)
                summary["candidates"] += candidates
                summary["above_upper"] += len(above)
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1))
        row = dict(next(r for r in self.state["history"] if r["iteration"] == k))
        row.update(explored_frames=summary["frames"], candidates=summary["candidates"],
                   candidate_fraction=summary["candidates"] / max(1, summary["frames"]))
        self._record(row)
        self._advance("select")

    def _explore_in_lammps(self, committee, start, temperature: float, seed: int, folder: Path,
                           trajectory: Path, found: Path) -> str:
        """One exploration run in LAMMPS (``nnpot.lammps.explore``), written as nnpot md
        writes its runs: every dumped frame, and the candidates above select.lower."""
        from ..lammps.explore import explore, export_committee

        e = self.config.explore
        package = export_committee(self.iteration_dir() / "model" / "best.pt",
                                   self.iteration_dir() / "explore")
        run = explore(package, list(committee.species), start, folder, e.ensemble, temperature,
                      e.steps, e.timestep, e.interval, seed, e.pressure)
        atomic_write_text(trajectory, _extxyz_text(run.frames))
        atomic_write_text(found, _extxyz_text(
            [f for f in run.frames if f.info["max_force_std"] > self.config.select.lower]))
        return run.note

    def _select(self) -> None:
        folder, k = self.iteration_dir(), self.state["iteration"]
        cfg = self.config.select
        # What the trajectories hold: every looked-at frame (random selection draws from them)
        # and the candidates, each with its largest force deviation (fps selects from them).
        files = sorted((folder / "explore").glob("*.extxyz"))
        wanted = [p for p in files if p.name.endswith("_candidates.extxyz") == (cfg.method == "fps")]
        frames = [frame for path in wanted for frame in read_extxyz(path)]
        # Frames from an MD that went astray (two atoms far closer than in any training frame)
        # are not worth a reference calculation, whatever the committee says.
        floor = cfg.min_distance_factor * min(shortest_distance(f)
                                              for f in read_extxyz(self.train_file))
        physical = [f for f in frames if shortest_distance(f) >= floor]
        skipped = len(frames) - len(physical)
        if cfg.method == "random":
            pool = physical
        else:
            deviation = [f.info["max_force_std"] for f in physical]
            pool = [f for f, d in zip(physical, deviation) if cfg.lower < d <= cfg.upper]
            if not pool and physical:
                # Everything is above the upper threshold: the model extrapolates everywhere
                # it went. Learn from the least uncertain of those frames rather than stall.
                order = np.argsort(deviation)
                pool = [physical[int(i)] for i in order[:cfg.per_iteration]]
                self.log(f"  no candidate in ({cfg.lower}, {cfg.upper}] eV/Å; taking the "
                         f"{len(pool)} least uncertain of {len(physical)} frames above it")
        if skipped:
            self.log(f"  skipped {skipped} frame(s) with atoms closer than {floor:.2f} Å")
        if not pool:
            best = folder / "model" / "best.pt"
            return self._stop(best, f"converged: MD found no frame whose force deviation "
                                    f"exceeds {cfg.lower} eV/Å")
        count = min(cfg.per_iteration, self.config.budget.labels - self.labels_used)
        if cfg.method == "random":
            rng = np.random.default_rng(self.config.seed + 7919 * k)
            chosen = sorted(rng.choice(len(pool), size=min(count, len(pool)), replace=False))
        else:
            from ..core.model_file import load
            committee = load(folder / "model" / "best.pt")
            points = structure_fingerprints(pool, committee.species, committee.cutoff)
            first = int(np.argmax([f.info["max_force_std"] for f in pool]))
            chosen = farthest_point_sampling(points, count, first)
        selected = []
        for j, index in enumerate(chosen):
            frame = pool[int(index)].copy()
            frame.calc = None
            frame.info = {"al_iteration": k, "al_index": j,
                          "max_force_std": pool[int(index)].info.get("max_force_std", math.nan)}
            selected.append(frame)
        atomic_write_text(folder / "selected.extxyz", _extxyz_text(selected))
        self.log(f"  selected {len(selected)} of {len(pool)} frames ({cfg.method})")
        self._advance("label")

    def _label(self) -> None:
        folder = self.iteration_dir()
        labelled_path, failures_path = folder / "labelled.extxyz", folder / "label_failures.txt"
        done = {int(f.info["al_index"]) for f in read_extxyz(labelled_path)}
        if failures_path.exists():
            done |= {int(line.split(":", 1)[0]) for line in failures_path.read_text().splitlines()
                     if line.strip()}
        factory = lambda: self.calculator_class(**self.config.label.kwargs)  # noqa: E731
        for frame in read_extxyz(folder / "selected.extxyz"):
            index = int(frame.info["al_index"])
            if index in done:
                continue  # labelled (or failed) before a kill: never twice
            try:
                labelled = label_frame(frame, factory)
            except Exception as error:  # any calculator failure costs this frame only
                durable_append(failures_path,
                               f"{index}: {type(error).__name__}: {str(error)[:300]}\n")
                self.log(f"  frame {index}: labelling failed ({type(error).__name__}: "
                         f"{error}); skipped")
                continue
            labelled.info.update(frame.info)
            _append_frame(labelled_path, labelled)
        self._advance("merge")

    def _merge(self) -> None:
        folder, k = self.iteration_dir(), self.state["iteration"]
        frames = read_extxyz(self.train_file)
        present = {(f.info.get("al_iteration"), f.info.get("al_index")) for f in frames}
        new = [f for f in read_extxyz(folder / "labelled.extxyz")
               if (k, f.info["al_index"]) not in present]
        atomic_write_text(self.train_file, _extxyz_text(frames + new))
        self.log(f"  added {len(new)} labelled frames; {self.labels_used} labels in all")
        self.state["iteration"] = k + 1
        self._advance("train")

    def write_report(self) -> None:
        """report.csv, report.md and learning_curve.png from the history."""
        history = self.state["history"]
        if not history:
            return
        keys = list(dict.fromkeys(key for row in history for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.out / "report.csv", buffer.getvalue())
        columns = [("iteration", "iteration", "{}"), ("labels", "labels", "{}"),
                   ("validation_forces_mae", "val. F MAE (meV/Å)", "{:.1f}"),
                   ("test_forces_mae", "test F MAE (meV/Å)", "{:.1f}"),
                   ("test_energy_mae", "test E MAE (meV/atom)", "{:.2f}"),
                   ("candidate_fraction", "candidate fraction", "{:.3f}")]
        columns = [c for c in columns if any(c[0] in row for row in history)]
        lines = [f"# Active learning ({self.config.select.method})", "",
                 f"Stopped: {self.state['stopped']}.", "",
                 "| " + " | ".join(c[1] for c in columns) + " |",
                 "|" + "---|" * len(columns)]
        for row in history:
            lines.append("| " + " | ".join(fmt.format(row[key]) if key in row else ""
                                           for key, _, fmt in columns) + " |")
        atomic_write_text(self.out / "report.md", "\n".join(lines) + "\n")
        plot_learning_curve(history, self.out / "learning_curve.png", self.config.select.method)


def learn(config: LearnConfig | str | os.PathLike, resume: bool = False, log=print) -> Path:
    """Run (or with ``resume`` continue) an active-learning loop; returns the final model."""
    if not isinstance(config, LearnConfig):
        config, _ = load_learn_config(config)
    return ActiveLearning(config, resume=resume, log=log).run()
