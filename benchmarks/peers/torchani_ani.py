"""Time TorchANI 2.9's ANI model through its ASE calculator (run inside the torchani peer venv).

Prints one JSON line: {"n_atoms": [...], "ms": [[...], ...]} (every repeat, ms per energy+forces
call). Cu only, ANI-2x-sized: 16 radial terms at 5.1 Å and 32 angular terms (8 radial shifts ×
4 angle sections) at 3.5 Å, cosine cutoff, one network 48-160-128-96-1 (CELU), float32; no
repulsion or dispersion terms; untrained (no weights are downloaded). Same protocol as nnpot's
benchmark: fcc Cu rattled 0.05 Å, positions nudged before every call, so every call rebuilds
the neighbour list (its own pure-torch cell list, the faster of its two CPU lists here).
"""

import os

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import torch  # noqa: E402
from peer_timing import peer_parser, print_json, time_sizes  # noqa: E402
from torchani.arch import simple_ani  # noqa: E402
from torchani.ase import Calculator  # noqa: E402

parser = peer_parser(repeats=10)
parser.add_argument("--neighborlist", default="cell_list", choices=["cell_list", "all_pairs"])
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

model = simple_ani(["Cu"], lot="wb97x-631gd", radial_cutoff=5.1, angular_cutoff=3.5,
                   radial_start=0.8, angular_start=0.8, cutoff_fn="cosine", repulsion=False,
                   self_energies="zero", neighborlist=args.neighborlist, activation="celu",
                   bias=True).float().eval()
# One call: TorchANI's calculator stores only what was asked for, so a get_forces() after
# get_potential_energy() would run the model twice. get_forces() alone runs energy and forces in
# one pass (what an MD step needs): the fair, faster protocol.
print_json(time_sizes(Calculator(model), args.repeats, args.sizes,
                      call_of=lambda atoms: atoms.get_forces))
