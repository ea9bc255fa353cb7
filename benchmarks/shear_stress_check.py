"""Find, and undo, an exchange of the yz and xz stress components in a training file.

A potential's stress is the strain derivative of its energy, so it cannot put a shear where the
cell's deformation has none; trained on labels with yz and xz exchanged it still predicts them
in their places. ``check`` compares each frame's stored shear stress with a potential's, as
stored and with yz and xz exchanged, and counts per config type the frames that only one of the
two fits (frames whose predicted yz and xz are both small or nearly equal cannot tell and are
left out):

    python benchmarks/shear_stress_check.py check ../shared/data/mlearn_Mo_train.extxyz \
        potentials/mlearn-mo-mace/model.pt

``swap`` writes a copy of the file with yz and xz exchanged in every frame (or only in the
frames of the config types given), everything else as it was:

    python benchmarks/shear_stress_check.py swap ../shared/data/mlearn_Mo_train.extxyz \
        runs/data/mlearn_Mo_train_shear_swapped.extxyz
"""

from __future__ import annotations

import argparse
import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from ase.io import read, write
from ase.units import GPa

from nnpot import NNPCalculator
from nnpot.core.files import atomic_write_text

YZ, XZ = 3, 4  # Voigt indices (xx yy zz yz xz xy)
DECIDABLE_GPA = 0.3  # smaller predicted shears, or a smaller yz−xz difference, cannot tell


def check(data: Path, model: Path, device: str = "cpu") -> dict[str, Counter]:
    """Per config type: frames that fit as stored ('stored'), with yz and xz exchanged
    ('exchanged'), neither clearly ('unclear'); a fit is an absolute error in (yz, xz) less
    than half the other's."""
    calc = NNPCalculator(str(model), device=device)
    counts: dict[str, Counter] = defaultdict(Counter)
    for atoms in read(data, ":"):
        if atoms.calc is None or "stress" not in atoms.calc.results:
            continue
        reference = atoms.get_stress() / GPa
        atoms.calc = calc
        predicted = atoms.get_stress() / GPa
        shear = predicted[[YZ, XZ]]
        if np.abs(shear).sum() < DECIDABLE_GPA or abs(shear[0] - shear[1]) < DECIDABLE_GPA:
            continue
        as_stored = np.abs(reference[[YZ, XZ]] - shear).sum()
        exchanged = np.abs(reference[[XZ, YZ]] - shear).sum()
        verdict = ("exchanged" if exchanged < 0.5 * as_stored
                   else "stored" if as_stored < 0.5 * exchanged else "unclear")
        counts[str(atoms.info.get("config_type", "-"))][verdict] += 1
    return counts


def swap(data: Path, out: Path, config_types: list[str] | None = None) -> int:
    """Write ``data`` to ``out`` with the yz and xz stress exchanged (in the frames of
    ``config_types``, default all); returns the number of frames changed."""
    frames = read(data, ":")
    changed = 0
    for atoms in frames:
        if atoms.calc is None or "stress" not in atoms.calc.results:
            continue
        if config_types and atoms.info.get("config_type") not in config_types:
            continue
        stress = np.array(atoms.calc.results["stress"], dtype=float)
        stress[[YZ, XZ]] = stress[[XZ, YZ]]
        atoms.calc.results["stress"] = stress
        changed += 1
    text = io.StringIO()
    write(text, frames, format="extxyz")
    atomic_write_text(out, text.getvalue())
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="count the frames each assignment fits")
    p_check.add_argument("data", type=Path)
    p_check.add_argument("model", type=Path)
    p_check.add_argument("--device", default="cpu")
    p_swap = sub.add_parser("swap", help="write a copy with yz and xz exchanged")
    p_swap.add_argument("data", type=Path)
    p_swap.add_argument("out", type=Path)
    p_swap.add_argument("--config-types", nargs="+", help="only these config types")
    args = parser.parse_args()
    if args.command == "check":
        print(f"{args.data.name} against {args.model}: frames whose shear stress (yz, xz) "
              "the potential fits as stored / exchanged / neither clearly")
        for config_type, counts in sorted(check(args.data, args.model, args.device).items()):
            print(f"  {config_type}: {counts['stored']} / {counts['exchanged']} / "
                  f"{counts['unclear']}")
    else:
        changed = swap(args.data, args.out, args.config_types)
        print(f"wrote {args.out}: yz and xz exchanged in {changed} frames")


if __name__ == "__main__":
    main()
