"""A potential as one AOTInductor package (``.pt2``) that ``pair_style nnpot`` loads in C++.

What is compiled is the Potential's own per-atom energies and their autograd derivative with
respect to the pair vectors, traced once:

    (pair_vec [P, 3] Å, species [N] int64, pair_index [2, P] int64, owned [N] 0/1)
        → (energies [N] eV, pair_gradient [P, 3] = ∂(Σ_i owned_i·E_i)/∂r_ij eV/Å)

The pair style owns the geometry: it builds the graph from LAMMPS's neighbour list (owned atoms,
and ghost atoms where another rank owns them), passes r_ij = x_j − x_i, and turns the pair
gradient into forces on the two LAMMPS atoms of each pair (f_i += g, f_j −= g); LAMMPS adds
ghost forces to their owners (newton on) and its f·r sum over owned and ghost atoms is the
exact virial. Every pair (i, j) appears once (the model contract, ``AtomisticModel``).

Nothing here re-implements the model: ``make_fx`` traces ``Potential.atom_energies`` and
``torch.autograd.grad`` into one graph of aten operations, ``torch.export`` makes the atom and
pair counts symbolic, and AOTInductor compiles it to a shared library inside the package. The
package's metadata carries the species (in model order), cutoff, receptive field and dtype.
The dynamic dimensions start at 2 (export specialises sizes 0 and 1), so the pair style always
appends two padding atoms joined by two pairs longer than the cutoff, which every model weighs 0.

A committee's package returns the members' mean and, third, each member's pair gradients
[M, P, 3], from which the pair style gets the per-atom force deviation (metadata ``members``).
It also holds its first member alone (program ``first_member``), which drives the dynamics when
``pair_style nnpot deviation_every N`` evaluates the whole committee only every N steps.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch._inductor.package import load_package, package_aoti

from ..core.committee import Committee, member_pairs, members_of
from ..core.devices import resolve_device
from ..core.geometry import PairGeometry
from ..core.model_file import load
from ..core.potential import Potential, resolve_dtype
from ..version import __version__
from .halo import (
    export_stages,
    functional_form,
    run_stages,
    stage_names,
    supports_halo_exchange,
)

FORMAT = "nnpot-lammps"
FORMAT_VERSION = 1


def receptive_field(potential: Potential | Committee) -> float:
    """Å an atom's energy depends on (message steps × cutoff); a committee's widest member."""
    members = members_of(potential)
    return max(member.model.receptive_field for member in members)


def energy_function(potential: Potential | Committee) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The function that is compiled (see the module docstring); a committee gives its mean
    and its members' pair gradients."""
    members = members_of(potential)

    def energies_and_gradient(pair_vec: torch.Tensor, species: torch.Tensor,
                            pair_index: torch.Tensor, owned: torch.Tensor
                            ) -> tuple[torch.Tensor, ...]:
        pair_vec = pair_vec.detach().requires_grad_(True)
        views = member_pairs(members, PairGeometry(species, pair_index, pair_vec))
        each = [member.atom_energies(pairs) for member, pairs in zip(members, views)]
        energies = sum(each) / len(members)
        if not isinstance(potential, Committee):
            (gradient,) = torch.autograd.grad((energies * owned).sum(), pair_vec)
            return energies.detach(), gradient
        member_gradients = torch.stack([
            torch.autograd.grad((member * owned).sum(), pair_vec, retain_graph=True)[0]
            for member in each])
        return energies.detach(), member_gradients.mean(dim=0), member_gradients

    return energies_and_gradient


def example_inputs(potential: Potential | Committee, dtype: torch.dtype, device: torch.device,
                   n_atoms: int = 40) -> tuple[torch.Tensor, ...]:
    """A small random cluster of every species with its pairs: the shapes the trace starts from
    (its sizes become symbolic) and the check that the compiled package agrees."""
    generator = torch.Generator().manual_seed(0)
    side = (n_atoms / 0.06) ** (1 / 3)  # ~0.06 atoms/Å³, a dense solid
    positions = torch.rand(n_atoms, 3, generator=generator, dtype=torch.float64) * side
    species = torch.arange(n_atoms) % len(potential.species)
    i, j = torch.triu_indices(n_atoms, n_atoms, 1)
    pair_vec = positions[j] - positions[i]
    near = torch.linalg.vector_norm(pair_vec, dim=1) < potential.cutoff
    pair_index = torch.stack([i[near], j[near]])
    owned = (torch.arange(n_atoms) < n_atoms - 8).to(torch.float64)  # the last 8 act as ghosts
    return (pair_vec[near].to(dtype=dtype, device=device), species.to(device),
            pair_index.to(device), owned.to(dtype=dtype, device=device))


class _Traced(nn.Module):
    """The traced graph with the potential's weights as buffers: what ``torch.export`` sees.

    The weights were inputs of the trace (``functional_call``), not constants folded into it,
    so export lifts them as ordinary module state (and AOTInductor embeds them)."""

    def __init__(self, graph: nn.Module, weights: list[torch.Tensor]):
        super().__init__()
        self.graph = graph
        self.n_weights = len(weights)
        for k, weight in enumerate(weights):
            self.register_buffer(f"weight_{k}", weight)

    def forward(self, *inputs):  # export sees one argument: the tuple of inputs
        weights = [getattr(self, f"weight_{k}") for k in range(self.n_weights)]
        return self.graph(*weights, *inputs)


class _EnergyModule(nn.Module):
    """``energy_function`` of the potential as a module, for ``torch.func.functional_call``."""

    def __init__(self, potential: Potential | Committee):
        super().__init__()
        self.potential = potential
        self.function = energy_function(potential)

    def forward(self, pair_vec, species, pair_index, owned):
        return self.function(pair_vec, species, pair_index, owned)


def trace(potential: Potential | Committee, inputs: tuple[torch.Tensor, ...]) -> _Traced:
    """``make_fx`` of forward + autograd with symbolic sizes; the weights enter as inputs."""
    return trace_module(_EnergyModule(potential), inputs)


def trace_module(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> _Traced:
    """``make_fx`` of a module that may call autograd inside, with symbolic sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    flat, weights = functional_form(module)
    graph = make_fx(flat, tracing_mode="symbolic")(*weights, *inputs)
    return _Traced(graph, weights)


def export_for_lammps(model: str | os.PathLike, output: str | os.PathLike | None = None,
                      dtype: str = "float64", device: str = "cpu",
                      log: Callable[[str], None] = print,
                      halo_exchange: bool | None = None, first_member: bool = True) -> Path:
    """Compile an nnpot model file for ``pair_style nnpot``; returns the ``.pt2`` path.

    Args:
        model: a model file written by nnpot (a potential or a committee, whose mean is used).
        output: the package to write; default ``<model stem>-<dtype>.pt2`` in the current folder.
        dtype: ``float32`` or ``float64``, the precision the pair style computes in.
        device: ``cpu`` or ``cuda``; a package runs on the device it was compiled for.
        log: where progress lines go.
        halo_exchange: also compile the model's message-passing steps one by one
            (``nnpot.lammps.halo``), so that several ranks exchange ghost features after each
            step instead of each holding ghosts out to the receptive field. Default: when the
            model supports it (SchNet, NequIP, MACE); it adds minutes of compiling.
        first_member: for a committee, also compile its first member alone, for
            ``pair_style nnpot deviation_every N`` (twice the compiling).

    The compiled package is checked against the Potential itself on a random cluster before
    it is written: a package that disagrees is an error, never a file.
    """
    model = Path(model)
    torch_dtype = resolve_dtype(dtype)
    torch_device = resolve_device(device)
    potential = load(model, device=torch_device).to(torch_dtype).eval()
    for parameter in potential.parameters():
        parameter.requires_grad_(False)
    output = Path(output) if output else Path(f"{model.stem}-{dtype}.pt2")
    if output.suffix != ".pt2":
        raise ValueError(f"the output of nnpot lammps export is an AOTInductor package and must "
                         f"end in .pt2, got {output}")
    reach = receptive_field(potential)
    kind = (f"committee of {len(potential)}" if isinstance(potential, Committee)
            else type(potential.model).__name__)
    log(f"exporting {model} ({kind}, species {' '.join(potential.species)}, "
        f"cutoff {potential.cutoff:g} Å, receptive field {reach:g} Å) in {dtype} on {device}")

    if halo_exchange is None:
        halo_exchange = supports_halo_exchange(potential)
    elif halo_exchange and not supports_halo_exchange(potential):
        raise ValueError(f"{model}: halo exchange needs a single message-passing model that "
                         f"comes in steps (SchNet, NequIP, MACE); this is a {kind}")
    function = energy_function(potential)
    # 37 atoms: sizes that no layer width of a model is likely to share (halo.partition)
    inputs = example_inputs(potential, torch_dtype, torch_device, n_atoms=37)
    start = time.perf_counter()
    # Symbolic tracing through autograd: forward and backward become one graph of aten ops.
    traced = trace(potential, inputs)
    atoms = torch.export.Dim("atoms", min=2)
    pairs = torch.export.Dim("pairs", min=2)
    programs = {"model": torch.export.export(
        traced, inputs, dynamic_shapes=(({0: pairs}, {0: atoms}, {1: pairs}, {0: atoms}),))}
    if halo_exchange:
        programs.update(export_stages(potential, inputs, trace_module))
    first_member = first_member and isinstance(potential, Committee)
    if first_member:
        programs["first_member"] = torch.export.export(
            trace(potential.members[0], inputs), inputs,
            dynamic_shapes=(({0: pairs}, {0: atoms}, {1: pairs}, {0: atoms}),))
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "species": " ".join(potential.species),
        "cutoff": repr(float(potential.cutoff)),
        "receptive_field": repr(float(reach)),
        "dtype": dtype,
        "device": torch_device.type,
        "model_class": type(potential).__name__ if isinstance(potential, Committee)
        else type(potential.model).__name__,
        "source": str(model.resolve()),
        "nnpot_version": __version__,
        # Message steps compiled one by one (0: none) and the width of the features exchanged
        "halo_steps": str(potential.model.n_message_steps if halo_exchange else 0),
        "halo_width": str(potential.model.initial_features(inputs[1][:1]).shape[1]
                          if halo_exchange else 0),
        "halo_edges": str(len(potential.model.edge_features(inputs[0])) if halo_exchange else 0),
        # Members whose pair gradients the package also returns (0: not a committee)
        "members": str(len(potential) if isinstance(potential, Committee) else 0),
        # A committee's first member alone (program first_member), for deviation_every
        "first_member": "1" if first_member else "0",
    }
    log(f"traced in {time.perf_counter() - start:.1f} s; compiling {len(programs)} "
        f"program(s) with AOTInductor (10–60 s each)…")

    threading = kernel_threading(potential)
    # Written under a temporary name (AOTInductor wants a .pt2 suffix) and renamed when checked.
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.{os.getpid()}.partial.pt2")
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices, not the user's
            warnings.simplefilter("ignore", FutureWarning)
            files = {}
            for name, program in programs.items():
                files[name] = torch._inductor.aot_compile(
                    program.module(check_guards=False), *program.example_inputs,
                    options={"aot_inductor.package": True, "aot_inductor.metadata": metadata,
                             **threading})
            package_aoti(str(partial), files)
        _check_package(str(partial), function, inputs, torch_dtype,
                       int(metadata["halo_steps"]), int(metadata["halo_edges"]))
        if first_member:
            _check_package(str(partial), energy_function(potential.members[0]), inputs,
                           torch_dtype, 0, 0, program="first_member")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    log(f"compiled and checked in {time.perf_counter() - start:.0f} s")
    return output.resolve()


def kernel_threading(potential: Potential | Committee) -> dict[str, object]:
    """How the compiled kernels use threads (an AOTInductor config).

    By default they follow the thread count at run time (OMP_NUM_THREADS of each LAMMPS rank),
    not the one of the exporting process; a model that declares ``serial_kernels`` (HDNNP)
    gets serial kernels and scales over MPI ranks instead."""
    members = members_of(potential)
    if any(member.model.serial_kernels for member in members):
        return {"cpp.threads": 1}
    return {"cpp.dynamic_threads": True}


def _check_package(path: str, function: Callable, inputs: tuple[torch.Tensor, ...],
                   dtype: torch.dtype, halo_steps: int, halo_edges: int,
                   program: str = "model") -> None:
    """The compiled package must give the eager energies and pair gradients on ``inputs``:
    the one program (``program``), and the message steps run in turn when there are any."""
    reference = function(*inputs)
    tolerance = 1e-9 if dtype == torch.float64 else 1e-4
    scale = max(1.0, *(float(output.abs().max()) for output in reference))
    results = {f"the compiled package ({program})": load_package(path, program)(*inputs)}
    if halo_steps:
        stages = {name: load_package(path, name) for name in stage_names(halo_steps)}
        results["its message steps"] = run_stages(stages, halo_steps, halo_edges, *inputs)
    for what, outputs in results.items():
        if len(outputs) != len(reference):
            raise RuntimeError(f"{what} returns {len(outputs)} outputs, not {len(reference)}")
        error = max(float((output - expected).abs().max())
                    for output, expected in zip(outputs, reference))
        if not error <= tolerance * scale:
            raise RuntimeError(f"{what} disagrees with the potential by {error:.3g} "
                               f"(tolerance {tolerance * scale:.3g}); it was not written")
