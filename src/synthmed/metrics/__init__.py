"""Evaluation: metrics on feature arrays, feature extractors chosen by name, and the protocol on top.

* :mod:`.fidelity`: FID, KID, Inception Score, precision/recall/density/coverage.
* :mod:`.diversity`: MS-SSIM within a set (mode collapse shows as a high value).
* :mod:`.memorisation`: nearest training images of synthetic images, copy fractions, closest pairs.
* :mod:`.features`: ``inception``, ``domain`` and ``radiomics`` feature spaces.
* :mod:`.evaluate`: ``synthmed evaluate`` (``metrics.json`` + a Markdown report with pictures).
"""

from synthmed.metrics.diversity import ms_ssim, ms_ssim_diversity
from synthmed.metrics.evaluate import EvaluationResult, evaluate
from synthmed.metrics.features import EXTRACTORS, FeatureExtractor, get_extractor
from synthmed.metrics.fidelity import fid, frechet_distance, inception_score, kid, prdc
from synthmed.metrics.memorisation import memorisation, nearest_neighbours
from synthmed.metrics.stats import MetricValue, bootstrap_interval

__all__ = [
    "EXTRACTORS",
    "EvaluationResult",
    "FeatureExtractor",
    "MetricValue",
    "bootstrap_interval",
    "evaluate",
    "fid",
    "frechet_distance",
    "get_extractor",
    "inception_score",
    "kid",
    "memorisation",
    "ms_ssim",
    "ms_ssim_diversity",
    "nearest_neighbours",
    "prdc",
]
