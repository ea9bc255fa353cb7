"""Cross-validate a committee from cross-validations of its members: fold k's committee is the
mean of every run's fold-k model, evaluated on fold k's validation frames, which none of its
members trained on. Writes a report like ``nnpot cv``'s (``cv_report.json``, ``cv_report.md``,
``cv_parity.png``) into OUT.

    python benchmarks/cv_committee.py runs/cv/ge_hdnnp_committee2 \\
        runs/cv/ge_hdnnp_6.25A_600ep runs/cv/ge_hdnnp_6.25A_600ep_seed1

The runs must share their folds (the same training file, k and fold seed: equal
``validation_frames`` in their ``cv_plan.json``; give runs of other seeds the same
``data.split_seed``) and their members must fit one committee (species; cutoffs may differ: a
MACE beside HDNNPs). Compare the
result with a single member's run by ``benchmarks/cv_compare.py`` (paired: same folds).
While the runs still train, ``--folds 0 1`` prints the committee's and the members' errors on
the folds every run has finished (a screen can stop early on them); it writes no report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nnpot
from nnpot.train import load_config
from nnpot.train.cv import PLAN, evaluate_fold, frame_labels_for_folds, write_report
from nnpot.train.evaluate import labelled_graphs


def _checked_runs(runs: list[Path], folds: list[int] | None = None) -> tuple[list[dict], list[int]]:
    """The runs' plans and the folds to evaluate (default: all), refusing runs with other
    folds than the first and folds some run has not finished."""
    plans = [json.loads((run / PLAN).read_text()) for run in runs]
    for run, plan in zip(runs[1:], plans[1:]):
        if plan["validation_frames"] != plans[0]["validation_frames"] or \
                plan["train"] != plans[0]["train"]:
            raise SystemExit(f"cv_committee: {run} has other folds than {runs[0]} "
                             f"(give its config data.split_seed {plans[0]['seed']})")
    k = plans[0]["folds"]
    folds = list(range(k)) if folds is None else folds
    if bad := [i for i in folds if not 0 <= i < k]:
        raise SystemExit(f"cv_committee: no fold {bad[0]} in a {k}-fold run")
    for run in runs:
        missing = [f"fold_{i}" for i in folds if not (run / f"fold_{i}" / "metrics.json").is_file()]
        if missing:
            raise SystemExit(f"cv_committee: {run}: {', '.join(missing)} not trained yet")
    return plans, folds


def _evaluate(runs: list[Path], plans: list[dict], folds: list[int]):
    """Each fold's committee (the mean of the runs' fold models) on the fold's own frames:
    ``evaluate_fold``'s (result, values) per fold, and the config."""
    configs = [load_config(plan["config"]) for plan in plans]
    config = configs[0]
    types, _ = frame_labels_for_folds(config.data.train, config.data.keys.group,
                                      config.data.group_key)
    # Members may differ in cutoff: the pairs out to the longest, each member takes its own.
    cutoff = max(c.model.cutoff for c in configs)
    graphs = labelled_graphs(config.data.train, cutoff, config.data.keys,
                             config.data.neighbor_backend)
    evaluated = []
    for i in folds:
        committee = nnpot.Committee([nnpot.load(run / f"fold_{i}" / "best.pt") for run in runs])
        evaluated.append(evaluate_fold(runs[0] / f"fold_{i}", config, types, graphs, committee))
    return evaluated, config


def committee_cv(out: Path, runs: list[Path]) -> Path:
    """The committee's cross-validation report (every fold) in ``out``."""
    plans, folds = _checked_runs(runs)
    evaluated, config = _evaluate(runs, plans, folds)
    evaluated = [({**result, "epochs": None, "time_min": None}, values)
                 for result, values in evaluated]
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN).write_text(json.dumps({**plans[0], "members": [str(r) for r in runs]}))
    return write_report(out, evaluated, " + ".join(plan["config"] for plan in plans),
                        config.data.train, f"committee of {len(runs)}: {len(folds)}-fold CV",
                        folds, len(folds))


def committee_folds(runs: list[Path], folds: list[int]) -> list[dict]:
    """Early look while the runs train: on each fold of ``folds`` that every run has finished,
    the committee's and each member's E MAE (meV/atom) and F MAE (meV/Å), the members' from
    their ``metrics.json``. Rows: {"fold", "committee": (E, F), "members": [(E, F), ...]}."""
    plans, folds = _checked_runs(runs, folds)
    evaluated, _ = _evaluate(runs, plans, folds)
    rows = []
    for i, (result, _) in zip(folds, evaluated):
        members = []
        for run in runs:
            metrics = json.loads((run / f"fold_{i}" / "metrics.json").read_text())
            errors = metrics["validation"]["metrics"]
            members.append((errors["energy"]["mae"], errors["forces"]["mae"]))
        rows.append({"fold": i, "committee": (result["energy_mae"], result["forces_mae"]),
                     "members": members})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the committee's report")
    parser.add_argument("runs", nargs="+", type=Path, help="nnpot cv output folders")
    parser.add_argument("--folds", type=int, nargs="+",
                        help="only these folds (finished in every run): print the committee's "
                             "and the members' errors on each, write no report")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("a committee needs at least two runs")
    for run in args.runs:
        if not (run / PLAN).is_file():
            parser.error(f"{run}: no cross-validation run ({PLAN} missing)")
    if args.folds is not None:
        names = [run.name for run in args.runs]
        print("E MAE (meV/atom) / F MAE (meV/Å) on each fold's own frames\n")
        print("| fold | committee | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 2) + "|")
        for row in committee_folds(args.runs, args.folds):
            cells = [f"{e:.3f} / {f:.2f}" for e, f in [row["committee"], *row["members"]]]
            print(f"| {row['fold']} | " + " | ".join(cells) + " |")
        return 0
    print(f"cross-validation report: {committee_cv(args.out, args.runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
