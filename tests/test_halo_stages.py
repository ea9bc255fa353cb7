"""The message-passing steps that ``nnpot lammps export`` compiles for halo exchange
(``nnpot.lammps.halo``): run in turn, they give the potential's energies and pair gradients.

These check the exported programs in eager mode (no compiler, no LAMMPS); tests/test_lammps.py
runs the compiled steps in LAMMPS on 2 and 4 ranks."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hdnnp, make_mace, make_nequip, make_potential

from nnpot import Potential
from nnpot.core.committee import Committee
from nnpot.lammps.export import energy_function, example_inputs, trace_module
from nnpot.lammps.halo import export_stages, run_stages, supports_halo_exchange


def with_repulsion(potential: Potential) -> Potential:
    return Potential(potential.model, e0=potential.e0_dict(), scale=float(potential.scale),
                     shift=float(potential.shift), pair_repulsion="zbl").to(torch.float64)


STAGED = {"SchNet": lambda: make_potential(n_interactions=3),
          "SchNet+ZBL": lambda: with_repulsion(make_potential(n_interactions=3)),
          "NequIP": lambda: make_nequip(n_layers=3),
          "MACE": lambda: make_mace(n_layers=3)}


@pytest.mark.parametrize("model", [
    "SchNet", "SchNet+ZBL",
    pytest.param("NequIP", marks=pytest.mark.slow),   # ~1.5 min of tracing and export each
    pytest.param("MACE", marks=pytest.mark.slow)])
def test_the_steps_in_turn_give_the_potentials_energies_and_gradients(model):
    """SchNet, and with ZBL (a pair term in the readout: its gradient comes from the readout
    stage); NequIP (irreps of growing width, padded) and MACE (every layer reads out)."""
    potential = STAGED[model]()
    potential.eval()
    for parameter in potential.parameters():
        parameter.requires_grad_(False)
    inputs = example_inputs(potential, torch.float64, torch.device("cpu"), n_atoms=37)
    programs = export_stages(potential, inputs, trace_module)
    assert sorted(programs) == sorted(
        ["halo_embed", "halo_edges_forward", "halo_edges_backward", "halo_readout"]
        + [f"halo_step{t}_{half}" for t in range(3) for half in ("forward", "backward")])

    stages = {name: program.module() for name, program in programs.items()}
    n_edges = len(potential.model.edge_features(inputs[0]))
    energies, gradient = run_stages(stages, 3, n_edges, *inputs)
    reference_energies, reference_gradient = energy_function(potential)(*inputs)
    torch.testing.assert_close(energies, reference_energies, rtol=0, atol=1e-12)
    torch.testing.assert_close(gradient, reference_gradient, rtol=0, atol=1e-12)
    assert float(reference_gradient.abs().max()) > 1e-3   # the comparison means something


def test_only_single_message_passing_models_in_steps_support_halo_exchange():
    assert supports_halo_exchange(make_potential())
    assert not supports_halo_exchange(make_potential(n_interactions=1))  # reach = one cutoff
    assert not supports_halo_exchange(make_hdnnp())
    assert supports_halo_exchange(make_nequip()) and supports_halo_exchange(make_mace())
    assert not supports_halo_exchange(Committee([make_potential(seed=0),
                                                 make_potential(seed=1)]))


def test_asking_halo_exchange_of_a_model_without_steps_is_a_clear_error(tmp_path):
    from nnpot.lammps import export_for_lammps

    make_hdnnp().save(tmp_path / "hdnnp.pt")
    with pytest.raises(ValueError, match=r"hdnnp\.pt: halo exchange needs .* HDNNP"):
        export_for_lammps(tmp_path / "hdnnp.pt", tmp_path / "hdnnp.pt2", halo_exchange=True,
                          log=lambda line: None)
    assert not (tmp_path / "hdnnp.pt2").exists()
