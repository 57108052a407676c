"""The one trainer: see :mod:`synthmed.training.trainer`."""
