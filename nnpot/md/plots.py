"""Pictures of an MD run: energy, temperature, pressure and volume against time."""

from __future__ import annotations

import os

import numpy as np


def trace_panels(log: dict[str, np.ndarray]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The panels worth drawing for an MD log: (axis label, [(log column, legend)]).

    Energy and temperature always; pressure for periodic cells (at fixed volume it says whether
    the cell is at equilibrium); volume only where it changes (NPT): a flat line carries nothing.
    """
    panels = [("energy (eV)", [("epot_eV", "potential"), ("etot_eV", "total")]),
              ("temperature (K)", [("temperature_K", "T")])]
    if np.isfinite(log["pressure_GPa"]).any():
        panels.append(("pressure (GPa)", [("pressure_GPa", "P")]))
        volume = log["volume_A3"]
        if np.isfinite(volume).all() and np.ptp(volume) > 1e-9 * np.abs(volume).max():
            panels.append(("volume (Å³)", [("volume_A3", "V")]))
    return panels


def plot_md_traces(log: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """PNG of energy, temperature, pressure (periodic cells) and volume (when it varies, NPT)
    against time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = log["time_ps"]
    panels = trace_panels(log)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)), sharex=True)
    for ax, (label, series) in zip(np.atleast_1d(axes), panels):
        for key, name in series:
            ax.plot(t, log[key], label=name, lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("time (ps)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
