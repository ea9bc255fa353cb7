"""Where CPU buffers come from (nnpot.core.allocator): the heap is kept while small, and large
buffers go back to the system once it is large. Each case runs in a fresh interpreter, since the
allocator's settings are process-wide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nnpot.core import allocator

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc's allocator (2.33+)")

PROBE = r"""
import os
assert "THP_MEM_ALLOC_ENABLE" not in os.environ
import nnpot
from nnpot.core import allocator
import torch

assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"   # set before torch's first allocation

def rss_mib():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

def freed_mib():
    buffer = torch.ones(64 * 2**20 // 4)             # 64 MiB, above glibc's largest threshold
    before = rss_mib()
    del buffer
    return before - rss_mib()

assert allocator.policy() == "untouched"
assert allocator.keep_buffers_in_heap() and allocator.policy() == "keep"
assert freed_mib() < 8                                 # kept in the heap for the next call
assert allocator.heap_bytes() >= 64 * 2**20
assert not allocator.release_large_buffers_if_heap_is_large(fraction=0.9)
assert allocator.policy() == "keep"
assert allocator.release_large_buffers_if_heap_is_large(fraction=1e-6)
assert allocator.policy() == "release"
assert not allocator.release_large_buffers_if_heap_is_large(fraction=1e-6)  # once
assert freed_mib() > 56                                # handed back on free
print("ok")
"""


@glibc
def test_the_heap_is_kept_while_small_and_large_buffers_go_back_once_it_is_large():
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@glibc
def test_the_calculator_switches_to_releasing_buffers_past_the_heap_limit():
    code = r"""
from ase.build import bulk
from nnpot import NNPCalculator
from nnpot.core import allocator
from nnpot.models import SchNet
from nnpot.core.potential import Potential
allocator.HEAP_FRACTION = 0.0    # any heap is large: the first call switches
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
atoms.calc = NNPCalculator(Potential(SchNet(["Cu"], n_features=8, n_rbf=8)))
first = atoms.get_forces().copy()
print(allocator.policy())
atoms.calc.reset()
assert (atoms.get_forces() == first).all()   # the same numbers after the switch
"""
    env = {key: value for key, value in os.environ.items() if key != "NNPOT_KEEP_MALLOC"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "release"
