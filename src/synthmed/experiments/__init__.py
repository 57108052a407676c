"""Experiments built on the toolkit: whole studies with their statistics, written as one folder of results."""

from synthmed.experiments.augmentation import (
    ARM_TEMPLATES,
    AugmentationResult,
    plan_arms,
    run_augmentation_experiment,
    synthetic_counts,
)

__all__ = ["ARM_TEMPLATES", "AugmentationResult", "plan_arms", "run_augmentation_experiment", "synthetic_counts"]
