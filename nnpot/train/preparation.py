"""The data a training run needs, before any model exists: the graph caches, the split
(validation fraction, explicit frames or a validation file), label checks, and the statistics
(per-element reference energies, energy scale and shift) the potential is built with."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..core.potential import Potential
from .config import ConfigError
from .data import GraphDataset, build_cache, split_indices
from .evaluate import batches
from .frames import DataError
from .statistics import fit_e0, isolated_atom_e0, scan_dataset


class DataPreparation:
    """The Trainer's first step (``prepare_data``, ``compute_statistics``)."""

    # ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        cfg = self.config.data
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else \
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nnpot" / "graphs"
        files = {"train": cfg.train, "validation": cfg.validation, "test": cfg.test}

        def build_all() -> dict:
            return {role: build_cache(path, self.config.model.cutoff, cfg.keys, cache_dir,
                                      cfg.neighbor_backend, self.config.training.progress)
                    for role, path in files.items() if path}

        # One process builds the caches; the others wait and read them (or stop with its error).
        caches = self.dist.run_on_main(build_all)
        if not self.dist.is_main:
            from .data import cache_path_for
            caches = {role: cache_path_for(path, self.config.model.cutoff, cfg.keys, cache_dir)
                      for role, path in files.items() if path}

        self.full_train = full = GraphDataset(caches["train"])
        if cfg.validation:
            self.train_set, self.val_set = full, GraphDataset(caches["validation"])
        elif cfg.validation_frames is not None:
            val_idx = np.unique(np.asarray(cfg.validation_frames, dtype=np.int64))
            if len(val_idx) != len(cfg.validation_frames) or val_idx[-1] >= len(full):
                raise ConfigError(f"data.validation_frames: {cfg.train} has {len(full)} frames "
                                  f"(0 … {len(full) - 1}); the list has repeats or indices "
                                  f"beyond that")
            if len(val_idx) == len(full):
                raise ConfigError("data.validation_frames names every frame of the training "
                                  "file: none is left to train on")
            self.train_set = full.subset(np.setdiff1d(np.arange(len(full)), val_idx))
            self.val_set = full.subset(val_idx)
        elif cfg.validation_fraction > 0:
            groups = list(full.arrays("group")) if cfg.stratify else None
            split_seed = self.config.seed if cfg.split_seed is None else cfg.split_seed
            train_idx, val_idx = split_indices(len(full), cfg.validation_fraction, split_seed,
                                               groups)
            self.train_set, self.val_set = full.subset(train_idx), full.subset(val_idx)
            if groups is not None:
                taken = {}
                for k in val_idx:
                    taken[groups[k]] = taken.get(groups[k], 0) + 1
                sizes = {g: groups.count(g) for g in dict.fromkeys(groups)}
                self._log("stratified validation split (group: validation/frames): " + ", ".join(
                    f"{g or '(none)'}: {taken.get(g, 0)}/{n}" for g, n in sizes.items()))
        else:
            self.train_set, self.val_set = full, None
        self.test_set = GraphDataset(caches["test"]) if cfg.test else None
        self._check_labels()

    def _check_labels(self) -> None:
        loss = self.config.training.loss
        keys = self.config.data.keys
        has_forces = self.train_set.arrays("has_forces")[self.train_set.indices]
        if loss.forces > 0 and not has_forces.any():
            raise DataError(f"{self.train_set.source}: no training frame has forces under the key "
                            f"{keys.forces!r}; keys of frame 0: {self.train_set.frame0_keys} "
                            f"(set data.keys.forces, or training.loss.forces: 0)")

    def compute_statistics(self) -> None:
        """Species, E0 and the force scale, streamed over the cache (see ``scan_dataset``)."""
        scan = scan_dataset(self.train_set)
        self.species = scan.species
        for other in (self.val_set, self.test_set):
            if other is None:
                continue
            extra = sorted(set(scan_dataset(other).species) - set(self.species))
            if extra:
                raise DataError(f"{other.source}: element(s) {extra} do not occur in the training "
                                f"frames (training species: {self.species})")
        energies = self.train_set.arrays("energy")
        e0_setting = self.config.data.e0
        if isinstance(e0_setting, dict):
            missing = [s for s in self.species if s not in e0_setting]
            if missing:
                raise ConfigError(f"data.e0 gives no value for {missing}")
            self.e0 = {s: float(e0_setting[s]) for s in self.species}
        elif e0_setting == "isolated_atoms":  # single-atom frames may sit on either side of a split
            try:
                self.e0 = isolated_atom_e0(scan_dataset(self.full_train), energies, self.species)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        else:
            self.e0 = fit_e0(scan.counts, energies[scan.frames], self.species)
        if (self.config.training.loss.forces > 0 and scan.force_components > 0
                and scan.max_abs_force == 0.0):
            raise DataError(f"{self.train_set.source}: every force label under the key "
                            f"{self.config.data.keys.forces!r} is exactly 0 in the training frames "
                            f"— nothing to learn from them (a wrong key, or forces not written?); "
                            f"fix the data or set training.loss.forces: 0")
        self.scale = scan.force_rms
        self.shift = 0.0

    def _model_inputs(self, potential: Potential):
        """The training set as the models' inputs (species, pair_index, pair_vec), float64 on
        the CPU, batch by batch (streamed from the cache)."""
        for batch in batches(self.train_set, 16):
            with torch.no_grad():
                yield potential.model_inputs(batch, torch.float64)
