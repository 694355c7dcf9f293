"""2-D convolution and pooling for PyTensor, with Theano's semantics and gradients.

    from deeplearning_tutorial.ops import conv2d, pool_2d

The package has one place per job:

- the Ops and the functions that build them, Theano's modules by name:
  ``conv`` (``conv2d``), ``pool`` (``pool_2d``), ``downsample`` (Theano
  0.7's ``max_pool_2d``), ``pool_kinds`` (L2 and stochastic pooling) and
  ``normalization`` (local contrast normalization);
- ``dynamic_slice`` (a slice of a fixed length at a start known at run
  time) and ``jax_rewriting``, the graph rewrites of the JAX mode that use
  it, so that graphs with minibatch slices compile in JAX (registered on
  import under the tag ``"jax"``, which only the JAX mode includes);
- ``kernels``: the arithmetic, as functions of NumPy arrays (C in
  ``kernels/csrc``, compiled when the package is installed; while a kernel
  runs, the BLAS it calls is single-threaded, ``kernels.blas_threads``);
- ``link.<backend>.dispatch``: the Ops' implementations for PyTensor's
  backends, as in PyTensor's own ``pytensor.link``.  The default NUMBA mode
  calls the kernels from the graph's compiled function; the C VM mode "CVM"
  and the Python mode call them from the Ops' ``perform``; where JAX is
  installed, the JAX mode runs them as XLA operations.

Importing this package changes nothing outside the graphs that use these
Ops: it registers their implementations with PyTensor's backends, and where
JAX is installed but PyTensor's JAX backend not yet imported, it places a
one-shot import hook first on ``sys.meta_path`` that registers the JAX
implementations when that backend is imported, then removes itself (so that
programs which never use JAX never import it).  The opt-in speed-ups for the
rest of such graphs are in :mod:`deeplearning_tutorial.speedups`.
"""

import importlib.abc
import importlib.util
import sys

from deeplearning_tutorial.ops.conv import Corr2d, Corr2dGradInputs, Corr2dGradWeights, conv2d
from deeplearning_tutorial.ops.downsample import max_pool_2d
from deeplearning_tutorial.ops.dynamic_slice import DynamicSlice
from deeplearning_tutorial.ops.jax_rewriting import local_constant_length_slice  # noqa: F401  (registers them)
from deeplearning_tutorial.ops.link.numba import dispatch as _numba_dispatch  # noqa: F401  (registers the NUMBA backend)
from deeplearning_tutorial.ops.normalization import local_contrast_normalization
from deeplearning_tutorial.ops.pool import AveragePoolGrad, L2PoolGrad, MaxPoolGrad, MaxPoolGradGrad, Pool, pool_2d
from deeplearning_tutorial.ops.pool_kinds import (
    StochasticPool,
    StochasticPoolGrad,
    WeightedAveragePool,
    WeightedAveragePoolGrad,
    stochastic_pool_2d,
)

_PYTENSOR_JAX_DISPATCH = "pytensor.link.jax.dispatch"


class _RegisterJaxBackendOnImport(importlib.abc.MetaPathFinder):
    """Registers the JAX implementations (``link/jax/dispatch.py``) right after PyTensor's
    JAX backend is imported, so that programs which never use JAX do not import it."""

    def find_spec(self, name, path, target=None):
        if name != _PYTENSOR_JAX_DISPATCH:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            importlib.import_module("deeplearning_tutorial.ops.link.jax.dispatch")

        spec.loader.exec_module = exec_module  # this module's own loader instance
        return spec


if _PYTENSOR_JAX_DISPATCH in sys.modules:
    importlib.import_module("deeplearning_tutorial.ops.link.jax.dispatch")
elif importlib.util.find_spec("jax") is not None:
    sys.meta_path.insert(0, _RegisterJaxBackendOnImport())

__all__ = ["conv2d", "pool_2d", "max_pool_2d", "stochastic_pool_2d", "local_contrast_normalization",
           "Corr2d", "Corr2dGradWeights", "Corr2dGradInputs", "Pool", "MaxPoolGrad", "MaxPoolGradGrad",
           "AveragePoolGrad", "L2PoolGrad", "StochasticPool", "StochasticPoolGrad", "WeightedAveragePool",
           "WeightedAveragePoolGrad", "DynamicSlice"]
