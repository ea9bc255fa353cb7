"""A cross-validation spread over sessions or machines: the report of some finished folds of
a ``nnpot cv`` run, and the whole report merged from such partial ones.

    python benchmarks/cv_partial.py report runs/cv/si_mace32_stress100_240ep OUT --folds 0 1
    python benchmarks/cv_partial.py merge OUT part_a/cv_report.json part_b/cv_report.json

``report`` evaluates the named folds (each must have finished: ``metrics.json`` in its
folder) on their own validation frames, as ``nnpot cv`` does at its end, and writes
``cv_report.json``, ``cv_report.md`` and ``cv_parity.png`` into OUT; the JSON says which
folds of how many it holds (``"partial": {"folds": [...], "of": k}``). Folds trained on
another machine or in another session can be reported there and kept (e.g. in
``benchmarks/results/cv/``), since a fold's error depends on its config and its frames only.

``merge`` joins partial reports of one config (same config file name, training file and k; no
fold twice) into one report, written to OUT (``cv_report.json`` and ``cv_report.md``; no
parity plot: the reports keep errors, not predictions). With every fold it is the report
``nnpot cv`` would have written (the same means and standard errors); with fewer it stays
partial. Each fold's frame count is checked against the folds its config deals, where the
config and its training file are here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cv_compare import dealt_folds

from nnpot.core.files import atomic_write_text
from nnpot.train import load_config
from nnpot.train.cv import (
    PLAN,
    evaluate_fold,
    fold_names,
    frame_labels_for_folds,
    mean_stderr_text,
    plot_out_of_fold_parity,
    report_json,
    report_markdown,
    report_of,
)
from nnpot.train.evaluate import labelled_graphs


def _fold_index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def _folds_of(report: dict) -> int:
    """k of the CV a report belongs to (a whole report holds all k folds)."""
    return (report.get("partial") or {}).get("of", len(report["folds"]))


def _title(report: dict) -> str:
    """The report's title: which folds of how many it holds."""
    return report_markdown(report).splitlines()[0]


def _write(out: Path, report: dict) -> None:
    """``cv_report.json`` and ``cv_report.md`` (titled with the folds it holds) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cv_report.json", report_json(report))
    atomic_write_text(out / "cv_report.md", report_markdown(report))


def report_folds(run: Path, out: Path, folds: list[int]) -> dict:
    """Evaluate the finished ``folds`` of the ``nnpot cv`` run in ``run``; write the partial
    report into ``out`` and return it."""
    if not (run / PLAN).is_file():
        raise SystemExit(f"cv_partial: {run} is not a nnpot cv run (no {PLAN})")
    plan = json.loads((run / PLAN).read_text())
    k = plan["folds"]
    if bad := [i for i in folds if not 0 <= i < k]:
        raise SystemExit(f"cv_partial: no fold {bad[0]} in the {k}-fold run {run}")
    if missing := [f"fold_{i}" for i in folds
                   if not (run / f"fold_{i}" / "metrics.json").is_file()]:
        raise SystemExit(f"cv_partial: {run}: {', '.join(missing)} not finished")
    config = load_config(plan["config"])
    types, _ = frame_labels_for_folds(config.data.train, config.data.keys.group,
                                      config.data.group_key)
    graphs = labelled_graphs(config.data.train, config.model.cutoff, config.data.keys,
                             config.data.neighbor_backend)
    folds = sorted(folds)
    evaluated = [evaluate_fold(run / f"fold_{i}", config, types, graphs) for i in folds]
    report = report_of([result for result, _ in evaluated], plan["config"], config.data.train,
                       folds, k)
    _write(out, report)
    plot_out_of_fold_parity([values for _, values in evaluated], out / "cv_parity.png",
                            f"{Path(plan['config']).name}: {fold_names(folds, k)}, every "
                            f"frame predicted by the fold that did not train on it")
    return report


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"cv_partial: no report {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"cv_partial: {path} is not a cv_report.json ({error})") from None
    if not isinstance(report, dict) or not {"folds", "config", "train"} <= report.keys():
        raise SystemExit(f"cv_partial: {path} is not a cv_report.json (no folds, config, train)")
    return report


def merge_reports(paths: list[Path], out: Path) -> dict:
    """Join partial reports of one config into ``out``; returns the merged report."""
    reports = [_read_report(Path(path)) for path in paths]
    first = reports[0]
    k = _folds_of(first)
    folds: dict[int, dict] = {}
    for path, report in zip(paths, reports):
        same = (Path(report["config"]).name == Path(first["config"]).name
                and Path(report["train"]).name == Path(first["train"]).name)
        if not same:
            raise SystemExit(f"cv_partial: {path} is a report of {report['config']} on "
                             f"{report['train']}, not of {first['config']} on {first['train']}")
        if _folds_of(report) != k:
            raise SystemExit(f"cv_partial: {path} is of a {_folds_of(report)}-fold CV, "
                             f"{paths[0]} of {k}")
        for fold in report["folds"]:
            index = _fold_index(fold["fold"])
            if index in folds:
                raise SystemExit(f"cv_partial: {fold['fold']} is in more than one report "
                                 f"({path} and an earlier one)")
            folds[index] = fold
    dealt = dealt_folds(first["config"], k)  # None: the config or its data is not here
    if dealt is not None:
        for index, fold in folds.items():
            if fold["frames"] != len(dealt[index]):
                raise SystemExit(f"cv_partial: fold_{index} has {fold['frames']} frames; "
                                 f"{Path(first['config']).name} deals it {len(dealt[index])}")
    merged = report_of([folds[i] for i in sorted(folds)], first["config"], first["train"],
                       sorted(folds), k)
    _write(out, merged)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="report finished folds of a nnpot cv run")
    report.add_argument("run", type=Path, help="the nnpot cv output folder")
    report.add_argument("out", type=Path, help="folder for the partial report")
    report.add_argument("--folds", type=int, nargs="+", required=True)
    merge = commands.add_parser("merge", help="join partial reports of one config")
    merge.add_argument("out", type=Path, help="folder for the merged report")
    merge.add_argument("reports", type=Path, nargs="+", help="partial cv_report.json files")
    args = parser.parse_args(argv)
    if args.command == "report":
        result = report_folds(args.run, args.out, args.folds)
    else:
        result = merge_reports(args.reports, args.out)
    print(_title(result)[2:])
    mean = result["mean"]
    energy, forces = mean["energy_mae"], mean["forces_mae"]
    print(f"E MAE {mean_stderr_text(energy['mean'], energy['stderr'])} meV/atom, "
          f"F MAE {mean_stderr_text(forces['mean'], forces['stderr'], 1)} meV/Å "
          f"({args.out / 'cv_report.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
