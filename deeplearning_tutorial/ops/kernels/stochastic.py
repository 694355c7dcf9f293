"""Stochastic pooling's gradient and its test-time pooling (Numba functions of (batch, rows, cols)
arrays); the training pick itself is C (``kernels.stochastic_pool``).

:func:`deeplearning_tutorial.ops.stochastic_pool_2d` explains the method;
the Ops' ``perform`` and the NUMBA backend both call these functions.
"""

from __future__ import annotations

import numba
import numpy as np

from deeplearning_tutorial.ops import kernels


@kernels.inline
def _whole_2x2_windows(rows, cols, wh, ww, sh, sw, oh, ow):
    """How many rows and columns of windows take the unrolled path: the 2x2 windows that lie
    wholly inside the image (none for other windows), as the C pick counts them."""
    if wh != 2 or ww != 2 or rows < 2 or cols < 2:
        return 0, 0
    return min(oh, (rows - 2) // sh + 1), min(ow, (cols - 2) // sw + 1)


@kernels.inline
def _window_2x2(x, b, r0, c0):
    """The 2x2 window of image ``b`` whose top left is (r0, c0): (a0, a1 / a2, a3)."""
    return x[b, r0, c0], x[b, r0, c0 + 1], x[b, r0 + 1, c0], x[b, r0 + 1, c0 + 1]


@numba.njit(parallel=True, cache=True, nogil=True)
def stochastic_pool_grad(picked, gz, rows, cols):
    """Each window's output gradient, added at the position of the value it picked."""
    picked, gz = np.ascontiguousarray(picked), np.ascontiguousarray(gz)
    n, oh, ow = gz.shape
    gx = np.zeros((n, rows * cols), gz.dtype)
    for b in numba.prange(n):
        for i in range(oh):
            for j in range(ow):
                k = picked[b, i, j]
                if k >= 0:
                    gx[b, k] += gz[b, i, j]
    return gx.reshape((n, rows, cols))


@numba.njit(parallel=True, cache=True, nogil=True)
def _weighted_average(x, wh, ww, sh, sw, oh, ow):
    """Per window ``sum(a**2) / sum(a)`` (0 for a window of zeros); per image whether it had a
    negative value."""
    n, rows, cols = x.shape
    out = np.empty((n, oh, ow), x.dtype)
    negative = np.zeros(n, np.bool_)
    zero = x.dtype.type(0)
    whole_rows, whole_cols = _whole_2x2_windows(rows, cols, wh, ww, sh, sw, oh, ow)
    for b in numba.prange(n):
        lowest = zero
        for i in range(whole_rows):
            r0 = i * sh
            for j in range(whole_cols):
                c0 = j * sw
                a0, a1, a2, a3 = _window_2x2(x, b, r0, c0)
                lowest = min(lowest, min(min(a0, a1), min(a2, a3)))
                sums = ((a0 + a1) + a2) + a3
                squares = ((a0 * a0 + a1 * a1) + a2 * a2) + a3 * a3
                out[b, i, j] = squares / sums if sums > 0 else zero
        for i in range(oh):
            r0, r1 = i * sh, min(i * sh + wh, rows)
            for j in range(whole_cols if i < whole_rows else 0, ow):
                c0, c1 = j * sw, min(j * sw + ww, cols)
                sums, squares = zero, zero
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        value = x[b, r, c]
                        lowest = min(lowest, value)
                        sums += value
                        squares += value * value
                out[b, i, j] = squares / sums if sums > 0 else zero
        negative[b] = lowest < 0
    return out, negative


@kernels.jit
def weighted_average_pool(x, wh, ww, sh, sw, ignore_border):
    """Stochastic pooling at test time of ``x`` (n, rows, cols): each window's probability-weighted
    average ``sum(a**2) / sum(a)``, 0 for a window of zeros."""
    x = np.ascontiguousarray(x)
    n, rows, cols = x.shape
    oh = kernels._pool_output_size(rows, wh, sh, 0, ignore_border)
    ow = kernels._pool_output_size(cols, ww, sw, 0, ignore_border)
    out, negative = _weighted_average(x, wh, ww, sh, sw, oh, ow)
    if negative.any():
        raise ValueError(kernels.NEGATIVE_ACTIVATION)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def weighted_average_pool_grad(x, out, gz, wh, ww, sh, sw):
    """Gradient of :func:`weighted_average_pool`: each input ``a`` gets
    ``(2 a - out) * gz / sum(a)`` from every window holding it, nothing from a window of zeros."""
    x, out, gz = np.ascontiguousarray(x), np.ascontiguousarray(out), np.ascontiguousarray(gz)
    n, rows, cols = x.shape
    oh, ow = out.shape[1:]
    gx = np.zeros_like(x)
    zero = x.dtype.type(0)
    whole_rows, whole_cols = _whole_2x2_windows(rows, cols, wh, ww, sh, sw, oh, ow)
    for b in numba.prange(n):
        for i in range(whole_rows):
            r0 = i * sh
            for j in range(whole_cols):
                c0 = j * sw
                a0, a1, a2, a3 = _window_2x2(x, b, r0, c0)
                sums = ((a0 + a1) + a2) + a3
                if sums > 0:
                    ratio, average = gz[b, i, j] / sums, out[b, i, j]
                    gx[b, r0, c0] += (2 * a0 - average) * ratio
                    gx[b, r0, c0 + 1] += (2 * a1 - average) * ratio
                    gx[b, r0 + 1, c0] += (2 * a2 - average) * ratio
                    gx[b, r0 + 1, c0 + 1] += (2 * a3 - average) * ratio
        for i in range(oh):
            r0, r1 = i * sh, min(i * sh + wh, rows)
            for j in range(whole_cols if i < whole_rows else 0, ow):
                c0, c1 = j * sw, min(j * sw + ww, cols)
                sums = zero
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        sums += x[b, r, c]
                if sums > 0:
                    ratio, average = gz[b, i, j] / sums, out[b, i, j]
                    for r in range(r0, r1):
                        for c in range(c0, c1):
                            gx[b, r, c] += (2 * x[b, r, c] - average) * ratio
    return gx
