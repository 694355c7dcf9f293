"""Theano's ``theano.tensor.signal``: ``pool`` and ``downsample`` are the package's
:mod:`deeplearning_tutorial.ops.pool` and :mod:`deeplearning_tutorial.ops.downsample`."""

import sys

from deeplearning_tutorial.ops import downsample, pool

# `from ...signal.pool import pool_2d` finds the package's modules under these names
sys.modules[f"{__name__}.pool"] = pool
sys.modules[f"{__name__}.downsample"] = downsample

__all__ = ["downsample", "pool"]
