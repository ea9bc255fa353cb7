"""The core: from a structure to energies, forces and stress.

Bottom to top: ``neighbors`` (the half pair list) and ``structure_checks`` (what physics
allows), ``graph`` (an ``AtomicGraph`` of a structure), ``geometry`` (the derivative machinery:
forces and stress by autograd), ``potential`` (a model plus its energy scale, reference
energies and pair repulsion), ``committee``, ``model_file`` (the file format and ``load``) and
``calculator`` (ASE). ``files``, ``devices`` and ``allocator`` are the utilities under them.
Only ``nnpot.models`` lies below this package.
"""
