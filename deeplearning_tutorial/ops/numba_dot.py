"""Matrix products on all of Numba's threads, for PyTensor's Numba backend.

Importing :mod:`deeplearning_tutorial.ops` gives the BLAS that Numba calls a
single thread (:mod:`deeplearning_tutorial.ops.blas_threads`), which would
leave PyTensor's own ``Dot`` nodes (LeNet's hidden layer, or any product in
your graph) on one core.  This registers, for ``Dot`` nodes whose operands
and result share a float32 or float64 dtype, a product that splits the
larger dimension of the result into one block per thread, each block one
single-threaded BLAS call writing into its slice of the result, on the same
thread pool as the convolutions.  Products under ``PARALLEL_MIN``
multiply-adds, other dtypes and single-threaded runs keep PyTensor's
implementation.  Importing :mod:`deeplearning_tutorial.ops` registers it for
every graph compiled afterwards in the process.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from pytensor.link.numba.dispatch.basic import (
    numba_funcify_and_cache_key,
    numba_njit,
    register_funcify_and_cache_key,
)
from pytensor.link.numba.dispatch.linalg.products import _gemm
from pytensor.tensor.math import Dot

from deeplearning_tutorial.ops.numba_dispatch import source_hash

# Below this many multiply-adds a product runs as one call: waking the other
# threads costs more than it saves.
PARALLEL_MIN = 1 << 22

_SOURCE_HASH = source_hash(__file__)


@register_funcify_and_cache_key(Dot)
def numba_funcify_Dot(op, node, **kwargs):
    threads = numba.get_num_threads()
    dtypes = {variable.type.dtype for variable in (*node.inputs, *node.outputs)}
    if threads < 2 or len(dtypes) != 1 or not dtypes <= {"float32", "float64"}:
        # PyTensor's own implementation and cache key (the base case of its dispatcher)
        return numba_funcify_and_cache_key.dispatch(object)(op, node=node, **kwargs)
    dtype = node.outputs[0].type.numpy_dtype

    @numba_njit(parallel=True)
    def parallel_dot(x, y):
        m, n = x.shape[0], y.shape[1]
        if x.shape[1] != y.shape[0]:
            raise ValueError("dot: the first matrix's columns and the second's rows differ in number")
        out = np.empty((m, n), dtype=dtype)
        if m * x.shape[1] * n < PARALLEL_MIN:
            return _gemm(x, y, out)
        if m >= n:
            for block in prange(threads):
                r0, r1 = block * m // threads, (block + 1) * m // threads
                _gemm(x[r0:r1], y, out[r0:r1])
        else:
            for block in prange(threads):
                c0, c1 = block * n // threads, (block + 1) * n // threads
                _gemm(x, y[:, c0:c1], out[:, c0:c1])
        return out

    return parallel_dot, f"deeplearning_tutorial.ops.numba_dot-{dtype}-threads{threads}-{_SOURCE_HASH}"
