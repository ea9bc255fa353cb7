"""Time MACE 0.3.16 through its ASE calculator (run inside the mace venv).

Prints one JSON line: {"n_atoms": [...], "ms": [[...], ...]} (every repeat, ms per energy+forces
call). Cu only, untrained, matched to nnpot's benchmark model: $PEER_L_MAX (1 or 2) is the
highest l of both the hidden features (32 channels of every l: 32x0e + 32x1o, + 32x2e for 2) and
the harmonics (max_ell), 2 interactions, correlation 3, 8 Bessel functions, polynomial envelope
p = 6, radial MLP 64-64, cutoff 5 Å, float32. Same protocol as nnpot's: fcc Cu rattled 0.05 Å,
positions nudged before every call.

With PEER_MACE_DEFAULTS=1 it is instead the model ``mace_run_train`` builds by default (the
size bench_mace.py compares): 64 channels, hidden irreps 64x0e + 64x1o, max_ell 3, correlation
3, 2 interactions (the first RealAgnosticInteractionBlock, then the residual one), 8 Bessel
functions, envelope p = 5, radial MLP 64-64-64.
"""

import os

# MACE 0.3.16 pins e3nn 0.4.4, which torch.load()s its own constants without weights_only=False;
# torch ≥ 2.6 refuses that by default. The file is e3nn's, installed from PyPI: allow it.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from e3nn import o3  # noqa: E402
from mace.calculators import MACECalculator  # noqa: E402
from mace.modules import MACE, RealAgnosticInteractionBlock, RealAgnosticResidualInteractionBlock  # noqa: E402
from peer_timing import peer_parser, print_json, time_sizes  # noqa: E402

parser = peer_parser(repeats=5)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.set_default_dtype(torch.float32)
torch.manual_seed(0)

l_max = int(os.environ.get("PEER_L_MAX", "1"))
if os.environ.get("PEER_MACE_DEFAULTS") == "1":
    size = dict(hidden_irreps=o3.Irreps("64x0e + 64x1o"), max_ell=3, num_polynomial_cutoff=5,
                radial_MLP=[64, 64, 64], interaction_cls_first=RealAgnosticInteractionBlock)
else:
    size = dict(hidden_irreps=o3.Irreps("+".join(f"32x{l}{'e' if l % 2 == 0 else 'o'}"
                                                 for l in range(l_max + 1))),
                max_ell=l_max, num_polynomial_cutoff=6, radial_MLP=[64, 64],
                interaction_cls_first=RealAgnosticResidualInteractionBlock)
model = MACE(r_max=5.0, num_bessel=8, interaction_cls=RealAgnosticResidualInteractionBlock,
             num_interactions=2, num_elements=1, MLP_irreps=o3.Irreps("16x0e"),
             atomic_energies=np.zeros(1), avg_num_neighbors=40.0, atomic_numbers=[29],
             correlation=3, gate=torch.nn.functional.silu, **size).float().eval()
calc = MACECalculator(models=model, device="cpu", default_dtype="float32")
print_json(time_sizes(calc, args.repeats, args.sizes, call_of=lambda atoms: atoms.get_forces))
