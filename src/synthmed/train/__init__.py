"""The one trainer: see :mod:`synthmed.train.trainer`."""
