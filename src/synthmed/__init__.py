"""synthmed: generative adversarial networks for medical data.

The data flows ``data -> recipe -> trainer -> run directory -> metrics / viz``; see ``docs/architecture.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from synthmed.api import TrainedModel, explore, load, sample, train  # noqa: E402
from synthmed.errors import ConfigError, DataError, SynthmedError  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "SynthmedError",
    "TrainedModel",
    "__version__",
    "explore",
    "load",
    "sample",
    "train",
]
