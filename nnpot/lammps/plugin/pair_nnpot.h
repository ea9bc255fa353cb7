/* pair_style nnpot: nnpot potentials (any model) in LAMMPS, through an AOTInductor package
   written by `nnpot lammps export`. See pair_nnpot.cpp for how the graph is built. */

#ifndef LMP_PAIR_NNPOT_H
#define LMP_PAIR_NNPOT_H

#include "pair.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace LAMMPS_NS {

class PairNNPot : public Pair {
 public:
  explicit PairNNPot(class LAMMPS *);
  ~PairNNPot() override;

  void compute(int eflag, int vflag) override;
  void settings(int narg, char **arg) override;
  void coeff(int narg, char **arg) override;
  void init_style() override;
  double init_one(int i, int j) override;
  void finish() override;
  int pack_forward_comm(int n, int *list, double *buf, int pbc_flag, int *pbc) override;
  void unpack_forward_comm(int n, int first, double *buf) override;
  int pack_reverse_comm(int n, int first, double *buf) override;
  void unpack_reverse_comm(int n, int *list, double *buf) override;
  void *extract_peratom(const char *name, int &ncol) override;

 protected:
  void allocate();
  void load_model(const std::string &path);
  bool ghost_graph() const;
  bool halo_exchange() const;
  void build_graph();
  std::vector<at::Tensor> run(torch::inductor::AOTIModelPackageLoader &stage,
                              const std::vector<at::Tensor> &inputs, const char *what);
  void tally_atom_virials(const double *g, int64_t n_pairs);
  void force_deviation(const at::Tensor &member_gradient, const double *counts);
  void compute_whole(std::vector<at::Tensor> &inputs, at::Tensor &energies,
                     at::Tensor &gradient, at::Tensor &member_gradient);
  void compute_in_steps(std::vector<at::Tensor> &inputs, at::Tensor &energies,
                        at::Tensor &gradient);
  at::Tensor exchange_features(const at::Tensor &x);
  at::Tensor exchange_gradient(const at::Tensor &gradient);
  void communicate(bool forward);

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;
  std::string model_path;
  std::vector<std::string> species;    // element of each model species index
  std::vector<int> type_species;       // LAMMPS type → model species index, -1: unmapped
  double cutoff = 0.0;                 // Å, the model's pair cutoff
  double receptive_field = 0.0;        // Å, how far an atom's energy reaches
  bool float64 = true;                 // the package's dtype
  bool on_cuda = false;                // the package's device

  // Halo exchange (nnpot.lammps.halo): the message steps compiled one by one; between steps
  // ghost atoms' features come from their owners and feature gradients go back to them.
  int halo_steps = 0;                  // message steps in the package (0: one program only)
  int halo_width = 0;                  // doubles exchanged per atom
  int halo_edges = 0;                  // pair tensors shared by the steps (edge_features)
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> embed_stage, edges_forward,
      edges_backward, readout_stage;
  std::vector<std::unique_ptr<torch::inductor::AOTIModelPackageLoader>> forward_stages,
      backward_stages;
  std::vector<double> atom_values;     // [nall, comm_width] what is being exchanged
  int comm_width = 0;                  // doubles per atom of the exchange under way

  // A committee's spread: its package also returns each member's pair gradients.
  int n_members = 0;                   // 0: not a committee
  // pair_style nnpot deviation_every N (N > 1): the first member alone drives the dynamics and
  // the whole committee runs only every N steps, for the deviation.
  int deviation_every = 1;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> first_member;
  std::vector<double> force_std;       // [nlocal] eV/Å, per atom (fix pair ... force_std)
  double max_force_std[1] = {0.0};     // the largest, as pvector (compute pair nnpot)

  // The graph of one step: nodes are owned atoms first, then ghost atoms that stay nodes;
  // each pair joins two nodes and remembers its two LAMMPS atoms, which get its forces.
  std::vector<int> node_of;            // LAMMPS atom (owned or ghost) → node, -1: none
  std::vector<int> node_atom;          // node → a LAMMPS atom it stands for
  std::vector<int64_t> pair_nodes;     // [2, P] node indices, row-major
  std::vector<int> pair_atoms;         // [P, 2] LAMMPS atoms
  std::vector<double> pair_vec;        // [P, 3] x_j − x_i, Å

  // Timing of the current run, printed by finish() (rank 0)
  double model_seconds = 0.0, total_seconds = 0.0, exchange_seconds = 0.0;
  long n_calls = 0;
};

}    // namespace LAMMPS_NS

#endif
