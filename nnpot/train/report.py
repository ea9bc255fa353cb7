"""What a user sees of a training run: the epoch table, CSV log, plots and the model card."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from ..core.files import atomic_write_text  # noqa: E402

COLUMNS = ["epoch", "time_s", "lr", "energy_weight", "train_loss", "val_loss",
           "train_energy_mae", "train_forces_mae", "train_stress_mae",
           "val_energy_mae", "val_energy_rmse", "val_forces_mae", "val_forces_rmse",
           "val_stress_mae", "val_stress_rmse"]


def history_row(epoch: int, elapsed: float, lr: float, train_loss: float, val_loss: float,
                train: dict, val: dict, energy_weight: float = float("nan")) -> dict:
    """One epoch of the log; metrics in meV/atom, meV/Å, meV/Å³ (NaN when absent)."""
    def get(metrics, name, stat):
        return metrics.get(name, {}).get(stat, float("nan"))

    row = {"epoch": epoch, "time_s": elapsed, "lr": lr, "energy_weight": energy_weight,
           "train_loss": train_loss, "val_loss": val_loss}
    for name in ("energy", "forces", "stress"):
        row[f"train_{name}_mae"] = get(train, name, "mae")
        row[f"val_{name}_mae"] = get(val, name, "mae")
        row[f"val_{name}_rmse"] = get(val, name, "rmse")
    return row


def table_header() -> str:
    return (f"{'epoch':>5} {'lr':>8} {'loss':>9} {'val loss':>9} | {'E MAE':>6} {'F MAE':>6} | "
            f"{'val E MAE':>9} {'RMSE':>6} {'val F MAE':>9} {'RMSE':>6} {'val σ MAE':>9} | "
            f"{'time':>6}\n{'':>34}| meV/atom, meV/Å (train) | meV/atom, meV/Å, meV/Å³ (validation)")


def table_row(row: dict) -> str:
    def num(key: str, width: int, digits: int) -> str:
        value = row[key]
        return f"{'–':>{width}}" if value != value else f"{value:{width}.{digits}f}"  # NaN: absent

    return (f"{row['epoch']:5d} {row['lr']:8.2e} {row['train_loss']:9.3e} {row['val_loss']:9.3e} | "
            f"{num('train_energy_mae', 6, 1)} {num('train_forces_mae', 6, 1)} | "
            f"{num('val_energy_mae', 9, 2)} {num('val_energy_rmse', 6, 2)} "
            f"{num('val_forces_mae', 9, 1)} {num('val_forces_rmse', 6, 1)} "
            f"{num('val_stress_mae', 9, 2)} | {row['time_s']:5.0f}s")


def write_csv(history: Sequence[dict], path: Path) -> None:
    """The epoch log, written atomically (a kill never leaves half a log)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


def plot_learning_curves(history: Sequence[dict], path: Path) -> None:
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].semilogy(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].semilogy(epochs, [r["val_loss"] for r in history], label="validation")
    axes[0].set_ylabel("loss")
    for ax, name, unit in ((axes[1], "energy", "meV/atom"), (axes[2], "forces", "meV/Å")):
        ax.semilogy(epochs, [r[f"train_{name}_mae"] for r in history], label="train")
        ax.semilogy(epochs, [r[f"val_{name}_mae"] for r in history], label="validation")
        ax.set_ylabel(f"{name} MAE ({unit})")
    # The loss changes meaning where the energy weight changes (the final stage): mark it.
    weights = [r.get("energy_weight", float("nan")) for r in history]  # NaN: not logged
    stage_starts = [epoch for epoch, weight, before in zip(epochs[1:], weights[1:], weights)
                    if not (math.isnan(weight) or math.isnan(before)) and weight != before]
    for ax in axes:
        for epoch in stage_starts:
            ax.axvline(epoch - 0.5, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    lr_ax = axes[0].twinx()
    lr_ax.semilogy(epochs, [r["lr"] for r in history], color="grey", ls=":", lw=1)
    lr_ax.set_ylabel("learning rate (dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_parity(values: dict, metrics: dict, path: Path, title: str,
                groups: dict[str, dict] | None = None) -> None:
    """Predicted against reference energy per atom, force components and (where labelled)
    stress; ``values`` as ``evaluate(..., keep_values=True)`` returns them (eV, Å), ``metrics``
    the errors in the panel titles. ``groups`` (name → values of that part, e.g. per config
    type; together ``values``) draws each part in its own colour with a legend."""
    panels = [("energy", "energy (eV/atom)", 1.0), ("forces", "force component (eV/Å)", 1.0)]
    if values.get("stress_ref") is not None and len(values["stress_ref"]):
        panels.append(("stress", "stress (GPa)", 160.21766208))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.1))
    for ax, (name, label, factor) in zip(np.atleast_1d(axes), panels):
        ref, pred = values[f"{name}_ref"] * factor, values[f"{name}_pred"] * factor
        if len(ref) == 0:
            ax.set_visible(False)
            continue
        lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
        for part, part_values in (groups or {None: values}).items():
            if len(part_values.get(f"{name}_ref", ())):
                ax.scatter(part_values[f"{name}_ref"] * factor,
                           part_values[f"{name}_pred"] * factor, s=4, alpha=0.5,
                           rasterized=True, label=part)
        if groups:
            ax.legend(fontsize=7, markerscale=2)
        m = metrics.get(name, {})
        ax.set_title(f"{name}: MAE {m.get('mae', float('nan')):.2f}, RMSE "
                     f"{m.get('rmse', float('nan')):.2f} {m.get('unit', '')}", fontsize=9)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metrics_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per data set, MAE / RMSE per property."""
    lines = ["| data | frames | energy MAE / RMSE (meV/atom) | forces MAE / RMSE (meV/Å) | "
             "stress MAE / RMSE (meV/Å³) |", "|---|---|---|---|---|"]
    for name, entry in results.items():
        cells = []
        for prop in ("energy", "forces", "stress"):
            m = entry["metrics"].get(prop)
            cells.append(f"{m['mae']:.2f} / {m['rmse']:.2f}" if m else "–")
        lines.append(f"| {name} | {entry['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_model_card(path: Path, *, config: dict, data: dict, statistics: dict, results: dict,
                     training: dict) -> None:
    """A markdown summary of what the model is, what it was fitted to and how good it is."""
    e0 = ", ".join(f"{k}: {v:.6f}" for k, v in statistics["e0"].items())
    members = config["model"].get("committee", 1)
    resampled = ("; each fitted to a bootstrap resample of the training frames"
                 if config["model"].get("bootstrap") else "")
    mean = "errors of their mean; the calculator also gives their spread"
    joined = config["model"].get("committee_with") or []
    snapshot = config["model"].get("snapshot_committee")
    if joined or snapshot:  # members from other files join this run's
        sources = ([f"the members of {len(joined)} separately trained model file(s) "
                    f"(model.committee_with)"] if joined else [])
        sources += ["the model this run started from (model.init_from)"] if snapshot else []
        ensemble = "a snapshot ensemble; " if snapshot else ""
        kind = (f"committee of {statistics['members']} {config['model']['type']} potentials: "
                f"{', '.join(sources)} and this run's ({ensemble}{mean})")
    elif members > 1:
        kind = (f"committee of {members} {config['model']['type']} potentials (seeds "
                f"{config['seed']}…{config['seed'] + members - 1}{resampled}; {mean})")
    else:
        kind = f"{config['model']['type']} potential"
    lines = [
        f"# Model card: {kind}",
        "",
        f"- species: {', '.join(statistics['species'])}; cutoff {config['model']['cutoff']} Å; "
        f"dtype {config['model']['dtype']}; {statistics['n_parameters']:,} parameters",
        f"- E0 (eV): {e0}; scale {statistics['scale']:.6f} eV; shift {statistics['shift']:.6f} eV",
        f"- trained {training['epochs']} epochs in {training['time_min']:.1f} min "
        f"({training['stop_reason']}); kept the {config['training'].get('keep_epoch', 'best')} "
        f"epoch, {training['best_epoch']} (EMA weights)",
        "",
        "## Data",
        "",
        "| role | file | SHA-256 | frames | atoms |",
        "|---|---|---|---|---|",
    ]
    for role, entry in data.items():
        lines.append(f"| {role} | `{entry['file']}` | `{entry['sha256'][:16]}…` | "
                     f"{entry['frames']} | {entry['atoms']} |")
    lines += ["", "## Errors of the saved model", "", metrics_table(results), ""]
    if set(results) == {"train"}:
        lines += ["No validation frames (`data.validation_fraction: 0`): these are the errors "
                  "on the frames the model was fitted to, not on new ones; `nnpot cv` measures "
                  "those.", ""]
    lines += ["Plots: " + ", ".join(f"`{name}`" for name in
                                    ["learning_curves.png"] + [f"parity_{set_}.png"
                                                               for set_ in results]) + ".", "",
              "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    atomic_write_text(path, "\n".join(lines))
