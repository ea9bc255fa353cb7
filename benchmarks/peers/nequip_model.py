"""Time nequip 0.19's NequIP GNN model through its ASE calculator (run inside the nequip venv).

Prints one JSON line: {"n_atoms": [...], "ms": [[...], ...]} (every repeat, ms per energy+forces
call). Cu only, untrained, matched to nnpot's benchmark model: 4 layers, 32 features per irrep,
l_max from $PEER_L_MAX (1 or 2), parity as the harmonics (nequip's parity=False), 8 Bessel
functions, polynomial envelope p = 6, cutoff 5 Å, float32, eager mode, neighbour list by vesin.
Same protocol as nnpot's: fcc Cu rattled 0.05 Å, positions nudged before every call.
"""

import os

import torch
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
from nequip.integrations.ase import NequIPCalculator
from nequip.model import NequIPGNNModel
from nequip.utils.global_state import set_global_state
from peer_timing import peer_parser, print_json, time_sizes

parser = peer_parser(repeats=5)
args = parser.parse_args()
torch.set_num_threads(args.threads)
set_global_state()

model = NequIPGNNModel(seed=0, model_dtype="float32", type_names=["Cu"], r_max=5.0,
                       num_layers=4, l_max=int(os.environ.get("PEER_L_MAX", "1")), parity=False,
                       num_features=32, num_bessels=8, polynomial_cutoff_p=6,
                       radial_mlp_depth=2, radial_mlp_width=64, avg_num_neighbors=40.0,
                       per_type_energy_scales=1.0, per_type_energy_shifts=0.0).eval()
calc = NequIPCalculator(model, device="cpu", transforms=[
    ChemicalSpeciesToAtomTypeMapper(["Cu"]), NeighborListTransform(r_max=5.0, backend="vesin")])
print_json(time_sizes(calc, args.repeats, args.sizes, call_of=lambda atoms: atoms.get_forces))
