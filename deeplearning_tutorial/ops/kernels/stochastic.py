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

# SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit hash whose outputs, for consecutive
# inputs, pass the usual tests of randomness; it gives every window its own uniform
# number from the call's seed, in any order and on any thread.
_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_TWO_TO_MINUS_53 = 1.0 / 9007199254740992.0


@kernels.inline
def window_uniform(seed, index):
    """The uniform number in [0, 1) of window ``index`` (its flat index in the pooled output)
    for the draw ``seed``: the top 53 bits of SplitMix64's output number ``index + 1``."""
    z = np.uint64(seed) + (np.uint64(index) + np.uint64(1)) * _GOLDEN_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    z = z ^ (z >> np.uint64(31))
    return np.float64(np.int64(z >> np.uint64(11))) * _TWO_TO_MINUS_53  # 53 bits: a signed conversion is exact


@kernels.inline
def _whole_2x2_windows(rows, cols, wh, ww, sh, sw, oh, ow):
    """How many rows and columns of windows take the unrolled path: the 2x2 windows that lie
    wholly inside the image (none for other windows)."""
    if wh != 2 or ww != 2 or rows < 2 or cols < 2:
        return 0, 0
    return min(oh, (rows - 2) // sh + 1), min(ow, (cols - 2) // sw + 1)


@kernels.inline
def _window_2x2(x, b, r0, c0):
    """The 2x2 window of image ``b`` whose top left is (r0, c0): (a0, a1 / a2, a3)."""
    return x[b, r0, c0], x[b, r0, c0 + 1], x[b, r0 + 1, c0], x[b, r0 + 1, c0 + 1]


@kernels.inline
def _pick_in_2x2(a0, a1, a2, a3, u):
    """The general loop below for one whole 2x2 window (a0, a1 / a2, a3), with the same
    additions in the same order and no branch on the draw (a random branch is mispredicted
    half the time): the position picked (0-3) and the window's sum (0: a window of zeros,
    which picks nothing)."""
    s1 = a0 + a1
    s2 = s1 + a2
    total = s2 + a3
    target = u * np.float64(total)
    # the partial sums only grow: the first above the draw is the number of those not above it
    k = np.int64(a0 <= target) + np.int64(s1 <= target) + np.int64(s2 <= target)
    if (total > 0) & (total <= target):  # rounding left none above it: the last positive value
        k = 3 if a3 > 0 else (2 if a2 > 0 else (1 if a1 > 0 else 0))
    return k, total


@kernels.inline
def _pick_in_window(x, b, r0, r1, c0, c1, u):
    """Any window, rows r0..r1-1 and columns c0..c1-1 of image ``b``: the flat index of
    the value picked (-1 for a window of zeros), that value (0 then), and the window's
    smallest value."""
    cols = x.shape[2]
    total = x.dtype.type(0)
    lowest = x.dtype.type(0)
    last_row, last_col = -1, -1
    for r in range(r0, r1):
        for c in range(c0, c1):
            value = x[b, r, c]
            lowest = min(lowest, value)
            if value > 0:
                last_row, last_col = r, c
            total += value
    if last_row < 0:
        return -1, x.dtype.type(0), lowest
    # the first value whose cumulative sum exceeds u * total; the last
    # positive one if rounding leaves none (u * total == total)
    target = u * np.float64(total)
    cumulative = x.dtype.type(0)
    row, col = last_row, last_col
    found = False
    for r in range(r0, r1):
        for c in range(c0, c1):
            cumulative += x[b, r, c]
            if cumulative > target:
                row, col, found = r, c, True
                break
        if found:
            break
    return row * cols + col, x[b, row, col], lowest


@numba.njit(parallel=True, cache=True, nogil=True)
def _pick(x, seed, wh, ww, sh, sw, oh, ow):
    """Per window the value picked and its flat index ``row * cols + col`` (-1 for a
    window of zeros, which outputs 0); per image whether it had a negative value."""
    n, rows, cols = x.shape
    out = np.empty((n, oh, ow), x.dtype)
    picked = np.empty((n, oh, ow), np.int64)
    negative = np.zeros(n, np.bool_)
    whole_rows, whole_cols = _whole_2x2_windows(rows, cols, wh, ww, sh, sw, oh, ow)
    for b in numba.prange(n):
        lowest = x.dtype.type(0)
        draws = np.empty(whole_cols)
        for i in range(whole_rows):
            r0 = i * sh
            for j in range(whole_cols):  # first the row's draws, a loop of independent hashes
                draws[j] = window_uniform(seed, (b * oh + i) * ow + j)
            for j in range(whole_cols):
                c0 = j * sw
                a0, a1, a2, a3 = _window_2x2(x, b, r0, c0)
                lowest = min(lowest, min(min(a0, a1), min(a2, a3)))
                k, total = _pick_in_2x2(a0, a1, a2, a3, draws[j])
                row, col = r0 + (k >> 1), c0 + (k & 1)
                # a window of zeros (non-negative values summing to 0) outputs its 0 and picks nothing
                picked[b, i, j] = np.int64(total > 0) * (row * cols + col + 1) - 1
                out[b, i, j] = x[b, row, col]
        for i in range(oh):
            for j in range(whole_cols if i < whole_rows else 0, ow):
                r0, c0 = i * sh, j * sw
                flat, value, window_lowest = _pick_in_window(
                    x, b, r0, min(r0 + wh, rows), c0, min(c0 + ww, cols), window_uniform(seed, (b * oh + i) * ow + j))
                picked[b, i, j] = flat
                out[b, i, j] = value
                lowest = min(lowest, window_lowest)
        negative[b] = lowest < 0
    return out, picked, negative


# the pooled length, the kernels' one formula, compiled for the Numba functions below
_pool_output_size = kernels.jit(kernels.pool_output_size)


@kernels.jit
def stochastic_pool(x, seed, wh, ww, sh, sw, ignore_border):
    """Stochastic pooling of ``x`` (n, rows, cols) for the draw ``seed`` (an int): the picked
    values and their flat indices in the image (-1 for a window of zeros, which outputs 0)."""
    x = np.ascontiguousarray(x)
    n, rows, cols = x.shape
    oh = _pool_output_size(rows, wh, sh, 0, ignore_border)
    ow = _pool_output_size(cols, ww, sw, 0, ignore_border)
    out, picked, negative = _pick(x, seed, wh, ww, sh, sw, oh, ow)
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
    oh = _pool_output_size(rows, wh, sh, 0, ignore_border)
    ow = _pool_output_size(cols, ww, sw, 0, ignore_border)
    out, negative = _weighted_average(x, wh, ww, sh, sw, oh, ow)
    if negative.any():
        raise ValueError(NEGATIVE_ACTIVATION)
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
