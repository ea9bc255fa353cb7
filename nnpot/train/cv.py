"""k-fold cross-validation of a training config (``nnpot cv config.yaml --folds 5``).

The frames of ``data.train`` are dealt into k folds, stratified by ``data.keys.group`` (the
config type), with the frames that share the value of the info key ``data.group_key`` (one
trajectory snapshot, say) always in the same fold. Fold k trains exactly as ``nnpot train``
would, on the other folds, validating on its own: in ``OUTPUT/fold_k/`` (OUTPUT is the config's
``output`` unless ``--output`` says otherwise), which also holds ``validation_frames.json``, the
0-based indices in the training file of its validation frames. A fold's validation frames
report the error, so they choose nothing: every fold trains to its budget (no early stopping)
and keeps its last epoch, as the final fit on all the frames does. Each fold is resumable (a killed
fold continues from its checkpoint when the command is run again with ``--resume``), and
``--jobs`` folds run at once, each a process of its own. Every few minutes the command prints
where each fold stands (epoch, seconds per epoch, its last validation errors) and about how
long is left; ``nnpot cv config.yaml --status`` prints the same at any time, from the folders.
``--only 2 3`` trains those folds alone (a CV spread over sessions or machines); the report then
holds the finished folds and says which of how many, until all have finished.

The report, ``cv_report.json`` and ``cv_report.md`` in OUTPUT, gives per fold and as mean ±
standard error (the sample standard deviation over folds / √k): energy MAE and RMSE (meV/atom)
and force MAE and RMSE (meV/Å), overall and per config type, and the epochs each fold reached;
``cv_parity.png`` shows every frame as predicted by the fold that did not train on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from ..core.files import atomic_write_text
from .config import ConfigError, TrainConfig, load_config
from .cv_folds import fold_state, progress_text, train_folds
from .frames import iter_frames

PLAN = "cv_plan.json"


QUANTITIES = (("energy", "mae"), ("energy", "rmse"), ("forces", "mae"), ("forces", "rmse"))


def frame_labels_for_folds(path: str | Path, type_key: str, group_key: str | None
                           ) -> tuple[list[str], list[str]]:
    """Each frame's config type (info[type_key], '' without) and group (info[group_key]; a
    frame without it is a group of its own)."""
    types, groups = [], []
    for index, atoms in enumerate(iter_frames(path)):
        types.append(str(atoms.info.get(type_key, "")))
        value = atoms.info.get(group_key) if group_key else None
        groups.append(f"\0frame {index}" if value is None else str(value))
    return types, groups


def assign_folds(types: Sequence[str], groups: Sequence[str], k: int, seed: int
                 ) -> list[np.ndarray]:
    """The validation frames of each of ``k`` folds: disjoint, covering every frame.

    Frames of one group go together (a group of mixed types counts as its first frame's
    type). Within each type the groups are shuffled (seeded) and dealt, largest first, each to
    the fold holding the fewest frames of that type (ties: the fewest frames in all, then the
    lowest fold), so a type of at least k groups appears in every fold.
    """
    if k < 2:
        raise ConfigError(f"--folds must be ≥ 2, got {k}")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    if len(members) < k:
        raise ConfigError(f"{len(members)} groups of frames cannot fill {k} folds")
    by_type: dict[str, list[str]] = {}
    for group, frames in members.items():
        by_type.setdefault(types[frames[0]], []).append(group)
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for kind in sorted(by_type):
        kind_groups = by_type[kind]
        order = rng.permutation(len(kind_groups))
        shuffled = sorted((kind_groups[i] for i in order), key=lambda g: -len(members[g]))
        of_kind = [0] * k
        for group in shuffled:  # a stable sort keeps the shuffle among equal sizes
            fold = min(range(k), key=lambda f: (of_kind[f], len(folds[f]), f))
            folds[fold].extend(members[group])
            of_kind[fold] += len(members[group])
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fold_config(config: TrainConfig, fold_dir: Path, validation: np.ndarray) -> dict:
    """The training config of one fold, as a mapping (absolute paths)."""
    values = config.to_dict()
    values["output"] = str(fold_dir)
    values["data"]["validation_frames"] = [int(i) for i in validation]
    values["data"]["validation_fraction"] = 0.0
    # the fold's validation frames report its error: neither the kept epoch, the epoch the final
    # stage starts from, nor when to stop may be chosen on them
    values["training"]["keep_epoch"] = "last"
    values["training"]["early_stopping_patience"] = None
    return values


def fold_plan(config: TrainConfig, config_path: str | Path, folds: int) -> dict:
    """The run's plan (``cv_plan.json``): which frames each of ``folds`` folds validates on,
    and what dealt them (training file, seed, type and group keys). A function of these alone,
    so a plan can be rebuilt from the config without the run folder."""
    return _plan_and_types(config, config_path, folds)[0]


def _plan_and_types(config: TrainConfig, config_path: str | Path, folds: int
                    ) -> tuple[dict, list[str]]:
    """``fold_plan`` and each frame's config type (the training file is read once)."""
    types, groups = frame_labels_for_folds(config.data.train, config.data.keys.group,
                                           config.data.group_key)
    # data.split_seed deals the folds when set: runs of other seeds can share their folds
    fold_seed = config.seed if config.data.split_seed is None else config.data.split_seed
    validation = assign_folds(types, groups, folds, fold_seed)
    plan = {"config": str(Path(config_path).resolve()), "train": config.data.train,
            "folds": folds, "seed": fold_seed, "type_key": config.data.keys.group,
            "group_key": config.data.group_key,
            "validation_frames": [v.tolist() for v in validation]}
    return plan, types


def cross_validate(config_path: str | Path, folds: int = 5, jobs: int = 1,
                   output: str | Path | None = None, resume: bool = False,
                   only: Sequence[int] | None = None) -> Path:
    """Train every fold (or the folds ``only`` names: a CV spread over sessions or machines)
    and report every finished one; returns the path of ``cv_report.md``, a partial report
    (it says which folds of how many it holds) until all have finished."""
    config = load_config(config_path)
    if config.data.validation:
        raise ConfigError(f"{config_path}: data.validation names a separate validation file; "
                          f"cross-validation validates on the training file's own frames")
    if jobs < 1:
        raise ConfigError(f"--jobs must be ≥ 1, got {jobs}")
    if only is not None:
        if bad := [k for k in only if not 0 <= k < folds]:
            raise ConfigError(f"--only: no fold {bad[0]} in a {folds}-fold CV (folds 0 to "
                              f"{folds - 1})")
        if len(set(only)) < len(only):
            raise ConfigError(f"--only names a fold twice: {' '.join(map(str, only))}")
    out = Path(output).resolve() if output else Path(config.output)
    plan, types = _plan_and_types(config, config_path, folds)
    validation = [np.asarray(v, dtype=np.int64) for v in plan["validation_frames"]]
    _claim(out, plan, resume)
    fold_dirs = [out / f"fold_{k}" for k in range(folds)]
    for fold_dir, frames in zip(fold_dirs, validation):
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(fold_dir / "validation_frames.json", json.dumps(frames.tolist()))
        atomic_write_text(fold_dir / "cv_fold.yaml", yaml.safe_dump(
            fold_config(config, fold_dir, frames), sort_keys=False))
    train_folds(fold_dirs if only is None else [fold_dirs[k] for k in sorted(only)], jobs)
    from .evaluate import labelled_graphs  # once for every fold: the file's frames as graphs

    graphs = labelled_graphs(config.data.train, config.model.cutoff, config.data.keys,
                             config.data.neighbor_backend)
    done = [k for k, fold_dir in enumerate(fold_dirs) if fold_state(fold_dir) == "done"]
    evaluated = [evaluate_fold(fold_dirs[k], config, types, graphs) for k in done]
    return write_report(out, evaluated, plan["config"], config.data.train,
                        f"{Path(config_path).name}: {fold_names(done, folds)}", done, folds)


def fold_names(folds: Sequence[int], k: int) -> str:
    """``5-fold CV`` when ``folds`` are all k of them, else ``folds 2, 3 of 5``."""
    if len(folds) == k:
        return f"{k}-fold CV"
    return f"folds {', '.join(map(str, folds))} of {k}"


def report_of(results: list[dict], config: str, train: str, folds: Sequence[int],
              k: int) -> dict:
    """The report of ``results``, the ``evaluate_fold`` results of ``folds`` (in that order)
    of a ``k``-fold CV: means and standard errors, marked partial when folds are missing."""
    report = summarise(results)
    report["config"], report["train"] = config, train
    if len(folds) < k:
        report["partial"] = {"folds": list(folds), "of": k}
    return report


def write_report(out: Path, evaluated: Sequence[tuple[dict, dict]], config: str, train: str,
                 title: str, folds: Sequence[int], k: int) -> Path:
    """``cv_report.json``, ``cv_report.md`` and ``cv_parity.png`` in ``out`` from the
    ``evaluate_fold`` results of ``folds`` of a ``k``-fold CV; returns the path of
    ``cv_report.md``."""
    report = report_of([result for result, _ in evaluated], config, train, folds, k)
    atomic_write_text(out / "cv_report.json", report_json(report))
    plot_out_of_fold_parity([values for _, values in evaluated], out / "cv_parity.png",
                            f"{title}, every frame predicted by the fold that did not train on it")
    path = out / "cv_report.md"
    atomic_write_text(path, report_markdown(report))
    return path


def plot_out_of_fold_parity(values_by_fold: Sequence[dict[str, dict]], path: Path,
                            title: str) -> None:
    """``cv_parity.png``: every frame's energy and forces as predicted by the fold model that
    did not train on it, coloured by config type; the titles give the errors pooled over all
    frames (meV/atom, meV/Å, meV/Å³). ``values_by_fold``: per fold, config type → the arrays
    of ``evaluate(..., keep_values=True)``."""
    from .report import plot_parity

    by_type: dict[str, dict] = {}
    for fold in values_by_fold:
        for kind, values in fold.items():
            by_type.setdefault(kind, []).append(values)
    by_type = {kind: {key: np.concatenate([v[key] for v in parts]) for key in parts[0]}
               for kind, parts in by_type.items()}
    pooled = {key: np.concatenate([v[key] for v in by_type.values()])
              for key in next(iter(by_type.values()))}
    metrics = {}
    for name, unit in (("energy", "meV/atom"), ("forces", "meV/Å"), ("stress", "meV/Å³")):
        error = 1e3 * (pooled[f"{name}_pred"] - pooled[f"{name}_ref"])
        if len(error):
            metrics[name] = {"mae": float(np.abs(error).mean()),
                             "rmse": float(np.sqrt((error ** 2).mean())), "unit": unit}
    plot_parity(pooled, metrics, path, title, groups=by_type)


def _claim(out: Path, plan: dict, resume: bool) -> None:
    """Write the fold plan, or check it against the one already there."""
    existing = out / PLAN
    if existing.is_file():
        if not resume:
            raise ConfigError(f"{out} already holds a cross-validation run; continue it with "
                              f"--resume or choose another output directory")
        old = json.loads(existing.read_text())
        changed = [key for key in plan if old.get(key) != plan[key]]
        if changed:
            raise ConfigError(f"--resume: {out} holds a cross-validation run with other "
                              f"{', '.join(changed)}; start a new one in another directory")
        return
    if resume:
        raise ConfigError(f"--resume: {out} holds no cross-validation run to resume")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(existing, json.dumps(plan))


def cv_status(config_path: str | Path, output: str | Path | None = None, jobs: int = 1) -> str:
    """``nnpot cv config.yaml --status``: the progress of the cross-validation run in the
    config's output (or ``output``), without training anything."""
    config = load_config(config_path)
    out = Path(output).resolve() if output else Path(config.output)
    if not (out / PLAN).is_file():
        raise ConfigError(f"{out} holds no cross-validation run; start one with "
                          f"`nnpot cv {config_path}`")
    plan = json.loads((out / PLAN).read_text())
    text = progress_text([out / f"fold_{k}" for k in range(plan["folds"])], jobs)
    if (out / "cv_report.md").is_file():
        text += f"\ncv: report {out / 'cv_report.md'}"
    return text


def evaluate_fold(fold_dir: Path, config: TrainConfig, types: Sequence[str],
                  graphs: Sequence, potential=None) -> tuple[dict, dict[str, dict]]:
    """One fold's errors on its validation frames, overall and per config type, and the
    epochs and minutes it trained; and, per config type, its predicted and reference values
    (for the parity plot). ``graphs``: the training file's frames with labels; ``potential``:
    the model to evaluate (default: the fold's ``best.pt``)."""
    from ..core.model_file import load
    from .evaluate import evaluate

    frames = json.loads((fold_dir / "validation_frames.json").read_text())
    potential = (load(fold_dir / "best.pt") if potential is None else potential).eval()
    batch = config.training.batch_size

    values_by_type = {}

    def errors(indices: list[int], kind: str | None = None) -> dict:
        metrics, values = evaluate(potential, [graphs[i] for i in indices], batch,
                                   keep_values=kind is not None)
        if kind is not None:
            values_by_type[kind] = values
        summary = metrics.summary()
        return {f"{q}_{s}": summary[q][s] for q, s in QUANTITIES if q in summary}

    by_type = {}
    for kind in dict.fromkeys(types[i] for i in frames):
        name = kind or "(none)"
        by_type[name] = {"frames": sum(types[i] == kind for i in frames),
                         **errors([i for i in frames if types[i] == kind], name)}
    training = potential.provenance.get("training", {})
    return {"fold": fold_dir.name, "frames": len(frames), **errors(frames),
            "epochs": training.get("epochs"), "time_min": training.get("time_min"),
            "by_config_type": by_type}, values_by_type


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error (sample standard deviation / √n; None for one value, which has
    no spread to estimate: a report of one fold, or a config type only one fold validated on)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return float(array.mean()), None
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(len(array)))


def mean_stderr_text(mean: float, stderr: float | None, digits: int = 2) -> str:
    """``mean ± stderr`` to ``digits`` decimals; the mean alone where there is no stderr."""
    return f"{mean:.{digits}f}" if stderr is None else f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def summarise(results: list[dict]) -> dict:
    """Per-fold results and their mean ± standard error, overall and per config type (over
    the folds that validated on that type)."""
    keys = [f"{q}_{s}" for q, s in QUANTITIES] + ["epochs"]
    overall = {}
    for key in keys:
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            overall[key] = dict(zip(("mean", "stderr"), mean_and_stderr(values)))
    by_type = {}
    for kind in dict.fromkeys(t for r in results for t in r["by_config_type"]):
        rows = [r["by_config_type"][kind] for r in results if kind in r["by_config_type"]]
        by_type[kind] = {"folds": len(rows), "frames": sum(row["frames"] for row in rows)}
        for key in keys[:-1]:
            values = [row[key] for row in rows if key in row]
            if values:
                by_type[kind][key] = dict(zip(("mean", "stderr"), mean_and_stderr(values)))
    return {"folds": results, "mean": overall, "by_config_type": by_type}


def report_json(report: dict) -> str:
    """cv_report.json's text: strict JSON (no NaN, which other readers refuse)."""
    return json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False)


def report_markdown(report: dict) -> str:
    """cv_report.md: a table per fold and the means ± standard errors."""
    def cell(entry) -> str:
        if entry is None:
            return "–"
        if isinstance(entry, dict):
            return mean_stderr_text(entry["mean"], entry["stderr"])
        return f"{entry:.2f}"

    header = ("| | frames | E MAE | E RMSE | F MAE | F RMSE | epochs |\n"
              "|---|---|---|---|---|---|---|\n")
    partial = report.get("partial")
    title = (f"{len(report['folds'])} folds" if not partial else
             f"{fold_names(partial['folds'], partial['of'])} (a partial report)")
    lines = [f"# Cross-validation: {title}",
             "", f"Config: `{report['config']}`  ", f"Data: `{report['train']}`", "",
             "Energies in meV/atom, forces in meV/Å (per component); mean ± standard error "
             "over folds.", "", "## Folds", "", header.rstrip("\n")]
    for r in report["folds"]:
        lines.append(f"| {r['fold']} | {r['frames']} | " + " | ".join(
            cell(r.get(f"{q}_{s}")) for q, s in QUANTITIES) + f" | {r.get('epochs') or '–'} |")
    mean = report["mean"]
    lines.append(f"| **mean** | {sum(r['frames'] for r in report['folds'])} | " + " | ".join(
        cell(mean.get(f"{q}_{s}")) for q, s in QUANTITIES) + f" | {cell(mean.get('epochs'))} |")
    lines += ["", "## By config type", "",
              "| config type | folds | frames | E MAE | E RMSE | F MAE | F RMSE |",
              "|---|---|---|---|---|---|---|"]
    for kind, row in report["by_config_type"].items():
        lines.append(f"| {kind} | {row['folds']} | {row['frames']} | " + " | ".join(
            cell(row.get(f"{q}_{s}")) for q, s in QUANTITIES) + " |")
    return "\n".join(lines) + "\n"
