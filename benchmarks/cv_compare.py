"""Compare cross-validated recipes for one mlearn element: each report's E and F MAE (mean ±
standard error over folds), its score against MTP's published test errors, and, over the folds
a report shares with the first (two or more), the per-fold (paired) differences against it.

    python benchmarks/cv_compare.py Ge runs/cv/ge_mace32_6.25A_60ep runs/cv/ge_hdnnp_6.25A_600ep

Each argument after the element is a ``nnpot cv`` output folder (``cv_report.json`` and
``cv_plan.json``) or a report file; one kept without its run folder (``benchmarks/results/cv/``)
is paired through the folds its config deals again. The score of a fold is
max(E / E_MTP, F / F_MTP): how far it is from MTP's test errors in the worse of the two (below
1: below MTP in both). Folds are paired when both runs dealt the same frames into the same
folds (same training file, k, seed and group key); paired differences cancel what the folds
share (which frames are hard), so they separate two recipes better than the two means'
standard errors suggest. ``--json`` writes the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "potentials"))
from build_mlearn import PUBLISHED  # noqa: E402  (GAP's and MTP's published test errors)

from nnpot.train import load_config  # noqa: E402
from nnpot.train.cv import fold_plan, mean_stderr_text  # noqa: E402
from nnpot.train.cv import mean_and_stderr as mean_se  # noqa: E402


def rebuilt_folds(report: dict) -> list | None:
    """The validation frames of each fold of a report kept without its run folder (e.g.
    ``benchmarks/results/cv/``): dealt again from the config the report names (a committee's
    "A + B": its first run's), which must deal folds of the sizes the report holds (a partial
    report: its named folds of the k it says). None when the config or its training file is not
    here."""
    first_config = str(report.get("config", "")).split(" + ")[0]
    k = report.get("partial", {}).get("of", len(report["folds"]))
    frames = dealt_folds(first_config, k) if first_config else None
    if frames is not None:
        frames = reported_folds(report, frames)
    if frames is None or [len(f) for f in frames] != [
            fold.get("frames", len(f)) for f, fold in zip(frames, report["folds"])]:
        return None
    return frames


def reported_folds(report: dict, frames: list) -> list:
    """Of the validation frames of all k folds, those of the folds the report holds: a
    partial report (``nnpot cv --only``) holds some of them, named in its "partial"."""
    partial = report.get("partial")
    return [frames[k] for k in partial["folds"]] if partial else frames


def dealt_folds(config_name: str, k: int) -> list | None:
    """The validation frames of each of the k folds that the config deals, or None when it or
    its training file is not here (a report written in another checkout: this checkout's
    ``benchmarks/cv/`` config of the same name)."""
    config_path = Path(config_name)
    if not config_path.is_file():
        config_path = Path(__file__).resolve().parent / "cv" / config_path.name
    if not config_path.is_file():
        return None
    config = load_config(config_path)
    if not Path(config.data.train).is_file():
        return None
    return fold_plan(config, config_path, k)["validation_frames"]


def load(path: Path) -> tuple[str, dict, list | None]:
    """(name, report, validation frames of each fold or None) of a cv folder or report: the
    run's ``cv_plan.json``, or else the folds dealt again from the report's config."""
    report_file = path / "cv_report.json" if path.is_dir() else path
    report = json.loads(report_file.read_text())
    plan_file = report_file.parent / "cv_plan.json"
    if plan_file.is_file():
        frames = reported_folds(report, json.loads(plan_file.read_text())["validation_frames"])
    else:
        frames = rebuilt_folds(report)
    name = report_file.parent.name if report_file.name == "cv_report.json" else report_file.stem
    return name, report, frames


def fold_scores(report: dict, mtp: tuple[float, float]) -> np.ndarray:
    return np.array([max(f["energy_mae"] / mtp[0], f["forces_mae"] / mtp[1])
                     for f in report["folds"]])


def shared_folds(frames: list | None, first_frames: list | None) -> list[tuple[int, int]]:
    """(index in a report, index in the first report) of the folds both hold with the same
    validation frames: all of them for two runs of one plan, the named ones for a partial
    report (``nnpot cv --only``) beside a full one, none for runs that dealt other folds."""
    if frames is None or first_frames is None:
        return []
    first_index = {tuple(fold): i for i, fold in enumerate(first_frames)}
    return [(i, first_index[tuple(fold)]) for i, fold in enumerate(frames)
            if tuple(fold) in first_index]


def compare(element: str, paths: list[Path]) -> list[dict]:
    """One row per report: E, F and score as (mean, se), and the paired differences to the
    first report over the folds both hold ("paired": None when they share fewer than two: a
    standard error needs two)."""
    mtp = PUBLISHED[element]["MTP"]
    runs = [load(p) for p in paths]
    first_name, first, first_frames = runs[0]
    first_scores = fold_scores(first, mtp)
    rows = []
    for name, report, frames in runs:
        scores = fold_scores(report, mtp)
        row = {"name": name, "folds": len(report["folds"]),
               "energy_mae": mean_se([f["energy_mae"] for f in report["folds"]]),
               "forces_mae": mean_se([f["forces_mae"] for f in report["folds"]]),
               "score": mean_se(scores), "paired": None}
        pairs = shared_folds(frames, first_frames) if name != first_name else []
        if len(pairs) >= 2:
            delta = {key: mean_se([report["folds"][i][key] - first["folds"][j][key]
                                   for i, j in pairs]) for key in ("energy_mae", "forces_mae")}
            row["paired"] = {
                "against": first_name, "folds": len(pairs), **delta,
                "score": mean_se([scores[i] - first_scores[j] for i, j in pairs])}
        rows.append(row)
    return rows


def markdown(element: str, rows: list[dict]) -> str:
    mtp = PUBLISHED[element]["MTP"]

    def cell(pair, digits=2):
        return mean_stderr_text(*pair, digits)
    lines = [f"{element}: CV MAE mean ± standard error over folds (meV/atom, meV/Å); score = "
             f"max(E / {mtp[0]}, F / {mtp[1]}) (MTP's test errors)", "",
             "| run | folds | E MAE | F MAE | score | paired Δ E | paired Δ F | paired Δ score |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        paired = row["paired"]
        deltas = ([cell(paired["energy_mae"]), cell(paired["forces_mae"], 1),
                   cell(paired["score"])] if paired else ["", "", ""])
        if paired and paired["folds"] != rows[0]["folds"]:  # a partial report beside a full one
            deltas = [f"{d} ({paired['folds']} folds)" for d in deltas]
        lines.append(f"| {row['name']} | {row['folds']} | {cell(row['energy_mae'])} | "
                     f"{cell(row['forces_mae'], 1)} | {cell(row['score'])} | "
                     + " | ".join(deltas) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("element", choices=sorted(PUBLISHED))
    parser.add_argument("runs", nargs="+", type=Path, help="nnpot cv folders or cv_report.json")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    for path in args.runs:
        report = path / "cv_report.json" if path.is_dir() else path
        if not report.is_file():
            parser.error(f"{report}: no cross-validation report (has `nnpot cv` finished?)")
    rows = compare(args.element, args.runs)
    print(markdown(args.element, rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
