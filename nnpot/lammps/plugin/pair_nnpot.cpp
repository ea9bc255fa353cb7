/* pair_style nnpot — nnpot potentials in LAMMPS.

   pair_style nnpot [deviation_every N]
   pair_coeff * * FILE El1 El2 ...     (FILE: `nnpot lammps export MODEL.pt`; one element per
                                        LAMMPS type, in type order; NULL under pair hybrid)

   Each step the pair style builds the graph the model sees from LAMMPS's full neighbour list,
   runs the compiled package (per-atom energies and ∂E/∂r_ij of every pair, from autograd of the
   one energy the Potential defines) and turns each pair gradient g into forces on the pair's
   two LAMMPS atoms, f_i += g, f_j −= g. LAMMPS adds forces on ghost atoms to their owners
   (newton on); the virial is its f·r sum over owned and ghost atoms, exact for these forces.
   Per-atom virials (compute stress/atom, centroid/stress/atom) are those of the same pair
   forces: each pair's −sym(r_ij ⊗ g) half to each of its two atoms, ghosts' shares summed to
   their owners by LAMMPS; they sum to the global virial. For a many-body model this split is
   a choice, the one NNPCalculator's per-atom stresses make (nnpot.core.geometry).

   Two graphs, one rule (every physical pair once, each owned atom's energy exact):
   * folded (one rank, or a model whose energy reaches one cutoff, e.g. HDNNP): the nodes are
     the owned atoms; a ghost that is a periodic image of an owned atom is that atom, with the
     pair vector keeping the image's position; other ghosts (atoms of other ranks) are extra
     nodes whose energies are not counted. A pair of two owned atoms is listed from both sides,
     so it is kept from the side of the smaller atom ID (for an atom and its own image, from the
     side where r_ij points "up"). This is exactly nnpot's periodic graph: no ghost work.
   * ghost graph (message passing on several ranks): the nodes are owned and ghost atoms out to
     the receptive field (interactions × cutoff, set as the ghost cutoff), with all their pairs;
     only owned atoms' energies count, so the ghosts' truncated environments never matter.
   * halo exchange (message passing on several ranks, a package with its steps compiled one by
     one, nnpot.lammps.halo): the folded graph, run step by step. After each message step the
     owners' new features are copied to their ghosts (forward comm); going back, each step's
     gradient with respect to ghost features is added to the owners' (reverse comm). Ghosts
     are one cutoff deep and a rank computes only its own atoms' messages.

   A committee's package gives the members' mean and each member's pair gradients: the pair
   style assembles each member's forces (ghosts' parts summed to their owners) and their
   spread per atom, the calculator's forces_std, sqrt(Σ_d var_m F_m,id):
     fix ID all pair N nnpot force_std 0     per-atom (f_ID, for dump)
     compute ID all pair nnpot               its maximum over all atoms (c_ID[1], for fix halt)
   By default every member runs at every step and their mean drives the dynamics. With
   `deviation_every N` the first member alone drives them (as DeePMD's model deviation does) and
   the whole committee also runs on steps that are multiples of N, which update the deviation;
   per N steps that costs N + M member evaluations instead of N·M. */

#include "pair_nnpot.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <malloc.h>
#include <sstream>
#include <unordered_map>

using namespace LAMMPS_NS;

namespace {

constexpr const char *FORMAT = "nnpot-lammps";
constexpr const char *FORMAT_VERSION = "1";

// r points "up": the first non-zero component is positive (r and −r: exactly one of them).
bool points_up(const double *r)
{
  if (r[0] != 0.0) return r[0] > 0.0;
  if (r[1] != 0.0) return r[1] > 0.0;
  return r[2] > 0.0;
}

std::string metadata_value(const std::unordered_map<std::string, std::string> &metadata,
                           const std::string &key, const std::string &path, Error *error)
{
  auto found = metadata.find(key);
  if (found == metadata.end())
    error->all(FLERR, "pair nnpot: {} has no '{}' entry; export the model again with "
               "`nnpot lammps export`", path, key);
  return found->second;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairNNPot::PairNNPot(LAMMPS *lmp) : Pair(lmp)
{
  // The model's tensors are large (tens of MB at 10⁴ atoms) and are allocated afresh every
  // step. glibc serves such blocks with mmap and unmaps them when freed, so every step
  // page-faults its memory in again: measured 20 % of a SchNet step on one rank and half of
  // the step-by-step (halo exchange) evaluation. Keeping freed memory in the heap for reuse
  // removes that; the process keeps its peak memory instead of returning it to the system.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());

  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  centroidstressflag = CENTROID_SAME;  // the pair-force split: two-body terms
  no_virial_fdotr_compute = 0;
  nextra = 0;    // 1 for a committee: the largest force deviation (compute pair nnpot)
  pvector = max_force_std;
}

PairNNPot::~PairNNPot()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairNNPot::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  type_species.assign(n, -1);
}

/* ---------------------------------------------------------------------- */

void PairNNPot::settings(int narg, char **arg)
{
  deviation_every = 1;
  if (narg == 2 && strcmp(arg[0], "deviation_every") == 0) {
    deviation_every = utils::inumeric(FLERR, arg[1], false, lmp);
    if (deviation_every < 1)
      error->all(FLERR, "pair_style nnpot deviation_every N needs N ≥ 1, got {}", arg[1]);
  } else if (narg != 0) {
    error->all(FLERR, "pair_style nnpot takes no arguments but an optional 'deviation_every N' "
               "(a committee's deviation every N steps); the model is given by pair_coeff * * "
               "FILE El1 El2 ...");
  }
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style nnpot needs 'units metal' (Å, eV, ps), not 'units {}'",
               update->unit_style);
}

void PairNNPot::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for nnpot is: pair_coeff * * FILE El1 El2 ... (one element per "
               "atom type)");
  if (narg != 3 + ntypes)
    error->all(FLERR, "pair_coeff * * {} names {} element(s) but there are {} atom types: give "
               "one element (or NULL) per type, in type order", arg[2], narg - 3, ntypes);
  load_model(arg[2]);

  std::string known;
  for (const auto &symbol : species) known += (known.empty() ? "" : " ") + symbol;
  for (int type = 1; type <= ntypes; type++) {
    const std::string element = arg[2 + type];
    type_species[type] = -1;
    if (element == "NULL") {
      if (force->pair == this)    // alone, not a sub-style of pair hybrid
        error->all(FLERR, "pair_coeff: atom type {} has no element (NULL); pair_style nnpot "
                   "on its own needs an element for every type", type);
      continue;
    }
    for (size_t s = 0; s < species.size(); s++)
      if (species[s] == element) type_species[type] = static_cast<int>(s);
    if (type_species[type] < 0)
      error->all(FLERR, "pair_coeff: element {} (atom type {}) is not in the model {} (its "
                 "elements: {})", element, type, arg[2], known);
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++)
      setflag[i][j] = (type_species[i] >= 0 && type_species[j] >= 0) ? 1 : 0;
}

void PairNNPot::load_model(const std::string &path)
{
  if (!std::ifstream(path).good())
    error->all(FLERR, "pair nnpot: cannot read model file {}", path);
  std::unordered_map<std::string, std::string> metadata;
  try {
    metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
  } catch (const std::exception &e) {
    error->all(FLERR, "pair nnpot: {} is not a model exported for LAMMPS (an AOTInductor .pt2 "
               "package from `nnpot lammps export MODEL.pt`); an nnpot model file must be "
               "exported first. Reading it said: {}", path, std::string(e.what()).substr(0, 300));
  }
  auto format = metadata.find("format");
  if (format == metadata.end() || format->second != FORMAT)
    error->all(FLERR, "pair nnpot: {} is an AOTInductor package but not one written by "
               "`nnpot lammps export`", path);
  if (metadata_value(metadata, "format_version", path, error) != FORMAT_VERSION)
    error->all(FLERR, "pair nnpot: {} has export format {} but this plugin reads format {}: "
               "export the model again or rebuild the plugin (`nnpot lammps build`)", path,
               metadata["format_version"], FORMAT_VERSION);

  species.clear();
  std::istringstream words(metadata_value(metadata, "species", path, error));
  for (std::string symbol; words >> symbol;) species.push_back(symbol);
  cutoff = std::stod(metadata_value(metadata, "cutoff", path, error));
  receptive_field = std::stod(metadata_value(metadata, "receptive_field", path, error));
  float64 = metadata_value(metadata, "dtype", path, error) == "float64";
  on_cuda = metadata_value(metadata, "device", path, error) == "cuda";
  if (on_cuda && !at::hasCUDA())
    error->all(FLERR, "pair nnpot: {} was exported for CUDA but this libtorch has no CUDA "
               "device; export it with --device cpu", path);

  try {
    model = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model");
  } catch (const std::exception &e) {
    error->one(FLERR, "pair nnpot: loading {} failed: {}", path,
               std::string(e.what()).substr(0, 500));
  }
  auto members = metadata.find("members");
  n_members = members == metadata.end() ? 0 : std::stoi(members->second);
  nextra = n_members > 0 ? 1 : 0;
  first_member.reset();
  if (deviation_every > 1) {
    if (n_members == 0)
      error->all(FLERR, "pair_style nnpot deviation_every {}: {} is not a committee, so it has "
                 "no deviation; drop the keyword or export a committee", deviation_every, path);
    auto first = metadata.find("first_member");
    if (first == metadata.end() || first->second != "1")
      error->all(FLERR, "pair_style nnpot deviation_every: {} holds no first_member program "
                 "(exported with first_member=False, or by an older nnpot); export the committee "
                 "again with `nnpot lammps export`", path);
    try {
      first_member = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path,
                                                                              "first_member");
    } catch (const std::exception &e) {
      error->one(FLERR, "pair nnpot: loading first_member of {} failed: {}", path,
                 std::string(e.what()).substr(0, 500));
    }
  }
  // The message steps are used on several ranks only; older packages have none.
  auto steps = metadata.find("halo_steps");
  halo_steps = steps == metadata.end() ? 0 : std::stoi(steps->second);
  halo_width = halo_steps ? std::stoi(metadata_value(metadata, "halo_width", path, error)) : 0;
  halo_edges = halo_steps ? std::stoi(metadata_value(metadata, "halo_edges", path, error)) : 0;
  forward_stages.clear();
  backward_stages.clear();
  if (halo_steps > 0 && comm->nprocs > 1) {
    auto stage = [&](const std::string &name) {
      try {
        return std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, name);
      } catch (const std::exception &e) {
        error->one(FLERR, "pair nnpot: loading {} of {} failed: {}", name, path,
                   std::string(e.what()).substr(0, 500));
      }
      return std::unique_ptr<torch::inductor::AOTIModelPackageLoader>();
    };
    embed_stage = stage("halo_embed");
    edges_forward = stage("halo_edges_forward");
    edges_backward = stage("halo_edges_backward");
    readout_stage = stage("halo_readout");
    for (int t = 0; t < halo_steps; t++) {
      forward_stages.push_back(stage("halo_step" + std::to_string(t) + "_forward"));
      backward_stages.push_back(stage("halo_step" + std::to_string(t) + "_backward"));
    }
  }
  model_path = path;
  if (comm->me == 0)
    utils::logmesg(lmp, "pair nnpot: {} ({} {}, elements {}, cutoff {} Å, receptive field {} "
                   "Å)\n", path, metadata["model_class"], metadata["dtype"],
                   metadata["species"], cutoff, receptive_field);
}

/* ---------------------------------------------------------------------- */

bool PairNNPot::halo_exchange() const
{
  return comm->nprocs > 1 && halo_steps > 0;
}

bool PairNNPot::ghost_graph() const
{
  // Folding ghosts onto their owners is exact when every ghost is an image of an owned atom
  // (one rank), or when only owned atoms' own pairs matter (energy reach = one cutoff), or
  // when ghosts get their features from their owners after every step (halo exchange).
  return comm->nprocs > 1 && receptive_field > cutoff * (1.0 + 1e-12) && !halo_exchange();
}

void PairNNPot::init_style()
{
  if (!model) error->all(FLERR, "pair_style nnpot needs pair_coeff * * FILE El1 El2 ...");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style nnpot needs 'units metal' (Å, eV, ps), not 'units {}'",
               update->unit_style);
  if (force->newton_pair == 0) error->all(FLERR, "pair_style nnpot needs newton pair on");
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style nnpot needs atom IDs");

  if (ghost_graph()) {
    ghostneigh = 1;
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    // Ghosts out to the receptive field for as long as the neighbour list lives: + skin.
    const double needed = receptive_field + neighbor->skin;
    if (comm->cutghostuser < needed) {
      comm->cutghostuser = needed;
      if (comm->me == 0)
        utils::logmesg(lmp, "pair nnpot: ghost cutoff set to {:.3f} Å (receptive field {} Å + "
                       "skin {} Å) for message passing across ranks\n", needed,
                       receptive_field, neighbor->skin);
    }
  } else {
    ghostneigh = 0;
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }
  comm_forward = halo_exchange() ? halo_width : 0;
  comm_reverse = std::max(comm_forward, 3 * n_members);
  // Under pair hybrid, LAMMPS sizes its communication buffers from the hybrid style's sizes,
  // which it copied from the sub-styles at pair_style time, before the model was known.
  if (force->pair != this) {
    force->pair->comm_forward = std::max(force->pair->comm_forward, comm_forward);
    force->pair->comm_reverse = std::max(force->pair->comm_reverse, comm_reverse);
  }
  if (halo_exchange() && comm->me == 0)
    utils::logmesg(lmp, "pair nnpot: {} message steps with halo exchange of {} features per "
                   "ghost atom (ghosts one cutoff deep)\n", halo_steps, halo_width);
  if (n_members > 0 && comm->me == 0)
    utils::logmesg(lmp, "pair nnpot: committee of {} members; per-atom force deviation: fix ID "
                   "all pair N nnpot force_std 0, its maximum: compute ID all pair nnpot\n",
                   n_members);
  if (first_member && comm->me == 0)
    utils::logmesg(lmp, "pair nnpot: deviation_every {}: the first member drives the dynamics; "
                   "the committee runs on every {}th step (read the per-atom deviation with fix "
                   "pair {} …)\n", deviation_every, deviation_every, deviation_every);
}

double PairNNPot::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairNNPot::build_graph()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double **x = atom->x;
  const int *type = atom->type;
  const tagint *tag = atom->tag;
  const double cutsq_model = cutoff * cutoff;
  const bool ghosts = ghost_graph();

  node_of.assign(nall, -1);
  node_atom.clear();
  pair_atoms.clear();
  pair_vec.clear();
  std::vector<int64_t> first, second;

  // Owned atoms are nodes 0 … nlocal−1 (their energies count); the owned[] input marks them.
  const int n_nodes_fixed = ghosts ? nall : nlocal;
  for (int i = 0; i < n_nodes_fixed; i++) {
    node_of[i] = i;
    node_atom.push_back(i);
  }
  // Owner of each atom ID among this rank's atoms, to fold periodic images (folded graph).
  std::unordered_map<tagint, int> owner;
  if (!ghosts) {
    owner.reserve(2 * nlocal);
    for (int i = 0; i < nlocal; i++) owner[tag[i]] = i;
  }

  const int n_lists = ghosts ? list->inum + list->gnum : list->inum;
  for (int ii = 0; ii < n_lists; ii++) {
    const int i = list->ilist[ii];
    if (type_species[type[i]] < 0) continue;    // a type another pair style handles
    const int *neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = neighbours[jj] & NEIGHMASK;
      if (type_species[type[j]] < 0) continue;
      if (ghosts && j <= i) continue;    // every pair of the full list once
      const double r[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      if (r[0] * r[0] + r[1] * r[1] + r[2] * r[2] >= cutsq_model) continue;
      int k = node_of[j];
      if (k < 0) {    // a ghost seen for the first time (folded graph)
        auto found = owner.find(tag[j]);
        if (found != owner.end()) {
          k = found->second;
        } else {
          k = static_cast<int>(node_atom.size());
          node_atom.push_back(j);
        }
        node_of[j] = k;
      }
      if (!ghosts && k < nlocal) {    // listed from both owned sides: keep one
        if (tag[i] > tag[j] || (tag[i] == tag[j] && !points_up(r))) continue;
      }
      first.push_back(node_of[i]);
      second.push_back(k);
      pair_atoms.push_back(i);
      pair_atoms.push_back(j);
      pair_vec.insert(pair_vec.end(), r, r + 3);
    }
  }
  const int64_t pad = static_cast<int64_t>(node_atom.size());
  // Two padding nodes joined by two pairs longer than the cutoff (weight 0 in every model):
  // the compiled graph's dynamic sizes start at 2.
  first.push_back(pad);
  second.push_back(pad + 1);
  first.push_back(pad);
  second.push_back(pad + 1);
  pair_nodes = first;    // [2, P]: the first row, then the second
  pair_nodes.insert(pair_nodes.end(), second.begin(), second.end());
}

void PairNNPot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  const auto start = std::chrono::steady_clock::now();
  build_graph();
  const int nlocal = atom->nlocal;
  const int n_real = static_cast<int>(node_atom.size());
  const int n_nodes = n_real + 2;
  const int64_t n_pairs = static_cast<int64_t>(pair_nodes.size() / 2);
  const int64_t n_real_pairs = n_pairs - 2;

  auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor vec = at::empty({n_pairs, 3}, f64);
  double *v = vec.data_ptr<double>();
  std::copy(pair_vec.begin(), pair_vec.end(), v);
  const double far = 2.0 * cutoff;
  const double padding[6] = {far, 0.0, 0.0, 0.0, far, 0.0};
  std::copy(padding, padding + 6, v + 3 * n_real_pairs);
  at::Tensor index = at::from_blob(pair_nodes.data(), {2, n_pairs}, i64).clone();
  // Atoms of types left to another style (NULL under pair hybrid) are isolated nodes of
  // species 0 whose energies do not count.
  at::Tensor node_species = at::zeros({n_nodes}, i64);
  at::Tensor owned = at::zeros({n_nodes}, f64);
  int64_t *s = node_species.data_ptr<int64_t>();
  double *counts = owned.data_ptr<double>();
  for (int n = 0; n < n_real; n++) {
    const int species_index = type_species[atom->type[node_atom[n]]];
    s[n] = species_index < 0 ? 0 : species_index;
    counts[n] = (n < nlocal && species_index >= 0) ? 1.0 : 0.0;
  }

  const auto dtype = float64 ? at::kDouble : at::kFloat;
  const auto device = on_cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  std::vector<at::Tensor> inputs = {vec.to(device, dtype), node_species.to(device),
                                    index.to(device), owned.to(device, dtype)};
  at::Tensor energies, gradient;
  at::Tensor member_gradient;
  // deviation_every N: the first member's forces every step, the committee's spread on steps
  // that are multiples of N (the deviation of other steps stays that of the last such step)
  const bool deviation_now = n_members > 0 && update->ntimestep % deviation_every == 0;
  if (first_member) {
    std::vector<at::Tensor> outputs = run(*first_member, inputs, "first member");
    energies = outputs[0];
    gradient = outputs[1];
    if (deviation_now) member_gradient = run(*model, inputs, "one program")[2];
  } else if (halo_exchange()) {
    compute_in_steps(inputs, energies, gradient);
  } else {
    compute_whole(inputs, energies, gradient, member_gradient);
  }
  energies = energies.to(at::kCPU, at::kDouble).contiguous();
  gradient = gradient.to(at::kCPU, at::kDouble).contiguous();
  const double *e = energies.data_ptr<double>();
  const double *g = gradient.data_ptr<double>();

  double **f = atom->f;
  for (int64_t p = 0; p < n_real_pairs; p++) {
    const int i = pair_atoms[2 * p], j = pair_atoms[2 * p + 1];
    for (int d = 0; d < 3; d++) {
      f[i][d] += g[3 * p + d];
      f[j][d] -= g[3 * p + d];
    }
  }
  if (eflag_global)
    for (int i = 0; i < nlocal; i++) eng_vdwl += counts[i] * e[i];
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) eatom[i] += counts[i] * e[i];
  if (vflag_atom) tally_atom_virials(g, n_real_pairs);
  if (deviation_now) force_deviation(member_gradient, counts);
  if (vflag_fdotr) virial_fdotr_compute();

  const auto end = std::chrono::steady_clock::now();
  total_seconds += std::chrono::duration<double>(end - start).count();
  n_calls++;
}

// The pair force ±g of pair p acts at x_i and x_j = x_i + r: its virial Σ x⊗f is −r ⊗ g,
// symmetrised (LAMMPS keeps xx, yy, zz, xy, xz, yz) and shared equally by the two atoms.
void PairNNPot::tally_atom_virials(const double *g, int64_t n_pairs)
{
  for (int64_t p = 0; p < n_pairs; p++) {
    const double *r = pair_vec.data() + 3 * p, *gp = g + 3 * p;
    const double half[6] = {-0.5 * r[0] * gp[0], -0.5 * r[1] * gp[1], -0.5 * r[2] * gp[2],
                            -0.25 * (r[0] * gp[1] + r[1] * gp[0]),
                            -0.25 * (r[0] * gp[2] + r[2] * gp[0]),
                            -0.25 * (r[1] * gp[2] + r[2] * gp[1])};
    double *vi = vatom[pair_atoms[2 * p]], *vj = vatom[pair_atoms[2 * p + 1]];
    for (int k = 0; k < 6; k++) {
      vi[k] += half[k];
      vj[k] += half[k];
    }
  }
}

std::vector<at::Tensor> PairNNPot::run(torch::inductor::AOTIModelPackageLoader &stage,
                                       const std::vector<at::Tensor> &inputs, const char *what)
{
  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> outputs;
  try {
    outputs = stage.run(inputs);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair nnpot: the model ({}) failed on {} atoms and {} pairs: {}", what,
               node_atom.size(), pair_atoms.size() / 2, std::string(e.what()).substr(0, 500));
  }
  model_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                       .count();
  return outputs;
}

void PairNNPot::compute_whole(std::vector<at::Tensor> &inputs, at::Tensor &energies,
                              at::Tensor &gradient, at::Tensor &member_gradient)
{
  std::vector<at::Tensor> outputs = run(*model, inputs, "one program");
  energies = outputs[0];
  gradient = outputs[1];
  if (n_members > 0) member_gradient = outputs[2];
}

// Each member's forces on every LAMMPS atom from its pair gradients [M, P, 3], ghosts' parts
// summed to their owners (reverse comm), then per owned atom the spread over members as
// Committee computes it: population variance from the differences to member 0.
void PairNNPot::force_deviation(const at::Tensor &member_gradient, const double *counts)
{
  const at::Tensor gm = member_gradient.to(at::kCPU, at::kDouble).contiguous();
  const double *g = gm.data_ptr<double>();
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost, m_count = n_members;
  const int64_t n_pairs = static_cast<int64_t>(pair_atoms.size() / 2), stride = gm.size(1);
  const int w = 3 * m_count;
  atom_values.assign(static_cast<size_t>(nall) * w, 0.0);
  for (int m = 0; m < m_count; m++)
    for (int64_t p = 0; p < n_pairs; p++) {
      const double *gp = g + (m * stride + p) * 3;
      double *fi = atom_values.data() + static_cast<size_t>(pair_atoms[2 * p]) * w + 3 * m;
      double *fj = atom_values.data() + static_cast<size_t>(pair_atoms[2 * p + 1]) * w + 3 * m;
      for (int d = 0; d < 3; d++) {
        fi[d] += gp[d];
        fj[d] -= gp[d];
      }
    }
  comm_width = w;
  communicate(false);
  force_std.assign(std::max(atom->nmax, 1), 0.0);
  double largest = 0.0;
  for (int i = 0; i < nlocal; i++) {
    if (counts[i] == 0.0) continue;    // a type left to another style
    const double *f = atom_values.data() + static_cast<size_t>(i) * w;
    double variance = 0.0;
    for (int d = 0; d < 3; d++) {
      double sum = 0.0, square = 0.0;
      for (int m = 0; m < m_count; m++) {
        const double difference = f[3 * m + d] - f[d];
        sum += difference;
        square += difference * difference;
      }
      const double mean = sum / m_count;
      variance += std::max(square / m_count - mean * mean, 0.0);
    }
    force_std[i] = std::sqrt(variance);
    largest = std::max(largest, force_std[i]);
  }
  MPI_Allreduce(&largest, max_force_std, 1, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me != 0) max_force_std[0] = 0.0;    // compute pair sums pvector over the ranks
}

void *PairNNPot::extract_peratom(const char *name, int &ncol)
{
  if (n_members > 0 && strcmp(name, "force_std") == 0) {
    ncol = 0;
    if (force_std.size() < static_cast<size_t>(std::max(atom->nmax, 1)))
      force_std.resize(std::max(atom->nmax, 1), 0.0);
    return force_std.data();
  }
  return nullptr;
}

/* The staged evaluation (nnpot.lammps.halo.run_stages, plus the exchanges):
   x = embed(species); edges = edges_forward(r); for each step x, saved = step_forward(x, …)
   and ghosts' rows of x from their owners; energies, ∂E/∂x, ∂E/∂r = readout(x); for each step
   backwards ∂E/∂x, ∂E/∂edges += step_backward(…, ∂E/∂x), ghosts' rows of ∂E/∂x added to their
   owners'; finally ∂E/∂r += edges_backward(∂E/∂edges). */
void PairNNPot::compute_in_steps(std::vector<at::Tensor> &inputs, at::Tensor &energies,
                                 at::Tensor &gradient)
{
  const at::Tensor &vec = inputs[0], &node_species = inputs[1], &index = inputs[2];
  at::Tensor x = run(*embed_stage, {node_species}, "embedding")[0];
  std::vector<at::Tensor> edges = run(*edges_forward, {vec}, "pair features");
  std::vector<at::Tensor> edges_saved(edges.begin() + halo_edges, edges.end());
  edges.resize(halo_edges);

  std::vector<at::Tensor> step_inputs;
  std::vector<std::vector<at::Tensor>> saved;
  for (int t = 0; t < halo_steps; t++) {
    std::vector<at::Tensor> step = {x, index};
    step.insert(step.end(), edges.begin(), edges.end());
    std::vector<at::Tensor> outputs = run(*forward_stages[t], step, "message step");
    step_inputs.push_back(x);
    x = exchange_features(outputs[0]);
    saved.emplace_back(outputs.begin() + 1, outputs.end());
  }
  std::vector<at::Tensor> readout = run(*readout_stage, {x, node_species, vec, index, inputs[3]},
                                        "readout");
  energies = readout[0];
  at::Tensor gradient_x = readout[1];
  gradient = readout[2];

  std::vector<at::Tensor> gradient_edges;
  for (int t = halo_steps - 1; t >= 0; t--) {
    std::vector<at::Tensor> step = {step_inputs[t], index};
    step.insert(step.end(), edges.begin(), edges.end());
    step.insert(step.end(), saved[t].begin(), saved[t].end());
    step.push_back(gradient_x);
    std::vector<at::Tensor> outputs = run(*backward_stages[t], step, "message step gradient");
    saved[t].clear();    // the activations of step t are not needed any more
    if (gradient_edges.empty())
      gradient_edges.assign(outputs.begin() + 1, outputs.end());
    else
      for (int k = 0; k < halo_edges; k++) gradient_edges[k] += outputs[1 + k];
    if (t > 0) gradient_x = exchange_gradient(outputs[0]);
  }
  std::vector<at::Tensor> last = {vec};
  last.insert(last.end(), edges_saved.begin(), edges_saved.end());
  last.insert(last.end(), gradient_edges.begin(), gradient_edges.end());
  gradient = gradient + run(*edges_backward, last, "pair feature gradient")[0];
}

// LAMMPS's forward (owners → ghosts) or reverse (ghosts → owners, summed) comm of
// atom_values, timed for finish().
void PairNNPot::communicate(bool forward)
{
  const auto start = std::chrono::steady_clock::now();
  if (forward)
    comm->forward_comm(this);
  else
    comm->reverse_comm(this);
  exchange_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                          .count();
}

// Features [nodes, F] of one step → the same with ghost nodes' rows from their owners.
at::Tensor PairNNPot::exchange_features(const at::Tensor &x)
{
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const int n_real = static_cast<int>(node_atom.size());
  at::Tensor values = x.to(at::kCPU, at::kDouble).contiguous();
  double *v = values.data_ptr<double>();
  const int w = comm_width = halo_width;
  atom_values.resize(static_cast<size_t>(nall) * w);
  std::copy(v, v + static_cast<size_t>(nlocal) * w, atom_values.begin());
  communicate(true);
  for (int n = nlocal; n < n_real; n++)
    std::copy_n(atom_values.data() + static_cast<size_t>(node_atom[n]) * w, w,
                v + static_cast<size_t>(n) * w);
  return values.to(x.device(), x.scalar_type());
}

// ∂E/∂x [nodes, F] of one step's input → owned rows plus what ghosts of them got elsewhere;
// ghost (and padding) rows zero: the next step back gets ∂E/∂x of owned atoms only.
at::Tensor PairNNPot::exchange_gradient(const at::Tensor &gradient_x)
{
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const int n_real = static_cast<int>(node_atom.size());
  at::Tensor values = gradient_x.to(at::kCPU, at::kDouble).contiguous();
  double *v = values.data_ptr<double>();
  const int w = comm_width = halo_width;
  atom_values.assign(static_cast<size_t>(nall) * w, 0.0);
  for (int n = nlocal; n < n_real; n++)
    std::copy_n(v + static_cast<size_t>(n) * w, w,
                atom_values.data() + static_cast<size_t>(node_atom[n]) * w);
  communicate(false);
  for (size_t k = 0; k < static_cast<size_t>(nlocal) * w; k++) v[k] += atom_values[k];
  std::fill(v + static_cast<size_t>(nlocal) * w, v + values.numel(), 0.0);
  return values.to(gradient_x.device(), gradient_x.scalar_type());
}

int PairNNPot::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  const int w = comm_width;
  for (int k = 0; k < n; k++)
    std::copy_n(atom_values.data() + static_cast<size_t>(list[k]) * w, w, buf + k * w);
  return n * w;
}

void PairNNPot::unpack_forward_comm(int n, int first, double *buf)
{
  const int w = comm_width;
  const size_t needed = static_cast<size_t>(first + n) * w;
  if (atom_values.size() < needed) atom_values.resize(needed);
  std::copy_n(buf, static_cast<size_t>(n) * w, atom_values.data() + static_cast<size_t>(first) * w);
}

int PairNNPot::pack_reverse_comm(int n, int first, double *buf)
{
  const int w = comm_width;
  std::copy_n(atom_values.data() + static_cast<size_t>(first) * w, static_cast<size_t>(n) * w,
              buf);
  return n * w;
}

void PairNNPot::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int w = comm_width;
  for (int k = 0; k < n; k++) {
    double *row = atom_values.data() + static_cast<size_t>(list[k]) * w;
    for (int d = 0; d < w; d++) row[d] += buf[k * w + d];
  }
}

// VmHWM of this process in MiB (0 where /proc is not there).
static double peak_resident_mib()
{
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  return 0.0;
}

void PairNNPot::finish()
{
  // Where the pair style's time goes (rank 0): the model call vs building its inputs.
  if (comm->me == 0 && n_calls > 0)
    utils::logmesg(lmp, "pair nnpot: {} calls, {:.3f} ms/call in the model, {:.3f} ms/call in "
                   "the pair style around it (graph, copies, forces)\n", n_calls,
                   1e3 * model_seconds / n_calls, 1e3 * (total_seconds - model_seconds) / n_calls);
  if (comm->me == 0 && n_calls > 0 && halo_exchange())
    utils::logmesg(lmp, "pair nnpot: of which {:.3f} ms/call in halo exchanges (including "
                   "waiting for the other ranks)\n", 1e3 * exchange_seconds / n_calls);
  // Peak resident memory of each rank's process so far (LAMMPS, torch and the model together;
  // Linux's VmHWM): what a user sizing a run per node needs. Collective: every rank reads its own.
  if (n_calls > 0) {
    double peak[2] = {peak_resident_mib(), 0.0};
    peak[1] = -peak[0];
    MPI_Allreduce(MPI_IN_PLACE, peak, 2, MPI_DOUBLE, MPI_MAX, world);
    if (comm->me == 0 && peak[0] > 0)
      utils::logmesg(lmp, "pair nnpot: peak memory per rank {:.1f} MiB (smallest {:.1f} MiB) on "
                     "{} rank(s)\n", peak[0], -peak[1], comm->nprocs);
  }
  model_seconds = total_seconds = exchange_seconds = 0.0;
  n_calls = 0;
}
