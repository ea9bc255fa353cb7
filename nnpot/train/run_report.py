"""What a training run reports: its log lines, the provenance in its model files, and at the end
the evaluation, plots, metrics.json and model card of the kept model."""

from __future__ import annotations

import json

import torch
from tqdm import tqdm

from ..core.committee import members_of
from ..core.files import atomic_write_text
from ..core.model_file import load
from . import report
from .config import ConfigError
from .evaluate import evaluate


class Reporting:
    """The Trainer's log, the provenance stored in its model files, and the finish: evaluation,
    plots, metrics.json and the model card."""

    def _log(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message)

    def _provenance(self) -> dict:
        provenance = {"config": self.config.to_dict(), "train_sha256": self.train_set.sha256,
                      "train_file": self.train_set.source, "best_epoch": self.best_epoch,
                      "n_train_frames": len(self.train_set),
                      "n_validation_frames": len(self.val_set) if self.val_set else 0,
                      "training": self._training_summary()}
        if self.start_provenance is not None:  # the chain of runs that made this model
            provenance["init_from"] = {"file": self.config.model.init_from,
                                       "provenance": self.start_provenance}
        if self.joined_provenance:  # the runs whose members join this one's
            provenance["committee_with"] = self.joined_provenance
        return provenance

    def _training_summary(self) -> dict:
        return {"epochs": self.epoch, "time_min": self.elapsed / 60,
                "threads": self.config.training.threads, "processes": self.dist.world,
                "device": str(self.device), "segments": self._segments()}

    def _segments(self) -> list[dict]:
        """Where the epochs ran, oldest first: ``{"device", "processes", "threads", "cpu",
        "epochs": [first, last]}`` per stretch of one setting (``cpu``: the vector instructions
        torch's CPU kernels use, e.g. "AVX2" or "AVX512"; float32 rounds differently on each,
        so a run is bitwise repeatable only where they match). A run resumed on another device
        (a GPU run finished on CPU) keeps both; resumes on the same setting join into one."""
        segments = [dict(s, epochs=list(s["epochs"])) for s in self.segments_before]
        first, last = self.segment_first_epoch, self.epoch
        if last >= first:
            here = {"device": str(self.device), "processes": self.dist.world,
                    "threads": self.config.training.threads,
                    "cpu": torch.backends.cpu.get_cpu_capability(), "epochs": [first, last]}
            before = segments[-1] if segments else None
            if before and all(before.get(k) == value for k, value in here.items()
                              if k != "epochs") and before["epochs"][1] == first - 1:
                before["epochs"][1] = last
            else:
                segments.append(here)
        return segments

    def finish(self) -> None:
        """Evaluate the best model; write plots, metrics.json and the model card."""
        self._log(f"stopped: {self.stop_reason}; kept the {self.config.training.keep_epoch} "
                  f"epoch, {self.best_epoch}")
        if self.best_state is None:  # no epoch ran (a budget already spent)
            raise ConfigError(f"{self.out}: the run stopped ({self.stop_reason}) before any "
                              f"epoch was trained, so there is no model to save; raise "
                              f"training.max_epochs or training.max_time_min")
        if self.config.model.snapshot_committee or self.config.model.committee_with:
            self._save_joined_committee()
        best = load(self.best_path, device=self.device)
        results = {}
        sets = [("validation", self.val_set), ("test", self.test_set)]
        if self.val_set is None and self.test_set is None:
            # a fit on every frame: its error on them is all there is to show here (the
            # card says it measures the fit, not generalisation; that is `nnpot cv`'s job)
            sets = [("train", self.train_set)]
        for name, dataset in sets:
            if dataset is None:
                continue
            metrics, values = evaluate(best, dataset, self.config.training.batch_size, self.device,
                                       keep_values=True)
            summary = metrics.summary()
            results[name] = {"frames": len(dataset), "metrics": summary}
            report.plot_parity(values, summary, self.out / f"parity_{name}.png",
                               f"{self.config.model.type} — {name} set")
        if self.history:
            report.plot_learning_curves(self.history, self.out / "learning_curves.png")
        atomic_write_text(self.out / "metrics.json", json.dumps(results, indent=1, ensure_ascii=False))
        best.provenance["metrics"] = {k: v["metrics"] for k, v in results.items()}
        best.provenance["training"] = self._training_summary()  # the whole run, not to best
        best.save(self.best_path)
        data = {}
        for role, dataset in (("train", self.train_set), ("validation", self.val_set),
                              ("test", self.test_set)):
            if dataset is not None:
                ptr = dataset.atom_ptr
                data[role] = {"file": dataset.source, "sha256": dataset.sha256,
                              "frames": len(dataset),
                              "atoms": int(sum(ptr[k + 1] - ptr[k] for k in dataset.indices))}
        report.write_model_card(
            self.out / "model_card.md", config=self.config.to_dict(), data=data,
            statistics={"species": self.species, "e0": self.e0, "scale": self.scale,
                        "shift": self.shift,
                        "n_parameters": sum(p.numel() for p in best.parameters()),
                        "members": len(members_of(best))},
            results=results,
            training={"epochs": self.epoch, "time_min": self.elapsed / 60,
                      "stop_reason": self.stop_reason, "best_epoch": self.best_epoch})
        self._log(report.metrics_table(results))
        self._log(f"wrote {self.best_path}, {self.out / 'model_card.md'} and plots in {self.out}")
