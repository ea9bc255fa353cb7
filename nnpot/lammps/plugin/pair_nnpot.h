/* pair_style nnpot: nnpot potentials (any model) in LAMMPS, through an AOTInductor package
   written by `nnpot lammps export`. See pair_nnpot.cpp for how the graph is built. */

#ifndef LMP_PAIR_NNPOT_H
#define LMP_PAIR_NNPOT_H

#include "pair.h"

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

 protected:
  void allocate();
  void load_model(const std::string &path);
  bool ghost_graph() const;
  void build_graph();

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> model;
  std::string model_path;
  std::vector<std::string> species;    // element of each model species index
  std::vector<int> type_species;       // LAMMPS type → model species index, -1: unmapped
  double cutoff = 0.0;                 // Å, the model's pair cutoff
  double receptive_field = 0.0;        // Å, how far an atom's energy reaches
  bool float64 = true;                 // the package's dtype
  bool on_cuda = false;                // the package's device

  // The graph of one step: nodes are owned atoms first, then ghost atoms that stay nodes;
  // each pair joins two nodes and remembers its two LAMMPS atoms, which get its forces.
  std::vector<int> node_of;            // LAMMPS atom (owned or ghost) → node, -1: none
  std::vector<int> node_atom;          // node → a LAMMPS atom it stands for
  std::vector<int64_t> pair_nodes;     // [2, P] node indices, row-major
  std::vector<int> pair_atoms;         // [P, 2] LAMMPS atoms
  std::vector<double> pair_vec;        // [P, 3] x_j − x_i, Å

  // Timing of the current run, printed by finish() (rank 0)
  double model_seconds = 0.0, total_seconds = 0.0;
  long n_calls = 0;
};

}    // namespace LAMMPS_NS

#endif
