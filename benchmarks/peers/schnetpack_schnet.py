"""Time SchNetPack 2.2's SchNet through its ASE interface (run inside the schnetpack peer venv).

Prints one JSON line: {"n_atoms": [...], "ms": [[...], ...]} (every repeat, ms per energy+forces
call). Same protocol as nnpot's benchmark: fcc Cu, rattled 0.05 Å, cutoff 5 Å, float32, the
positions nudged before every call so that each call rebuilds the neighbour list.
"""


import schnetpack as spk
import torch
from peer_timing import peer_parser, print_json, time_sizes
from schnetpack.interfaces import SpkCalculator

parser = peer_parser(repeats=10)
parser.add_argument("--neighbor-list", default="vesin", choices=["vesin", "matscipy", "ase"])
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

cutoff = 5.0
model = spk.model.NeuralNetworkPotential(
    representation=spk.representation.SchNet(
        n_atom_basis=128, n_interactions=3,
        radial_basis=spk.nn.GaussianRBF(n_rbf=50, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff)),
    input_modules=[spk.atomistic.PairwiseDistances()],
    output_modules=[spk.atomistic.Atomwise(n_in=128, output_key="energy"),
                    spk.atomistic.Forces(energy_key="energy", force_key="forces")],
)
model.eval()
neighbor_list = {"vesin": spk.transform.VesinNeighborList,
                 "matscipy": spk.transform.MatScipyNeighborList,
                 "ase": spk.transform.ASENeighborList}[args.neighbor_list](cutoff=cutoff)
calc = SpkCalculator(model, neighbor_list=neighbor_list, energy_key="energy", force_key="forces",
                     energy_unit="eV", position_unit="Ang", dtype=torch.float32)

print_json(time_sizes(calc, args.repeats, args.sizes))
