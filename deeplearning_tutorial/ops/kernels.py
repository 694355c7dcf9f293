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
#
# Each Op runs one parallel loop over chunks of images: a thread unrolls its
# chunk, multiplies it with a single-threaded BLAS call and writes its part of
# the result, all while the chunk is in its core's cache.  One parallel region
# per Op, and the BLAS runs single-threaded inside it (see blas_threads.py).
# --------------------------------------------------------------------------


@jit
def _images_to_chwn(x, n0, n1):
    """Images ``n0 <= n < n1`` of ``x`` (n, c, h, w) with the image index last: (c, h, w, n1 - n0)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    xt = np.empty((channels, height, width, n1 - n0), dtype=x.dtype)
    for c in range(channels):
        for m in range(n1 - n0):
            for y in range(height):
                for xx in range(width):
                    xt[c, y, xx, m] = x[n0 + m, c, y, xx]
    return xt


@jit
def _chwn_to_images(xt, x, n0):
    """The inverse of :func:`_images_to_chwn`: write ``xt`` into images ``n0, n0 + 1, ...`` of ``x``."""
    channels, height, width, n_images = xt.shape
    for c in range(channels):
        for m in range(n_images):
            for y in range(height):
                for xx in range(width):
                    x[n0 + m, c, y, xx] = xt[c, y, xx, m]


@jit
def im2col(xt, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """Receptive fields of a chunk of images ``xt`` (c, h, w, m) as columns:
    ``cols[(c, u, v), (i, j, m)] = x_padded[m, c, i*sh + u*dh, j*sw + v*dw]``.

    The image index is innermost (as in cuda-convnet), so every copy is a
    contiguous run of one pixel across the chunk's images, whatever the
    filter and image sizes; the compiler vectorises it.
    """
    channels, height, width, n_images = xt.shape
    cols = np.empty((channels * kh * kw, oh * ow * n_images), dtype=xt.dtype)
    for row in range(channels * kh * kw):
        c, u, v = row // (kh * kw), (row // kw) % kh, row % kw
        for i in range(oh):
            y = i * sh + u * dh - ph
            for j in range(ow):
                xx = j * sw + v * dw - pw
                col = (i * ow + j) * n_images
                if 0 <= y < height and 0 <= xx < width:
                    for m in range(n_images):
                        cols[row, col + m] = xt[c, y, xx, m]
                else:
                    for m in range(n_images):
                        cols[row, col + m] = 0
    return cols


@jit
def col2im(dcols, channels, height, width, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow):
    """The adjoint of :func:`im2col`: fold column gradients back into image
    gradients (c, h, w, m), adding where receptive fields overlap."""
    n_images = dcols.shape[1] // (oh * ow)
    dxt = np.zeros((channels, height, width, n_images), dtype=dcols.dtype)
    for c in range(channels):
        for u in range(kh):
            for v in range(kw):
                row = (c * kh + u) * kw + v
                for i in range(oh):
                    y = i * sh + u * dh - ph
                    for j in range(ow):
                        xx = j * sw + v * dw - pw
                        if 0 <= y < height and 0 <= xx < width:
                            col = (i * ow + j) * n_images
                            for m in range(n_images):
                                dxt[c, y, xx, m] += dcols[row, col + m]
    return dxt


@jit
def _scatter_to_nchw(mat, out, n0):
    """Copy a (f, (i, j, m)) GEMM result into images ``n0 ... n0 + m - 1`` of ``out`` (n, f, oh, ow)."""
    features, positions = out.shape[1], out.shape[2] * out.shape[3]
    n_images = mat.shape[1] // positions
    flat = out.reshape((out.shape[0], features, positions))
    for f in range(features):
        for m in range(n_images):
            for p in range(positions):
                flat[n0 + m, f, p] = mat[f, p * n_images + m]


@jit
def _gather_from_nchw(maps, n0, n1):
    """Images ``n0 <= n < n1`` of (n, f, oh, ow) maps as an (f, (i, j, m)) matrix, the layout of :func:`im2col`."""
    features, positions = maps.shape[1], maps.shape[2] * maps.shape[3]
    n_images = n1 - n0
    flat = maps.reshape((maps.shape[0], features, positions))
    mat = np.empty((features, positions * n_images), dtype=maps.dtype)
    for f in range(features):
        for m in range(n_images):  # this order (contiguous reads) measured 2-3x faster than the reverse
            for p in range(positions):
                mat[f, p * n_images + m] = flat[n0 + m, f, p]
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


# A chunk's unrolled columns take at most about this many bytes, so they stay
# in cache between being written and multiplied.
CHUNK_BYTES = 2 << 20
# Chunks hold a multiple of this many images where they can: the copies run
# over the image index, and whole SIMD vectors of it copy several times faster.
CHUNK_ALIGN = 16


@jit
def _chunking(n_images, rows, positions, itemsize, threads):
    """``(images per chunk, number of chunks)`` for ``n_images`` whose columns are
    ``rows x positions`` each: a chunk fits ``CHUNK_BYTES``, and no chunk is
    larger than one thread's share of the images.

    (The thread count is an argument: ``numba.get_num_threads()`` inside
    compiled code would keep it, and every graph calling it, out of the cache.)
    """
    step = max(1, CHUNK_BYTES // max(1, rows * positions * itemsize))
    if step >= CHUNK_ALIGN:
        step -= step % CHUNK_ALIGN
    step = max(1, min(step, -(-n_images // threads)))
    return step, -(-n_images // step)


@jit
def _chunk_bounds(chunk, step, n_images):
    """Images ``[n0, n1)`` of chunk number ``chunk``."""
    return chunk * step, min((chunk + 1) * step, n_images)


@jit
def _sum_first_axis(partial):
    """``partial.sum(axis=0)`` (a plain loop compiles several times faster inside a parallel function)."""
    total = np.zeros(partial.shape[1:], dtype=partial.dtype)
    for part in range(partial.shape[0]):
        total += partial[part]
    return total


@jit
def _accumulate(total, term):
    """``total += term`` (a plain loop: in a parallel function the array expression
    becomes a nested parallel loop, which compiles much more slowly)."""
    for i in range(total.shape[0]):
        for j in range(total.shape[1]):
            total[i, j] += term[i, j]


@jit
def _check_output_size(oh, ow):
    if oh < 1 or ow < 1:
        raise ValueError("conv2d: the (dilated) filters are larger than the padded input")


@parallel_jit
def corr2d(x, kern, ph, pw, sh, sw, dh, dw, threads):
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
    step, n_chunks = _chunking(n_images, wmat.shape[1], oh * ow, x.itemsize, threads)
    for chunk in prange(n_chunks):
        n0, n1 = _chunk_bounds(chunk, step, n_images)
        cols = im2col(_images_to_chwn(x, n0, n1), kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
        _scatter_to_nchw(np.dot(wmat, cols), out, n0)
    return out


@parallel_jit
def corr2d_grad_weights(x, gout, kh, kw, ph, pw, sh, sw, dh, dw, threads):
    """Gradient of :func:`corr2d` with respect to the filters, given the output gradient."""
    n_images, channels, height, width = x.shape
    n_filters, oh, ow = gout.shape[1], gout.shape[2], gout.shape[3]
    if (gout.shape[0] != n_images or oh != conv_output_size(height, kh, ph, sh, dh)
            or ow != conv_output_size(width, kw, pw, sw, dw)):
        raise ValueError("conv2d gradient: the output gradient's shape does not match the input's")
    step, n_chunks = _chunking(n_images, channels * kh * kw, oh * ow, x.itemsize, threads)
    # one partial sum per thread (not per chunk: chunks can be many, and filters large)
    workers = min(threads, n_chunks)
    partial = np.zeros((workers, n_filters, channels * kh * kw), dtype=x.dtype)
    for worker in prange(workers):
        for chunk in range(worker * n_chunks // workers, (worker + 1) * n_chunks // workers):
            n0, n1 = _chunk_bounds(chunk, step, n_images)
            cols = im2col(_images_to_chwn(x, n0, n1), kh, kw, ph, pw, sh, sw, dh, dw, oh, ow)
            _accumulate(partial[worker], np.dot(_gather_from_nchw(gout, n0, n1), cols.T))
    return _sum_first_axis(partial).reshape((n_filters, channels, kh, kw))


@parallel_jit
def corr2d_grad_inputs(kern, gout, height, width, ph, pw, sh, sw, dh, dw, threads):
    """Gradient of :func:`corr2d` with respect to its input, given the output gradient."""
    n_filters, channels, kh, kw = kern.shape
    n_images, oh, ow = gout.shape[0], gout.shape[2], gout.shape[3]
    if (gout.shape[1] != n_filters or oh != conv_output_size(height, kh, ph, sh, dh)
            or ow != conv_output_size(width, kw, pw, sw, dw)):
        raise ValueError("conv2d gradient: the output gradient's shape does not match the filters'")
    wmat_t = np.ascontiguousarray(_filter_matrix(kern).T)
    dx = np.empty((n_images, channels, height, width), dtype=gout.dtype)
    step, n_chunks = _chunking(n_images, wmat_t.shape[0], oh * ow, gout.itemsize, threads)
    for chunk in prange(n_chunks):
        n0, n1 = _chunk_bounds(chunk, step, n_images)
        dcols = np.dot(wmat_t, _gather_from_nchw(gout, n0, n1))
        _chwn_to_images(col2im(dcols, channels, height, width, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow),
                        dx, n0)
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
def max_pool_full_windows(x, wh, ww, sh, sw, oh, ow):
    """Max pooling when every window lies inside the image (no padding, border
    ignored): the maximum over a window's rows first, a whole image row at a
    time (which vectorises), then over its columns."""
    batch, width = x.shape[0], x.shape[2]
    out = np.empty((batch, oh, ow), dtype=x.dtype)
    for b in prange(batch):
        row_max = np.empty(width, dtype=x.dtype)
        for i in range(oh):
            for xx in range(width):
                row_max[xx] = x[b, i * sh, xx]
            for u in range(1, wh):
                for xx in range(width):
                    row_max[xx] = max(row_max[xx], x[b, i * sh + u, xx])
            for j in range(ow):
                best = row_max[j * sw]
                for v in range(1, ww):
                    best = max(best, row_max[j * sw + v])
                out[b, i, j] = best
    return out


@parallel_jit
def max_pool_grad_tiled(x, maxout, gz, wh, ww):
    """:func:`max_pool_grad` when the windows tile the image (stride = window,
    no padding, border ignored or none left over): each input is in one window
    at most, so its gradient is a branch-free select between the window's
    gradient and zero, a row at a time."""
    batch, oh, ow = maxout.shape
    gx = np.zeros_like(x)  # inputs beyond the last full window get none
    for b in prange(batch):
        row_max = np.empty(ow * ww, dtype=x.dtype)
        row_grad = np.empty(ow * ww, dtype=x.dtype)
        for i in range(oh):
            for j in range(ow):
                for v in range(ww):
                    row_max[j * ww + v] = maxout[b, i, j]
                    row_grad[j * ww + v] = gz[b, i, j]
            for u in range(wh):
                y = i * wh + u
                for xx in range(ow * ww):
                    gx[b, y, xx] = row_grad[xx] if x[b, y, xx] == row_max[xx] else 0
    return gx


@parallel_jit
def pool(x, wh, ww, sh, sw, ph, pw, ignore_border, mode):
    """Theano's pooling of ``x`` (b, h, w); padding never wins a max and only
    'average_inc_pad' counts it."""
    batch, height, width = x.shape
    oh = pool_output_size(height, wh, sh, ph, ignore_border)
    ow = pool_output_size(width, ww, sw, pw, ignore_border)
    if mode == MAX and ignore_border and ph == 0 and pw == 0:
        return max_pool_full_windows(x, wh, ww, sh, sw, oh, ow)
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
    if wh == sh and ww == sw and ph == 0 and pw == 0 and oh * sh <= height and ow * sw <= width:
        return max_pool_grad_tiled(x, maxout, gz, wh, ww)
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
