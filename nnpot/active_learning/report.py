"""The learning curve of active-learning loops (labels used against errors)."""

from __future__ import annotations

from pathlib import Path


def plot_learning_curve(histories: list[dict] | dict[str, list[dict]], path: Path,
                        label: str = "") -> None:
    """Test (else validation) force MAE against labels used, and the candidate fraction; one
    line per loop when given {name: history}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(histories, list):
        histories = {label or "active learning": histories}
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        key = "test_forces_mae" if any("test_forces_mae" in r for r in history) \
            else "validation_forces_mae"
        rows = [r for r in history if key in r]
        left.plot([r["labels"] for r in rows], [r[key] for r in rows], "o-", label=name)
        left.set_ylabel(f"{key.split('_')[0]} force MAE (meV/Å)")
        rows = [r for r in history if "candidate_fraction" in r]
        right.plot([r["iteration"] for r in rows], [r["candidate_fraction"] for r in rows], "o-",
                   label=name)
    left.set_xlabel("labelled frames")
    left.set_yscale("log")
    right.set_xlabel("iteration")
    right.set_ylabel("candidate fraction of explored frames")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
