"""Scores during training, to keep the best checkpoint rather than the last one.

Two evaluators share one interface (``score``, ``record``, ``restore``, ``summary``) used by
:class:`~synthmed.training.periodic.EvaluateAndKeepBest`: :class:`PeriodicFID` for recipes that generate images,
and :class:`PeriodicValidation` for recipes with their own score on the validation split (segmentation Dice).

GANs often get worse with more training (StudioGAN's logs show DCGAN at its best FID at 42k steps and 3x worse
by 200k), so the trainer can score the EMA generator every ``eval_every`` steps against the real training
images in a named feature space and keep ``checkpoints/best.*``. Sampling and feature extraction use their own
random generators, so evaluating never changes the training trajectory (exact resume still holds).
"""

from __future__ import annotations

import abc
import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from synthmed.errors import ConfigError
from synthmed.recipes.base import GenerativeRecipe, Recipe

BEST_STEM = "best"


class _KeepsBest(abc.ABC):
    """What both evaluators share: ``eval.csv`` rows, the best value so far, and its recovery after a resume.

    Subclasses set ``best_value`` to the worst possible value, say whether higher is better and give the CSV's
    columns and each row's extra cells.
    """

    higher_is_better = False
    best_value: float
    best_step: int | None

    @abc.abstractmethod
    def _columns(self) -> list[str]:
        """The CSV's columns after ``step``: the score's name first."""

    @abc.abstractmethod
    def _cells(self) -> list[object]:
        """A row's cells after the step and the score (sample counts)."""

    def _better(self, value: float) -> bool:
        return bool(np.isfinite(value) and (value > self.best_value if self.higher_is_better
                                            else value < self.best_value))

    def record(self, run_dir: Path, step: int, value: float) -> bool:
        """Append to ``eval.csv``; True when ``value`` is the best so far (ties keep the earlier step)."""
        path = run_dir / "eval.csv"
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["step", *self._columns()])
            writer.writerow([step, repr(value), *self._cells()])
        improved = self._better(value)
        if improved:
            self.best_value, self.best_step = value, step
        return improved

    def restore(self, run_dir: Path, up_to_step: int) -> None:
        """After a resume: drop rows past the checkpoint, recover the best value so far, and drop a ``best.*``
        saved after the checkpoint (training from there is being redone)."""
        from synthmed.io import truncate_csv_after_step

        path = run_dir / "eval.csv"
        if path.exists():
            for row in truncate_csv_after_step(path, up_to_step):
                step, value = int(row[0]), float(row[1])
                if self._better(value):
                    self.best_value, self.best_step = value, step
        _drop_stale_best(run_dir, up_to_step, self.best_step)


class PeriodicFID(_KeepsBest):
    """Scores a generative recipe with FID against fixed real features; remembers the best step."""

    def __init__(self, recipe: Recipe, real_images: torch.Tensor, features: str, samples: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        from synthmed.metrics.features import get_extractor

        if not isinstance(recipe, GenerativeRecipe):
            raise ConfigError(f"--eval-every needs a recipe that samples images; {recipe.name!r} does not")
        if features == "domain":
            raise ConfigError("training-time evaluation uses weight-free features (radiomics) or inception; the "
                              "domain network would first have to be trained")
        self.features = features
        self.samples = samples
        self.seed = seed
        # The trainer's device: features (and so which checkpoint is "best") must not depend on what else the
        # machine has.
        kwargs: dict[str, object] = {"device": device}
        if features == "radiomics":
            kwargs["channels"] = real_images.shape[1]
        self.extractor = get_extractor(features, **kwargs)
        real = real_images.detach().float().cpu()
        if features == "radiomics":
            self.real_features = self.extractor.fit_standardizer(  # type: ignore[attr-defined]
                self.extractor.extract(real, raw=True))  # type: ignore[call-arg]
        else:
            self.real_features = self.extractor.extract(real)
        self.best_value = float("inf")
        self.best_step: int | None = None

    def score(self, recipe: GenerativeRecipe) -> float:
        from synthmed.metrics.fidelity import fid

        recipe.refresh_sampling_statistics()
        images = recipe.sample(self.samples, seed=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the sample-size caveat is stated once in metrics.json
            return fid(self.real_features, self.extractor.extract(images), method="eigh")

    def _columns(self) -> list[str]:
        return [f"fid_{self.features}", "n_fake", "n_real"]

    def _cells(self) -> list[object]:
        return [self.samples, len(self.real_features)]

    def summary(self) -> dict[str, object]:
        from synthmed.metrics.stats import sample_size_warning

        described = {k: v for k, v in self.extractor.describe().items() if k not in ("standardizer", "features")}
        return {
            "metric": "fid",
            "features": described["name"],
            "extractor": described,
            "warning": sample_size_warning(min(self.samples, len(self.real_features)), self.extractor.dim),
            "n_fake": self.samples,
            "n_real": len(self.real_features),
            "best_step": self.best_step,
            "best_value": None if self.best_step is None else self.best_value,
            "checkpoint": f"checkpoints/{BEST_STEM}.json" if self.best_step is not None else None,
            "note": "FID of the EMA generator against the real training images, computed during training",
        }


class PeriodicValidation(_KeepsBest):
    """Scores a recipe on the validation split with its own :meth:`~synthmed.recipes.base.Recipe.validation_score`
    (higher is better); remembers the best step. The test split is never loaded here.

    Args:
        recipe: a recipe whose ``validation_metric`` is set.
        data: the validation split, loaded with the run's data options.
    """

    higher_is_better = True

    def __init__(self, recipe: Recipe, data: object) -> None:
        if not recipe.validation_metric:
            raise ConfigError(f"recipe {recipe.name!r} has no validation score")
        self.metric = str(recipe.validation_metric)
        self.data = data
        self.best_value = float("-inf")
        self.best_step: int | None = None

    def score(self, recipe: Recipe) -> float:
        return float(recipe.validation_score(self.data))  # type: ignore[arg-type]

    def _columns(self) -> list[str]:
        return [self.metric, "n_val"]

    def _cells(self) -> list[object]:
        return [len(self.data)]  # type: ignore[arg-type]

    def summary(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "split": "val",
            "n_val": len(self.data),  # type: ignore[arg-type]
            "best_step": self.best_step,
            "best_value": None if self.best_step is None else self.best_value,
            "checkpoint": f"checkpoints/{BEST_STEM}.json" if self.best_step is not None else None,
            "note": "the recipe's score on the validation split, computed during training; the best step's "
                    "checkpoint is kept as best.*",
        }


def _drop_stale_best(run_dir: Path, up_to_step: int, best_step: int | None) -> None:
    """Remove a ``best.*`` saved after the resumed checkpoint (training from there is being redone)."""
    import json

    best = run_dir / "checkpoints" / f"{BEST_STEM}.json"
    if not best.exists():
        return
    try:
        step = int(json.loads(best.read_text(encoding="utf-8"))["step"])
    except (ValueError, KeyError):
        step = up_to_step + 1
    if step > up_to_step or step != best_step:
        best.unlink()
        best.with_suffix(".safetensors").unlink(missing_ok=True)


def copy_as_best(checkpoint_json: Path) -> Path:
    """Copy a ``step_*.json`` checkpoint (and its weights) to ``best.*``: protected from pruning."""
    import json

    from synthmed.io import atomic_write, atomic_write_text

    directory = checkpoint_json.parent
    weights = directory / f"{BEST_STEM}.safetensors"
    atomic_write(weights, lambda tmp: shutil.copyfile(checkpoint_json.with_suffix(".safetensors"), tmp))
    record = json.loads(checkpoint_json.read_text(encoding="utf-8"))
    record["weights"] = weights.name
    target = directory / f"{BEST_STEM}.json"
    atomic_write_text(target, json.dumps(record, indent=1, sort_keys=True))
    return target
