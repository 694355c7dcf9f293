"""Compiled (Numba) kernels behind the convolution and pooling Ops.

They are plain functions of NumPy arrays, so the same code serves every
PyTensor backend: the Ops' ``perform`` (C VM and Python modes) calls them
directly, and the Numba backend inlines them into the compiled graph.

Convolution follows Theano's CorrMM: *im2col* unrolls every receptive field
into a row of a matrix, one BLAS matrix product does the arithmetic, and
*col2im* folds a matrix of patch gradients back into an image gradient.
All kernels compute a cross-correlation; the Op layer flips the filters for
a true convolution.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

# Pooling modes, as integers for the compiled code.
MAX, SUM, AVERAGE_INC_PAD, AVERAGE_EXC_PAD = 0, 1, 2, 3
POOL_MODES = {"max": MAX, "sum": SUM, "average_inc_pad": AVERAGE_INC_PAD,
              "average_exc_pad": AVERAGE_EXC_PAD}

jit = numba.njit(cache=True, nogil=True)
parallel_jit = numba.njit(cache=True, nogil=True, parallel=True)

# Start Numba's threading layer now.  Parallel kernels compiled into a graph
# that PyTensor later loads from its disk cache call the thread pool through
# symbols that only exist once it has been launched; without this, such a
# graph can call a null pointer in a fresh process.
numba.get_num_threads()


# --------------------------------------------------------------------------
# Output sizes (shared by the Ops' shape inference and the kernels)
# --------------------------------------------------------------------------


@jit
def conv_output_size(size, kernel, pad, stride, dilation):
    """Length of a 'valid' correlation along one axis after zero padding."""
    return (size + 2 * pad - (kernel - 1) * dilation - 1) // stride + 1


@jit
def pool_output_size(size, window, stride, pad, ignore_border):
    """Theano's pooled length along one axis."""
    padded = size + 2 * pad
    if ignore_border:
        return max(0, (padded - window) // stride + 1)
    if stride >= window:
        return (padded - 1) // stride + 1
    return max(0, (padded - 1 - window + stride) // stride) + 1


# --------------------------------------------------------------------------
# Convolution (cross-correlation) by im2col + GEMM
# --------------------------------------------------------------------------


@jit
def _valid_range(offset, stride, size, n_out):
    """The outputs j in [0, n_out) whose input index j*stride + offset lies in [0, size)."""
    start = 0 if offset >= 0 else (-offset + stride - 1) // stride
    stop = 0 if size - offset <= 0 else (size - offset + stride - 1) // stride
    return min(start, n_out), max(min(stop, n_out), min(start, n_out))


@parallel_jit
def im2col(x, n0, n1, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """Receptive fields of images ``n0 <= n < n1`` as columns (Caffe's layout):
    ``cols[(c, u, v), (n - n0, i, j)] = x_padded[n, c, i*sh + u*dh, j*sw + v*dw]``.

    Rows are (c, u, v) so that the innermost loop copies contiguous runs of
    an image row, which the compiler vectorises.
    """
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    positions = oh * ow
    cols = np.empty((channels * kh * kw, (n1 - n0) * positions), dtype=x.dtype)
    for m in prange(n1 - n0):
        n = n0 + m
        for c in range(channels):
            for u in range(kh):
                for v in range(kw):
                    row = (c * kh + u) * kw + v
                    x_offset = v * dw - pw
                    j0, j1 = _valid_range(x_offset, sw, width, ow)
                    for i in range(oh):
                        col = m * positions + i * ow
                        y = i * sh + u * dh - ph
                        if y < 0 or y >= height:
                            for j in range(ow):
                                cols[row, col + j] = 0
                            continue
                        for j in range(j0):
                            cols[row, col + j] = 0
                        for j in range(j0, j1):
                            cols[row, col + j] = x[n, c, y, j * sw + x_offset]
                        for j in range(j1, ow):
                            cols[row, col + j] = 0
    return cols


@parallel_jit
def col2im(dcols, dx, n0, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """The adjoint of :func:`im2col`: add the column gradients of images
    ``n0, n0 + 1, ...`` back into ``dx`` where they came from."""
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    positions = oh * ow
    for m in prange(dcols.shape[1] // positions):
        n = n0 + m
        for c in range(channels):
            for u in range(kh):
                for v in range(kw):
                    row = (c * kh + u) * kw + v
                    x_offset = v * dw - pw
                    j0, j1 = _valid_range(x_offset, sw, width, ow)
                    for i in range(oh):
                        y = i * sh + u * dh - ph
                        if y < 0 or y >= height:
                            continue
                        col = m * positions + i * ow
                        for j in range(j0, j1):
                            dx[n, c, y, j * sw + x_offset] += dcols[row, col + j]


@parallel_jit
def _scatter_to_nchw(mat, out, n0):
    """Copy a (f, m*oh*ow) GEMM result into images ``n0 ... n0 + m - 1`` of ``out`` (n, f, oh, ow)."""
    features, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    positions = oh * ow
    for m in prange(mat.shape[1] // positions):
        for f in range(features):
            for i in range(oh):
                for j in range(ow):
                    out[n0 + m, f, i, j] = mat[f, m * positions + i * ow + j]


@parallel_jit
def _gather_from_nchw(maps, n0, n1):
    """Images ``n0 <= n < n1`` of (n, f, oh, ow) maps as a (f, (n1-n0)*oh*ow) matrix."""
    features, oh, ow = maps.shape[1], maps.shape[2], maps.shape[3]
    positions = oh * ow
    mat = np.empty((features, (n1 - n0) * positions), dtype=maps.dtype)
    for m in prange(n1 - n0):
        for f in range(features):
            for i in range(oh):
                for j in range(ow):
                    mat[f, m * positions + i * ow + j] = maps[n0 + m, f, i, j]
    return mat


@jit
def _filter_matrix(kern):
    """(f, c, kh, kw) filters, of any strides (flipped views too), as a contiguous (f, c*kh*kw) matrix."""
    n_filters, channels, kh, kw = kern.shape
    mat = np.empty((n_filters, channels * kh * kw), dtype=kern.dtype)
    for f in range(n_filters):
        for c in range(channels):
            for u in range(kh):
                for v in range(kw):
                    mat[f, (c * kh + u) * kw + v] = kern[f, c, u, v]
    return mat


# Images per im2col chunk: the chunk's columns take about this many bytes,
# so they stay in cache between being written and multiplied.
CHUNK_BYTES = 4 << 20


@jit
def _chunk(n_images, rows, positions, itemsize):
    return max(1, min(n_images, CHUNK_BYTES // max(1, rows * positions * itemsize)))


@jit
def _check_output_size(oh, ow):
    if oh < 1 or ow < 1:
        raise ValueError("conv2d: the (dilated) filters are larger than the padded input")


@jit
def corr2d(x, kern, ph, pw, sh, sw, dh, dw):
    """'Valid' cross-correlation of zero-padded ``x`` (n, c, h, w) with ``kern`` (f, c, kh, kw)."""
    n_images, channels, height, width = x.shape
    n_filters, kern_channels, kh, kw = kern.shape
    if channels != kern_channels:
        raise ValueError("conv2d: the input's channel count (axis 1) differs from the filters' (axis 1)")
    oh = conv_output_size(height, kh, ph, sh, dh)
    ow = conv_output_size(width, kw, pw, sw, dw)
    _check_output_size(oh, ow)
    wmat = _filter_matrix(kern)
    out = np.empty((n_images, n_filters, oh, ow), dtype=x.dtype)
    step = _chunk(n_images, wmat.shape[1], oh * ow, x.itemsize)
    for n0 in range(0, n_images, step):
        n1 = min(n0 + step, n_images)
        cols = im2col(x, n0, n1, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
        _scatter_to_nchw(np.dot(wmat, cols), out, n0)
    return out


@jit
def corr2d_grad_weights(x, gout, kh, kw, ph, pw, sh, sw, dh, dw):
    """Gradient of :func:`corr2d` with respect to the filters, given the output gradient."""
    n_images, channels, height, width = x.shape
    n_filters, oh, ow = gout.shape[1], gout.shape[2], gout.shape[3]
    if (gout.shape[0] != n_images or oh != conv_output_size(height, kh, ph, sh, dh)
            or ow != conv_output_size(width, kw, pw, sw, dw)):
        raise ValueError("conv2d gradient: the output gradient's shape does not match the input's")
    grad = np.zeros((n_filters, channels * kh * kw), dtype=x.dtype)
    step = _chunk(n_images, channels * kh * kw, oh * ow, x.itemsize)
    for n0 in range(0, n_images, step):
        n1 = min(n0 + step, n_images)
        cols = im2col(x, n0, n1, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
        grad += np.dot(_gather_from_nchw(gout, n0, n1), cols.T)
    return grad.reshape((n_filters, channels, kh, kw))


@jit
def corr2d_grad_inputs(kern, gout, height, width, ph, pw, sh, sw, dh, dw):
    """Gradient of :func:`corr2d` with respect to its input, given the output gradient."""
    n_filters, channels, kh, kw = kern.shape
    n_images, oh, ow = gout.shape[0], gout.shape[2], gout.shape[3]
    if (gout.shape[1] != n_filters or oh != conv_output_size(height, kh, ph, sh, dh)
            or ow != conv_output_size(width, kw, pw, sw, dw)):
        raise ValueError("conv2d gradient: the output gradient's shape does not match the filters'")
    wmat_t = np.ascontiguousarray(_filter_matrix(kern).T)
    dx = np.zeros((n_images, channels, height, width), dtype=gout.dtype)
    step = _chunk(n_images, wmat_t.shape[0], oh * ow, gout.itemsize)
    for n0 in range(0, n_images, step):
        n1 = min(n0 + step, n_images)
        dcols = np.dot(wmat_t, _gather_from_nchw(gout, n0, n1))
        col2im(dcols, dx, n0, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
    return dx


# --------------------------------------------------------------------------
# Pooling over the last two axes of a (batch, h, w) array
# --------------------------------------------------------------------------


@jit
def _window(index, window, stride, pad, size):
    """Window ``index`` along one axis: (start, end) in padded coordinates, and the
    (start, end) of its part inside the real input, in input coordinates."""
    start = index * stride
    end = min(start + window, size + 2 * pad)
    return start, end, max(start - pad, 0), min(end - pad, size)


@parallel_jit
def pool(x, wh, ww, sh, sw, ph, pw, ignore_border, mode):
    """Theano's pooling of ``x`` (b, h, w); padding never wins a max and only
    'average_inc_pad' counts it."""
    batch, height, width = x.shape
    oh = pool_output_size(height, wh, sh, ph, ignore_border)
    ow = pool_output_size(width, ww, sw, pw, ignore_border)
    out = np.empty((batch, oh, ow), dtype=x.dtype)
    for b in prange(batch):
        for i in range(oh):
            r0, r1, y0, y1 = _window(i, wh, sh, ph, height)
            for j in range(ow):
                c0, c1, x0, x1 = _window(j, ww, sw, pw, width)
                if mode == MAX:
                    best = x[b, y0, x0]
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            if x[b, y, xx] > best:
                                best = x[b, y, xx]
                    out[b, i, j] = best
                else:
                    total = 0.0
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            total += x[b, y, xx]
                    if mode == AVERAGE_INC_PAD:
                        total /= (r1 - r0) * (c1 - c0)
                    elif mode == AVERAGE_EXC_PAD:
                        total /= (y1 - y0) * (x1 - x0)
                    out[b, i, j] = total
    return out


@parallel_jit
def max_pool_grad(x, maxout, gz, wh, ww, sh, sw, ph, pw):
    """Gradient of max pooling: each window's gradient goes to every input equal to its maximum."""
    batch, height, width = x.shape
    oh, ow = maxout.shape[1], maxout.shape[2]
    gx = np.zeros_like(x)
    for b in prange(batch):
        for i in range(oh):
            r0, r1, y0, y1 = _window(i, wh, sh, ph, height)
            for j in range(ow):
                c0, c1, x0, x1 = _window(j, ww, sw, pw, width)
                best = maxout[b, i, j]
                g = gz[b, i, j]
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        if x[b, y, xx] == best:
                            gx[b, y, xx] += g
    return gx


@parallel_jit
def average_pool_grad(gz, height, width, wh, ww, sh, sw, ph, pw, mode):
    """Gradient of sum and average pooling: each window's gradient spread over its inputs."""
    batch, oh, ow = gz.shape
    gx = np.zeros((batch, height, width), dtype=gz.dtype)
    for b in prange(batch):
        for i in range(oh):
            r0, r1, y0, y1 = _window(i, wh, sh, ph, height)
            for j in range(ow):
                c0, c1, x0, x1 = _window(j, ww, sw, pw, width)
                g = gz[b, i, j]
                if mode == AVERAGE_INC_PAD:
                    g /= (r1 - r0) * (c1 - c0)
                elif mode == AVERAGE_EXC_PAD:
                    g /= (y1 - y0) * (x1 - x0)
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        gx[b, y, xx] += g
    return gx
