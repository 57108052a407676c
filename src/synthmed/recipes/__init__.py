"""Recipes by name: ``get_recipe("unconditional")``; see :mod:`synthmed.recipes.base` for the interface."""

from __future__ import annotations

from typing import Any

from synthmed.data.dataset import DataInfo
from synthmed.recipes.anomaly import AnomalyGAN  # noqa: F401 (registers anomaly)
from synthmed.recipes.bagan import BAGAN, BAGANGP  # noqa: F401 (registers bagan and bagan-gp)
from synthmed.recipes.base import (
    RECIPES,
    ConditionalGenerativeRecipe,
    GenerativeRecipe,
    Phase,
    Preview,
    Recipe,
    RecordsRecipe,
    SegmentationRecipe,
    TranslationRecipe,
    config_to_dict,
    get_recipe,
    make_config,
    register_recipe,
)
from synthmed.recipes.conditional import ACGAN, ConditionalGAN, ConditionalWGANGP  # noqa: F401 (registers them)
from synthmed.recipes.medgan import MedGAN  # noqa: F401 (registers medgan)
from synthmed.recipes.segmentation import Pix2PixSeg, SegAN, UNet  # noqa: F401 (registers unet, segan, pix2pix-seg)
from synthmed.recipes.step import StepContext, frozen
from synthmed.recipes.translation import CycleGAN, Pix2Pix  # noqa: F401 (registers pix2pix and cyclegan)
from synthmed.recipes.unconditional import UnconditionalConfig, UnconditionalGAN


def build_recipe(name: str, options: dict[str, Any] | Any, data_info: DataInfo, ema_beta: float = 0.0) -> Recipe:
    """Construct recipe ``name`` for data described by ``data_info`` from its ``options`` (a plain dict, checked and
    converted by :func:`make_config`, or the recipe's config object already built)."""
    cls = get_recipe(name)
    recipe = cls(make_config(cls, options) if isinstance(options, dict) else options, data_info)
    recipe.add_ema_copies(ema_beta)
    return recipe


__all__ = [
    "RECIPES",
    "ConditionalGenerativeRecipe",
    "GenerativeRecipe",
    "Phase",
    "Preview",
    "Recipe",
    "RecordsRecipe",
    "SegmentationRecipe",
    "StepContext",
    "TranslationRecipe",
    "UnconditionalConfig",
    "UnconditionalGAN",
    "build_recipe",
    "config_to_dict",
    "frozen",
    "get_recipe",
    "make_config",
    "register_recipe",
]
