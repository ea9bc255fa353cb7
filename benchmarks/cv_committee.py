"""Cross-validate a committee from cross-validations of its members: fold k's committee is the
mean of every run's fold-k model, evaluated on fold k's validation frames, which none of its
members trained on. Writes a report like ``nnpot cv``'s (``cv_report.json``, ``cv_report.md``,
``cv_parity.png``) into OUT.

    python benchmarks/cv_committee.py runs/cv/ge_hdnnp_committee2 \\
        runs/cv/ge_hdnnp_6.25A_600ep runs/cv/ge_hdnnp_6.25A_600ep_seed1

The runs must share their folds (the same training file, k and fold seed: equal
``validation_frames`` in their ``cv_plan.json``; give runs of other seeds the same
``data.split_seed``) and their members must fit one committee (species, cutoff). Compare the
result with a single member's run by ``benchmarks/cv_compare.py`` (paired: same folds).
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


def committee_cv(out: Path, runs: list[Path]) -> Path:
    plans = [json.loads((run / PLAN).read_text()) for run in runs]
    for run, plan in zip(runs[1:], plans[1:]):
        if plan["validation_frames"] != plans[0]["validation_frames"] or \
                plan["train"] != plans[0]["train"]:
            raise SystemExit(f"cv_committee: {run} has other folds than {runs[0]} "
                             f"(give its config data.split_seed {plans[0]['seed']})")
    k = plans[0]["folds"]
    for run in runs:
        missing = [f"fold_{i}" for i in range(k) if not (run / f"fold_{i}" / "metrics.json").is_file()]
        if missing:
            raise SystemExit(f"cv_committee: {run}: {', '.join(missing)} not trained yet")
    config = load_config(plans[0]["config"])
    types, _ = frame_labels_for_folds(config.data.train, config.data.keys.group,
                                      config.data.group_key)
    graphs = labelled_graphs(config.data.train, config.model.cutoff, config.data.keys,
                             config.data.neighbor_backend)
    evaluated = []
    for i in range(k):
        committee = nnpot.Committee([nnpot.load(run / f"fold_{i}" / "best.pt") for run in runs])
        result, values = evaluate_fold(runs[0] / f"fold_{i}", config, types, graphs, committee)
        evaluated.append(({**result, "epochs": None, "time_min": None}, values))
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN).write_text(json.dumps({**plans[0], "members": [str(r) for r in runs]}))
    return write_report(out, evaluated, " + ".join(plan["config"] for plan in plans),
                        config.data.train, f"committee of {len(runs)}: {k}-fold CV")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the committee's report")
    parser.add_argument("runs", nargs="+", type=Path, help="nnpot cv output folders")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("a committee needs at least two runs")
    for run in args.runs:
        if not (run / PLAN).is_file():
            parser.error(f"{run}: no cross-validation run ({PLAN} missing)")
    print(f"cross-validation report: {committee_cv(args.out, args.runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
