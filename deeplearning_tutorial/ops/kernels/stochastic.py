"""The kernels of stochastic pooling (Numba functions of (batch, rows, cols) arrays).

:func:`deeplearning_tutorial.ops.stochastic_pool_2d` explains the method;
the Ops' ``perform`` and the NUMBA backend both call these functions.
"""

from __future__ import annotations

import numba
import numpy as np

from deeplearning_tutorial.ops import kernels

NEGATIVE_ACTIVATION = ("stochastic_pool_2d needs non-negative activations (its probabilities are "
                       "a / sum(a)); pool the output of a rectifier such as pt.maximum(a, 0)")




@numba.njit(parallel=True, cache=True, nogil=True)
def _pick(x, u, wh, ww, sh, sw):
    """Per window the value picked and its flat index ``row * cols + col`` (-1 for a
    window of zeros, which outputs 0); per image whether it had a negative value."""
    n, rows, cols = x.shape
    _, oh, ow = u.shape
    out = np.zeros(u.shape, x.dtype)
    picked = np.full(u.shape, -1, np.int64)
    negative = np.zeros(n, np.bool_)
    for b in numba.prange(n):
        for i in range(oh):
            r0, r1 = i * sh, min(i * sh + wh, rows)
            for j in range(ow):
                c0, c1 = j * sw, min(j * sw + ww, cols)
                total = x.dtype.type(0)
                last_positive = -1
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        value = x[b, r, c]
                        if value < 0:
                            negative[b] = True
                        elif value > 0:
                            last_positive = r * cols + c
                        total += value
                if last_positive < 0:
                    continue
                # the first value whose cumulative sum exceeds u * total; the last
                # positive one if rounding leaves none (u * total == total)
                target = u[b, i, j] * total
                cumulative = x.dtype.type(0)
                choice, found = last_positive, False
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        cumulative += x[b, r, c]
                        if not found and cumulative > target:
                            choice, found = r * cols + c, True
                picked[b, i, j] = choice
                out[b, i, j] = x[b, choice // cols, choice % cols]
    return out, picked, negative


# the pooled length, the kernels' one formula, compiled for the Numba functions below
_pool_output_size = kernels.jit(kernels.pool_output_size)


@kernels.jit
def stochastic_pool(x, u, wh, ww, sh, sw, ignore_border):
    """Stochastic pooling of ``x`` (n, rows, cols) given the draws ``u`` (n, pooled rows, pooled cols):
    the picked values and their flat indices in the image (-1 for a window of zeros, which outputs 0)."""
    x, u = np.ascontiguousarray(x), np.ascontiguousarray(u)
    n, rows, cols = x.shape
    if u.shape != (n, _pool_output_size(rows, wh, sh, 0, ignore_border),
                   _pool_output_size(cols, ww, sw, 0, ignore_border)):
        raise ValueError("stochastic pooling: u needs one draw per window of the input")
    out, picked, negative = _pick(x, u, wh, ww, sh, sw)
    if negative.any():
        raise ValueError(NEGATIVE_ACTIVATION)
    return out, picked


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
