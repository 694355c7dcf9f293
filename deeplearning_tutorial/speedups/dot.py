"""``SplitDot``: a matrix product on all of Numba's threads, one BLAS call per block.

The convolution kernels need their BLAS single-threaded while they run, and a
graph that mixes them with PyTensor's own ``Dot`` pays for the BLAS's thread
pool waking and spinning between the two.  ``SplitDot`` computes the same
product as ``Dot`` (it is a ``Dot``: same graph semantics, gradient and
shape), but its NUMBA implementation splits the larger dimension of the
result into one block per Numba thread, each block one single-threaded BLAS
``gemm`` call writing into its slice of the result, on the same thread pool
as the convolutions.  Products under ``PARALLEL_MIN`` multiply-adds run as one single-threaded
call.  In the other modes it runs as ``Dot`` does.

The :mod:`~deeplearning_tutorial.speedups` rewrites put it in place of ``Dot``
nodes whose operands and result share a float32 or float64 dtype, in the
graphs compiled with :func:`deeplearning_tutorial.speedups.mode` only.

The blocks call ``gemm`` directly, with the transpose flags and leading
dimensions read from the strides at run time, so one small function serves
every memory layout, and both it and the parallel split are compiled once per
dtype whatever the operands' layouts.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import prange, types
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key
from pytensor.link.numba.dispatch.linalg._BLAS import _BLAS
from pytensor.link.numba.dispatch.linalg._LAPACK import val_to_dptr, val_to_int_ptr, val_to_sptr
from pytensor.tensor.math import Dot

from deeplearning_tutorial.ops import kernels  # noqa: F401  (loads the library of the BLAS thread functions)
from deeplearning_tutorial.ops.link.numba.dispatch import source_hash

# Below this many multiply-adds a product runs as one call: waking the other
# threads costs more than it saves.
PARALLEL_MIN = 1 << 22

_SOURCE_HASH = source_hash(__file__)

# The kernels' library (csrc/kernels.c): the BLAS single-threaded for a parallel region.
_blas_single_thread = types.ExternalFunction("dlt_blas_single_thread", types.int32())
_blas_restore_threads = types.ExternalFunction("dlt_blas_restore_threads", types.void(types.int32))


class SplitDot(Dot):
    """``Dot`` whose NUMBA implementation splits the product over Numba's threads."""


@numba_njit(inline="always")
def _blas_view(a):
    """How column-major BLAS can read ``a`` in place: (transposed, leading dimension).

    A column-major ``a`` is read as is; a row-major one is its transpose to
    BLAS.  The leading dimension is 0 when neither works (reversed or
    doubly strided axes): the caller copies ``a`` first.
    """
    rows, cols = a.shape
    item = a.itemsize
    if a.strides[0] % item or a.strides[1] % item:
        return False, 0
    row_step, col_step = a.strides[0] // item, a.strides[1] // item
    if (rows == 1 or row_step == 1) and (cols == 1 or col_step >= max(1, rows)):
        return False, col_step if cols > 1 else max(1, rows)
    if (cols == 1 or col_step == 1) and (rows == 1 or row_step >= max(1, cols)):
        return True, row_step if rows > 1 else max(1, cols)
    return False, 0


@functools.cache
def gemm_into(dtype: np.dtype):
    """A compiled ``gemm_into(a, b, out)``: ``out[...] = a @ b`` for a row-major ``out``.

    ``out`` may be a block of rows or of columns of a C-contiguous array.
    Column-major BLAS sees ``out`` as ``out.T`` and computes
    ``out.T = b.T @ a.T``.
    """
    xgemm = _BLAS().numba_xgemm(numba.from_dtype(dtype))
    scalar_ptr = val_to_sptr if dtype == np.float32 else val_to_dptr
    one, zero = dtype.type(1), dtype.type(0)

    @numba_njit
    def gemm(a, b, out):
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        if m == 0 or n == 0:
            return
        if k == 0:
            out[...] = 0
            return
        a_transposed, lda = _blas_view(a)
        if lda == 0:
            a = np.ascontiguousarray(a)
            a_transposed, lda = True, max(1, k)
        b_transposed, ldb = _blas_view(b)
        if ldb == 0:
            b = np.ascontiguousarray(b)
            b_transposed, ldb = True, max(1, n)
        ldc = max(1, out.strides[0] // out.itemsize) if m > 1 else max(1, n)
        xgemm(
            val_to_int_ptr(ord("N") if b_transposed else ord("T")),
            val_to_int_ptr(ord("N") if a_transposed else ord("T")),
            val_to_int_ptr(np.int32(n)), val_to_int_ptr(np.int32(m)), val_to_int_ptr(np.int32(k)),
            scalar_ptr(one), b.ctypes, val_to_int_ptr(np.int32(ldb)),
            a.ctypes, val_to_int_ptr(np.int32(lda)),
            scalar_ptr(zero), out.ctypes, val_to_int_ptr(np.int32(ldc)),
        )

    return gemm


@functools.cache
def split_product(dtype: np.dtype, threads: int):
    """A compiled ``split_product(x, y, out)``: ``out[...] = x @ y`` in one block per thread.

    Callers pass every operand as a general ('A' layout) array, ``x[:, :]``,
    so Numba compiles this parallel function (the slow part to compile) once
    per dtype and thread count, whatever the layouts of the graph's products.
    """
    gemm = gemm_into(dtype)

    @numba_njit(parallel=True)
    def split(x, y, out):
        m, n = out.shape
        for block in prange(threads):
            if m >= n:
                r0, r1 = block * m // threads, (block + 1) * m // threads
                gemm(x[r0:r1], y, out[r0:r1])
            else:
                c0, c1 = block * n // threads, (block + 1) * n // threads
                gemm(x, y[:, c0:c1], out[:, c0:c1])

    return split


@register_funcify_and_cache_key(SplitDot)
def numba_funcify_SplitDot(op, node, **kwargs):
    threads = numba.get_num_threads()
    dtype = node.outputs[0].type.numpy_dtype
    gemm, split = gemm_into(dtype), split_product(dtype, threads)

    @numba_njit
    def parallel_dot(x, y):
        m, n = x.shape[0], y.shape[1]
        if x.shape[1] != y.shape[0]:
            raise ValueError("dot: the first matrix's columns and the second's rows differ in number")
        out = np.empty((m, n), dtype=dtype)
        # Single-threaded BLAS for small products too: a multi-threaded call wakes the BLAS's
        # threads, which then spin on the cores the next parallel kernel needs.
        blas_threads = _blas_single_thread()
        # general-layout views: both callees compile once per dtype, whatever the operands' layouts
        if threads < 2 or m * x.shape[1] * n < PARALLEL_MIN:
            gemm(x[:, :], y[:, :], out[:, :])
        else:
            split(x[:, :], y[:, :], out[:, :])
        _blas_restore_threads(blas_threads)
        return out

    return parallel_dot, f"deeplearning_tutorial.speedups.dot-{dtype}-threads{threads}-{_SOURCE_HASH}"
