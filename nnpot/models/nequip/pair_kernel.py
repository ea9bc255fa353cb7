"""The fused CPU kernel of NequIP's message sum (pair_kernel.cpp), and when to use it.

``PairMessages`` is the sum over both directions of every pair that
``pair_tensor_product.pair_messages`` computes with gathers, batched products and scatters
(same numbers: tests compare them in float64), in one pass over the pairs and, for the
gradient, one more. It is compiled with torch's C++ extension tools at the first
call on the CPU (about 20 s, once: torch caches the library under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) and used when

* the tensors are plain CPU tensors (not on CUDA, not traced by ``make_fx`` or
  ``torch.compile``: the LAMMPS export traces the torch path);
* ``NNPOT_PAIR_KERNEL`` is not ``0``;
* the compilation worked (otherwise a warning says why, once, and the torch path is used).

Its backward is fused too, for forces and stress. A second derivative (forces in a training
loss) goes through the torch formulas instead, so training gets the same numbers and the
same graph as without the kernel.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("pair_kernel.cpp")
_module = None          # the compiled operators (torch.ops.<name>), once loaded
_failed: str | None = None  # why it could not be built (then never tried again)


def _build_options() -> tuple[str, list[str]]:
    """The extension's name and compiler flags. ``-march=native`` (AVX2/AVX-512 where the
    CPU has them: l_max = 2 about 20 % faster on an AVX2 machine) makes a library for this
    CPU only, so the name carries a digest of the CPU's flags and the source: a cache shared
    by different machines (a cluster's home directory) keeps one build per kind of CPU."""
    flags = ["-O3", "-fopenmp-simd"]
    cpu = ""
    if platform.machine() in ("x86_64", "AMD64") and Path("/proc/cpuinfo").is_file():
        flags.append("-march=native")
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("flags")), "")
    digest = hashlib.sha1((cpu + " ".join(flags)).encode() + _SOURCE.read_bytes()).hexdigest()
    return f"nnpot_pair_kernel_{digest[:12]}", flags


def _load():
    """The compiled extension, or None (with the reason in ``_failed``)."""
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    try:
        from torch.utils import cpp_extension
        name, flags = _build_options()
        try:  # where torch keeps it (a private helper: guard it)
            built = Path(cpp_extension._get_build_directory(name, False))
        except Exception:
            built = Path(cpp_extension.get_default_build_root())
        if not any(built.glob(f"{name}*.so")):
            print("nnpot: compiling the CPU kernel of the NequIP messages (about 20 s, "
                  f"once; cached in {built})", file=sys.stderr, flush=True)
        cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=flags,
                           is_python_module=False, verbose=False)
        _module = getattr(torch.ops, name)  # the operators the library registered
    except Exception as error:  # no compiler, no ninja, a read-only cache…: fall back
        lines = str(error).strip().splitlines()
        _failed = f"{type(error).__name__}: {lines[-1] if lines else ''}"
        warnings.warn(f"nnpot: the fused CPU kernel of the NequIP messages could not be built "
                      f"({_failed}); using the torch formulas (correct, slower). Set "
                      f"NNPOT_PAIR_KERNEL=0 to skip the attempt.", RuntimeWarning, stacklevel=3)
    return _module


def kernel_applies(*tensors: torch.Tensor) -> bool:
    """Whether ``PairMessages`` can run on these tensors (see the module docstring)."""
    if os.environ.get("NNPOT_PAIR_KERNEL", "1") == "0" or torch.compiler.is_compiling():
        return False
    if _dispatch_mode() is not None:  # make_fx (even of real tensors) would not see the call
        return False
    if any(type(t) is not torch.Tensor or t.device.type != "cpu"
           or t.dtype not in (torch.float32, torch.float64, torch.int64) for t in tensors):
        return False
    return _load() is not None


def _dispatch_mode():
    """The active Python dispatch mode (tracing, fake tensors), or None."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover - a torch without it: rely on the other checks
        return None
    return _get_current_dispatch_mode()


class PairMessages(torch.autograd.Function):
    """The kernel with its fused backward: x [N, rows, u], couplings [P, columns, rows],
    weights [P, paths, u] (one per path, not per column), first and second [P], the parities
    [rows] and [columns] → [N, columns, u]. ``column_rows`` [columns, 2]: the rows
    [begin, end) of the input irrep each output column couples to (the couplings' other
    entries are zero and not read); ``column_path`` [columns]: the path of each column.
    ``reference(x, couplings, weights, first, second, row_parity, column_parity)`` (the torch
    formulas) gives the second derivative, when the backward must be differentiable."""

    @staticmethod
    def forward(ctx, x, couplings, weights, first, second, row_parity, column_parity,
                column_rows, column_path, reference: Callable):
        ctx.save_for_backward(x, couplings, weights, first, second, row_parity, column_parity,
                              column_rows, column_path)
        ctx.reference = reference
        return _module.pair_messages(x, couplings, weights, first, second, row_parity,
                                     column_parity, column_rows, column_path)

    @staticmethod
    def backward(ctx, grad):
        (x, couplings, weights, first, second, row_parity, column_parity, column_rows,
         column_path) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the torch formulas
            # on aliases: a gradient with respect to the tensors themselves would add the
            # paths through their history (the couplings, shared by layers, and the weights,
            # made from the shared radial basis, also reach x through the layers before),
            # not only this product's partial derivatives
            with torch.enable_grad():
                aliases = [t.view_as(t) for t in (x, couplings, weights)]
                inputs = [t for t, need in zip(aliases, ctx.needs_input_grad[:3]) if need]
                out = ctx.reference(*aliases, first, second, row_parity, column_parity)
                grads = iter(torch.autograd.grad(out, inputs, grad, create_graph=True))
            gradients = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
        else:
            gradients = _module.pair_messages_backward(grad.contiguous(), x, couplings, weights,
                                                   first, second, row_parity, column_parity,
                                                   column_rows, column_path)
        return (*gradients, None, None, None, None, None, None, None)
