"""2-D convolution and pooling for PyTensor, with Theano's semantics and gradients.

    from deeplearning_tutorial.ops import conv2d, pool_2d

They run in every PyTensor mode: the default NUMBA mode (which calls the
kernels from the graph's compiled function), the C VM mode "CVM" and the
Python mode (which call them from the Ops' ``perform``).  The kernels are C,
compiled when the package is installed (:mod:`deeplearning_tutorial.ops.kernels`).
Where JAX is installed, the JAX mode runs them as XLA operations
(:mod:`deeplearning_tutorial.ops.jax_dispatch`).  Importing this package also gives the NUMBA backend a vectorisable float32 ``tanh``
(:mod:`deeplearning_tutorial.ops.numba_tanh`), and gives the BLAS that Numba
calls a single thread, since the convolutions parallelise over images
themselves (:mod:`deeplearning_tutorial.ops.blas_threads`); large matrix
products are split over Numba's threads instead
(:mod:`deeplearning_tutorial.ops.numba_dot`).
"""

import importlib.util

from deeplearning_tutorial.ops import blas_threads, numba_dispatch, numba_dot, numba_tanh  # noqa: F401  (register the Numba backend)
from deeplearning_tutorial.ops.conv import Corr2d, Corr2dGradInputs, Corr2dGradWeights, conv2d
from deeplearning_tutorial.ops.pool import AveragePoolGrad, MaxPoolGrad, Pool, pool_2d

blas_threads.limit_numba_blas_threads()

if importlib.util.find_spec("jax") is not None:
    from deeplearning_tutorial.ops import jax_dispatch  # noqa: F401  (register the JAX backend)

__all__ = ["conv2d", "pool_2d", "Corr2d", "Corr2dGradWeights", "Corr2dGradInputs",
           "Pool", "MaxPoolGrad", "AveragePoolGrad"]
