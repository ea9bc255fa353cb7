"""Message passing split into steps, for halo exchange between LAMMPS ranks.

A message-passing model's energy reaches ``steps × cutoff``, so the one-program package needs
ghost atoms that deep on every rank (the ghost graph), and the ranks repeat most of each
other's work. With the model's steps compiled one by one, a rank needs ghosts one cutoff deep
only: after each step LAMMPS copies the owners' new features to their ghosts (forward comm),
and going back, each step's gradient with respect to ghost features is added to the owners'
(reverse comm). Each rank then works on its own atoms and their pairs, nothing more.

The model provides the steps (a ``StagedMessagePassing``: SchNet, NequIP, MACE, with
``initial_features``, ``edge_features``, ``message_step``, ``read_out``; ``forward`` is their
composition). Each step's backward is autograd's, not written here: AOTAutograd traces the
step with its derivative and partitions the joint graph into a forward that also returns the
activations the backward needs and a backward that takes them (nothing is recomputed), and
both are exported and compiled. The packages inside the one ``.pt2`` (besides ``model``, the
whole program), where "→ saved" means the activations that the matching backward takes after
the inputs:

* ``halo_embed``:              species [N] → x [N, F]
* ``halo_edges_forward``:      pair_vec [P, 3] → (*edges, saved)   (``edge_features``: K
                               tensors [P, …], shared by every step)
* ``halo_edges_backward``:     (pair_vec, saved, *∂E/∂edges) → ∂E/∂pair_vec
* ``halo_step{t}_forward``:    (x, pair_index [2, P], *edges) → (x' [N, F], saved)
* ``halo_step{t}_backward``:   (x, pair_index, *edges, saved, ∂E/∂x') → (∂E/∂x, *∂E/∂edges)
* ``halo_readout``:            (x, species, pair_vec, pair_index, owned [N])
                               → (energies [N] eV, ∂E/∂x, ∂E/∂pair_vec), E = Σ owned·energies

Rows of x' for atoms whose pairs are not all on this rank (ghosts) are wrong and are replaced
by the owners' values; the pair style never reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core.committee import Committee
from ..core.geometry import PairGeometry
from ..core.potential import Potential
from ..models.base import StagedMessagePassing


def supports_halo_exchange(potential: Potential | Committee) -> bool:
    """A single potential whose model is a ``StagedMessagePassing`` (SchNet, NequIP, MACE)
    reaching past one cutoff (else the one-program package already needs no deep ghosts)."""
    if isinstance(potential, Committee):
        return False
    model = potential.model
    return isinstance(model, StagedMessagePassing) and model.n_message_steps > 1


class _Embed(nn.Module):
    def __init__(self, potential: Potential):
        super().__init__()
        self.model = potential.model

    def forward(self, species: torch.Tensor) -> torch.Tensor:
        return self.model.initial_features(species)


class _Edges(nn.Module):
    """pair_vec → the model's geometry-only pair tensors, shared by every step."""

    def __init__(self, potential: Potential):
        super().__init__()
        self.model = potential.model

    def forward(self, pair_vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.edge_features(pair_vec))


class _Step(nn.Module):
    """(x, pair_index, *edges) → x' of one message step."""

    def __init__(self, potential: Potential, step: int):
        super().__init__()
        self.model = potential.model
        self.step = step

    def forward(self, x: torch.Tensor, pair_index: torch.Tensor, *edges: torch.Tensor
                ) -> torch.Tensor:
        return self.model.message_step(self.step, x, tuple(edges), pair_index)


class _Readout(nn.Module):
    """Energies from the final features, and their gradients (autograd, traced with make_fx)."""

    def __init__(self, potential: Potential):
        super().__init__()
        self.potential = potential

    def forward(self, x, species, pair_vec, pair_index, owned):
        x = x.detach().requires_grad_(True)
        pair_vec = pair_vec.detach().requires_grad_(True)
        per_atom = self.potential.model.read_out(x)
        energies = self.potential.energies_from_model(per_atom,
                                                      PairGeometry(species, pair_index, pair_vec))
        gradient_x, gradient_pairs = torch.autograd.grad(
            (energies * owned).sum(), [x, pair_vec], allow_unused=True)
        if gradient_pairs is None:  # no pair term (repulsion) in the readout
            gradient_pairs = torch.zeros_like(pair_vec)
        return energies.detach(), gradient_x, gradient_pairs


def functional_form(module: nn.Module) -> tuple[Callable, list[torch.Tensor]]:
    """``module`` as a function of (*weights, *inputs), and its weights (parameters and
    buffers, detached): the weights enter traces as inputs, not as folded constants."""
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    names = list(state)

    def flat(*args):
        return torch.func.functional_call(module, dict(zip(names, args[:len(names)])),
                                          args[len(names):])

    return flat, [value.detach() for value in state.values()]


class _Partitioned(nn.Module):
    """One half (forward or backward) of a step's partitioned graph, with the step's weights
    as buffers, taking and returning tensors only (what ``torch.export`` compiles)."""

    def __init__(self, graph: torch.fx.GraphModule, weights: list[torch.Tensor],
                 arrange: Callable):
        super().__init__()
        self.graph = graph
        self.n_weights = len(weights)
        self.arrange = arrange
        for k, weight in enumerate(weights):
            self.register_buffer(f"weight_{k}", weight)

    def forward(self, *inputs):  # export sees one argument: the tuple of inputs
        weights = [getattr(self, f"weight_{k}") for k in range(self.n_weights)]
        return self.arrange(self.graph, weights, inputs)


def _input_nodes(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [node for node in graph.graph.nodes if node.op == "placeholder"]


def _linear_size(size, size_names: dict[str, str]) -> tuple[str, int, int] | None:
    """A saved activation's dimension as (dynamic size name, a, b) when it is a·size + b of one
    input size (e.g. 3·atoms of a reshaped tensor); None when it is fixed."""
    if not isinstance(size, torch.SymInt):
        return None
    expr = size.node.expr
    names = [size_names.get(str(symbol)) for symbol in expr.free_symbols]
    if len(names) != 1 or names[0] is None:
        return None
    (symbol,) = expr.free_symbols
    a, b = expr.coeff(symbol), expr.subs(symbol, 0)
    if not (a.is_Integer and b.is_Integer) or expr != a * symbol + b:
        raise RuntimeError(f"cannot export a saved activation of size {expr}")
    return names[0], int(a), int(b)


def partition(module: nn.Module, inputs: tuple[torch.Tensor, ...],
              input_dims: tuple[dict[int, str], ...], differentiable: tuple[bool, ...]
              ) -> tuple[nn.Module, nn.Module, int, list[dict[int, tuple[str, int, int]]]]:
    """The forward and backward halves of ``module`` (a function of tensors to a tensor or a
    tuple of them): forward(*inputs) → (*outputs, *saved) and backward(*inputs, *saved,
    *∂E/∂outputs) → ∂E/∂(each differentiable input); also the number of outputs and the
    dynamic dimensions of the saved activations ({dim: (name, a, b)} each: a·size + b of the
    input size ``name`` of ``input_dims``). Saved weights and inputs are not passed around:
    the backward holds the weights itself and gets the inputs again."""
    from torch._functorch.aot_autograd import aot_function, make_boxed_func
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    flat, weights = functional_form(module)
    n_weights = len(weights)

    graphs: dict[str, torch.fx.GraphModule] = {}

    def keep(kind):
        def compiler(graph, _):
            graphs[kind] = graph
            return make_boxed_func(graph)
        return compiler

    sizes = {int(w.shape[d]) for w in weights for d in range(w.dim())}
    dynamic_sizes = {int(t.shape[d]) for t, dims in zip(inputs, input_dims) for d in dims}
    if dynamic_sizes & sizes or len(dynamic_sizes) < len(set().union(
            *[set(dims.values()) for dims in input_dims])):
        # Symbolic tracing gives equal sizes one symbol ("duck sizing").
        raise ValueError("example sizes collide with the model's widths; use another cluster")
    joint = aot_function(flat, fw_compiler=keep("forward"), bw_compiler=keep("backward"),
                         partition_fn=min_cut_rematerialization_partition, dynamic=True)
    outputs = joint(*weights, *(t.detach().requires_grad_(True) if grad else t
                                for t, grad in zip(inputs, differentiable)))
    outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    torch.autograd.backward(outputs, [torch.ones_like(t) for t in outputs])
    forward, backward = graphs["forward"], graphs["backward"]
    n_outputs = len(outputs)

    # The forward graph's inputs are primals_1 …: the weights, then the inputs.
    primals = _input_nodes(forward)
    role = {node.name: ("weight", k) for k, node in enumerate(primals[:n_weights])}
    role.update({node.name: ("input", k) for k, node in enumerate(primals[n_weights:])})
    size_names = {str(primals[n_weights + k].meta["val"].shape[d]): name
                  for k, dims in enumerate(input_dims) for d, name in dims.items()}
    weight_symbols = {str(symbol) for node in primals[:n_weights]
                      for size in node.meta["val"].shape if isinstance(size, torch.SymInt)
                      for symbol in size.node.expr.free_symbols}
    # Where each dynamic size can be read again: (input node, dimension)
    size_sources = {str(primals[n_weights + k].meta["val"].shape[d]):
                    (primals[n_weights + k].name, d)
                    for k, dims in enumerate(input_dims) for d in dims}
    output = next(node for node in forward.graph.nodes if node.op == "output")
    activations: list[torch.fx.Node] = []
    for node in output.args[0][n_outputs:]:
        if node.name in role:
            continue
        if isinstance(node.meta.get("val"), torch.SymInt):
            # A size the backward needs: read it again from a tensor that has it, or make it
            # from an input's size.
            value = node.meta["val"]
            free = {str(symbol) for symbol in value.node.expr.free_symbols}
            if node.target == torch.ops.aten.sym_size.int and node.args[0].name in role:
                role[node.name] = ("size", (node.args[0].name, node.args[1]))
            elif free <= weight_symbols:   # made of the weights' widths: fixed when compiled
                role[node.name] = ("constant", int(value.node.hint))
            elif _linear_size(value, size_names) is not None:   # e.g. 3·atoms: a·size + b
                name, a, b = _linear_size(value, size_names)
                source = next(source for symbol, source in size_sources.items()
                              if size_names[symbol] == name)
                role[node.name] = ("linear", (source, a, b))
            else:
                raise RuntimeError(f"cannot export the saved size {node.name} ({node.target}, "
                                   f"{node.meta['val']}; inputs: {list(size_sources)})")
        else:
            role[node.name] = ("saved", len(activations))
            activations.append(node)
    # Other symbols than the inputs' dynamic sizes are the weights' widths: fixed when compiled.
    saved_dims = [{d: linear for d, size in enumerate(node.meta["val"].shape)
                   if (linear := _linear_size(size, size_names)) is not None}
                  for node in activations]
    output.args = ((*output.args[0][:n_outputs], *activations),)
    forward.graph.eliminate_dead_code()
    forward.recompile()
    n_inputs = len(inputs)

    def arrange_forward(graph, weights_, inputs_):
        return tuple(graph(*weights_, *inputs_))

    backward_inputs = _input_nodes(backward)
    wanted = [n_weights + k for k, grad in enumerate(differentiable) if grad]

    def arrange_backward(graph, weights_, inputs_):
        originals = inputs_[:n_inputs]
        saved = inputs_[n_inputs:len(inputs_) - n_outputs]
        tangents = iter(inputs_[len(inputs_) - n_outputs:])
        arguments = []
        for node in backward_inputs:
            if node.name.startswith("tangents"):
                arguments.append(next(tangents))
                continue
            kind, where = role[node.name]
            if kind == "weight":
                arguments.append(weights_[where])
            elif kind == "input":
                arguments.append(originals[where])
            elif kind == "saved":
                arguments.append(saved[where])
            elif kind == "constant":
                arguments.append(where)
            elif kind == "linear":
                (source, dim), a, b = where
                arguments.append(a * originals[role[source][1]].shape[dim] + b)
            else:
                source, dim = where
                source_kind, k = role[source]
                tensors = {"weight": weights_, "input": originals, "saved": saved}[source_kind]
                arguments.append(tensors[k].shape[dim])
        gradients = graph(*arguments)
        # An input a step does not read (a pair tensor of another layer) has no gradient: 0.
        return tuple(torch.zeros_like(inputs_[k - n_weights]) if gradients[k] is None
                     else gradients[k] for k in wanted)

    return (_Partitioned(forward, weights, arrange_forward),
            _Partitioned(backward, weights, arrange_backward), n_outputs, saved_dims)


def export_stages(potential: Potential, inputs: tuple[torch.Tensor, ...],
                  trace_module: Callable) -> dict[str, torch.export.ExportedProgram]:
    """The exported programs of every stage (see the module docstring), keyed by package name.

    ``inputs`` is the one-program package's example (pair_vec, species, pair_index, owned)."""
    pair_vec, species, pair_index, owned = inputs
    dims = {"atoms": torch.export.Dim("atoms", min=2), "pairs": torch.export.Dim("pairs", min=2)}
    programs = {}

    def export_halves(name, module, module_inputs, input_dims, differentiable):
        forward, backward, n_outputs, saved_dims = partition(module, module_inputs, input_dims,
                                                             differentiable)
        shapes = tuple({d: dims[n] for d, n in spec.items()} for spec in input_dims)
        programs[f"halo_{name}_forward"] = torch.export.export(
            forward, module_inputs, dynamic_shapes=(shapes,))
        with torch.no_grad():
            results = forward(*module_inputs)
        outputs, saved = results[:n_outputs], results[n_outputs:]
        saved_shapes = tuple({d: a * dims[n] + b if (a, b) != (1, 0) else dims[n]
                              for d, (n, a, b) in spec.items()} for spec in saved_dims)
        # An output's dynamic sizes are those equal to the example's atom or pair count.
        count_names = {len(species): dims["atoms"], pair_vec.shape[0]: dims["pairs"]}
        output_shapes = tuple({d: count_names[size] for d, size in enumerate(t.shape)
                               if size in count_names} for t in outputs)
        programs[f"halo_{name}_backward"] = torch.export.export(
            backward, (*module_inputs, *saved, *[torch.ones_like(t) for t in outputs]),
            dynamic_shapes=((*shapes, *saved_shapes, *output_shapes),))
        return outputs

    embed = _Embed(potential)
    programs["halo_embed"] = torch.export.export(embed, (species,),
                                                 dynamic_shapes=({0: dims["atoms"]},))
    with torch.no_grad():
        x = embed(species)
    edges = export_halves("edges", _Edges(potential), (pair_vec,), ({0: "pairs"},), (True,))
    edge_dims = tuple({0: "pairs"} for _ in edges)
    for t in range(potential.model.n_message_steps):
        (x,) = export_halves(f"step{t}", _Step(potential, t), (x, pair_index, *edges),
                             ({0: "atoms"}, {1: "pairs"}, *edge_dims),
                             (True, False, *[True] * len(edges)))
    readout = trace_module(_Readout(potential), (x, species, pair_vec, pair_index, owned))
    programs["halo_readout"] = torch.export.export(
        readout, (x, species, pair_vec, pair_index, owned),
        dynamic_shapes=(({0: dims["atoms"]}, {0: dims["atoms"]}, {0: dims["pairs"]},
                         {1: dims["pairs"]}, {0: dims["atoms"]}),))
    return programs


def stage_names(n_steps: int) -> list[str]:
    """The package names of the stages of a model with ``n_steps`` message steps."""
    halves = [f"halo_{part}_{half}" for part in ["edges", *[f"step{t}" for t in range(n_steps)]]
              for half in ("forward", "backward")]
    return ["halo_embed", *halves, "halo_readout"]


def run_stages(models: dict[str, Callable], n_steps: int, n_edges: int,
               pair_vec, species, pair_index, owned) -> tuple[torch.Tensor, torch.Tensor]:
    """The staged evaluation on one rank (no ghosts): energies [N] and ∂E/∂pair_vec [P, 3].

    What the pair style does, minus the exchanges; used to check compiled stages (``models``
    maps package names to callables, compiled or not; ``n_edges``: how many pair tensors
    ``edge_features`` gives)."""
    def run(name, *args):
        result = models[name](*args)
        return list(result) if isinstance(result, (list, tuple)) else [result]

    (x,) = run("halo_embed", species)
    results = run("halo_edges_forward", pair_vec)
    edges, edges_saved = results[:n_edges], results[n_edges:]
    step_inputs, saved = [], []
    for t in range(n_steps):
        x_next, *kept = run(f"halo_step{t}_forward", x, pair_index, *edges)
        step_inputs.append(x)
        saved.append(kept)
        x = x_next
    energies, gradient_x, gradient_pairs = run("halo_readout", x, species, pair_vec,
                                               pair_index, owned)
    gradient_edges = [torch.zeros_like(edge) for edge in edges]
    for t in reversed(range(n_steps)):
        gradient_x, *step_edges = run(f"halo_step{t}_backward", step_inputs[t], pair_index,
                                      *edges, *saved[t], gradient_x)
        gradient_edges = [total + step for total, step in zip(gradient_edges, step_edges)]
    (edge_pairs,) = run("halo_edges_backward", pair_vec, *edges_saved, *gradient_edges)
    return energies, gradient_pairs + edge_pairs
