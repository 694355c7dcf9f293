"""The compiled kernels split a minibatch into chunks of images, one parallel
loop over them: every split (many chunks, a ragged last one, more threads
than chunks) must give the same result as a NumPy reference, with the
filters flipped or not.  Also: the BLAS they call is the one given a single
thread, and they refuse what they cannot compute."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import threadpoolctl
from numpy.lib.stride_tricks import sliding_window_view

from deeplearning_tutorial.ops import kernels
from deeplearning_tutorial.ops.kernels import blas_threads

UNPADDED = dict(ph=0, pw=0, sh=1, sw=1, dh=1, dw=1, groups=1)  # the kernels' geometry arguments
WINDOWS_2X2 = dict(wh=2, ww=2, sh=2, sw=2, ph=0, pw=0)


def correlate(x, kern):
    """'Valid' cross-correlation by sliding windows and einsum."""
    kh, kw = kern.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # (n, c, oh, ow, kh, kw)
    return np.einsum("ncijuv,fcuv->nfij", windows, kern)


# 8 channels, 5x5 filters on 28x28 images: about 0.46 MB of columns per float32
# image, so a chunk holds only a few images and 10 images take several chunks.
SHAPES = [((10, 8, 28, 28), (3, 8, 5, 5)), ((1, 8, 28, 28), (2, 8, 5, 5)), ((5, 2, 6, 7), (4, 2, 3, 2))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("x_shape, k_shape", SHAPES)
def test_every_chunking_gives_the_reference(x_shape, k_shape, threads, flip, dtype):
    assert kernels.chunking(10, 8 * 25, 24 * 24, 4, 1)[1] > 1, "the first shape no longer spans several chunks"
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    kern = rng.standard_normal(k_shape).astype(dtype)
    used = kern[:, :, ::-1, ::-1] if flip else kern  # the filters the kernels correlate with
    expected = correlate(x.astype(np.float64), used.astype(np.float64))
    gout = rng.standard_normal(expected.shape).astype(dtype)
    tol = {"float32": 1e-4, "float64": 1e-10}[dtype]

    out = kernels.corr2d(x, kern, **UNPADDED, flip=flip, threads=threads)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * 10)

    # <gout, corr(x, k)> is linear in each argument: its gradients by the adjoint identities
    grad_w = kernels.corr2d_grad_weights(x, gout, kh=k_shape[2], kw=k_shape[3], **UNPADDED, flip=flip,
                                         threads=threads)
    expected_w = np.einsum("ncijuv,nfij->fcuv", sliding_window_view(x, k_shape[2:], axis=(2, 3)), gout)
    if flip:
        expected_w = expected_w[:, :, ::-1, ::-1]
    np.testing.assert_allclose(grad_w, expected_w, rtol=tol, atol=tol * 100)
    assert grad_w.flags.c_contiguous

    grad_x = kernels.corr2d_grad_inputs(kern, gout, height=x_shape[2], width=x_shape[3], **UNPADDED, flip=flip,
                                        threads=threads)
    probe = rng.standard_normal(x_shape)
    np.testing.assert_allclose(np.sum(grad_x * probe), np.sum(gout * correlate(probe, used)),
                               rtol=tol * 10)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_chunks_cover_every_image_once(threads):
    for n_images in [1, 2, 3, 15, 16, 17, 100, 500]:
        for rows, positions in [(25, 576), (500, 64), (1, 1), (2000, 4096)]:
            step, n_chunks, workers = kernels.chunking(n_images, rows, positions, 4, threads)
            assert (n_chunks - 1) * step < n_images <= n_chunks * step  # every image, no empty chunk
            assert step <= -(-n_images // threads)  # no chunk larger than a thread's share
            assert 1 <= workers <= min(threads, n_chunks)


def test_the_kernels_blas_is_single_threaded_only_while_a_kernel_runs():
    path = blas_threads.numba_blas_path()
    if path is None:
        pytest.skip("SciPy's BLAS symbols could not be located on this platform")
    controller = threadpoolctl.ThreadpoolController().select(filepath=path)
    if not controller.lib_controllers or None in blas_threads.thread_functions():
        pytest.skip("SciPy's BLAS has no OpenBLAS thread functions here")
    count = 2  # more than the one thread the kernels set while they run
    library = ctypes.CDLL(kernels._kernels.__file__)
    library.dlt_blas_restore_threads.argtypes = [ctypes.c_int]
    with controller.limit(limits=count):
        assert library.dlt_blas_single_thread() == count  # what a kernel does when it starts
        assert controller.info()[0]["num_threads"] == 1
        library.dlt_blas_restore_threads(count)  # and when it returns
        assert controller.info()[0]["num_threads"] == count
        x, kern = np.ones((64, 3, 12, 12), np.float32), np.ones((4, 3, 5, 5), np.float32)
        kernels.corr2d(x, kern, **UNPADDED, flip=True, threads=2)
        assert controller.info()[0]["num_threads"] == count


def test_an_empty_batch_gives_empty_outputs_and_a_zero_filter_gradient():
    x = np.zeros((0, 2, 6, 6), np.float32)
    kern = np.ones((3, 2, 3, 3), np.float32)
    assert kernels.corr2d(x, kern, **UNPADDED, flip=True, threads=2).shape == (0, 3, 4, 4)
    gout = np.zeros((0, 3, 4, 4), np.float32)
    grad_w = kernels.corr2d_grad_weights(x, gout, kh=3, kw=3, **UNPADDED, flip=True, threads=2)
    assert grad_w.shape == kern.shape and not grad_w.any()
    assert kernels.corr2d_grad_inputs(kern, gout, height=6, width=6, **UNPADDED, flip=True,
                                      threads=2).shape == x.shape


def test_zero_channels_give_a_zero_result():
    x, kern = np.ones((2, 0, 6, 6), np.float32), np.ones((3, 0, 3, 3), np.float32)
    out = kernels.corr2d(x, kern, **UNPADDED, flip=False, threads=2)
    assert out.shape == (2, 3, 4, 4) and not out.any()


def test_other_dtypes_are_refused():
    x, kern = np.ones((1, 1, 4, 4), np.int32), np.ones((1, 1, 2, 2), np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.corr2d(x, kern, **UNPADDED, flip=False, threads=1)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.corr2d(x.astype(np.float32), kern.astype(np.float64), **UNPADDED, flip=False, threads=1)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.pool(x[0], **WINDOWS_2X2, ignore_border=True, mode=kernels.MAX, threads=1)


def test_mismatched_shapes_are_refused():
    x, kern = np.ones((1, 2, 4, 4), np.float32), np.ones((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="channel count"):
        kernels.corr2d(x, kern, **UNPADDED, flip=False, threads=1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.corr2d(x, np.ones((1, 2, 5, 5), np.float32), **UNPADDED, flip=False, threads=1)
    with pytest.raises(ValueError, match="num_groups"):
        kernels.corr2d(x, np.ones((3, 1, 2, 2), np.float32), **{**UNPADDED, "groups": 2}, flip=False, threads=1)
    pooled = kernels.pool(x[0], **WINDOWS_2X2, ignore_border=True, mode=kernels.MAX, threads=1)
    with pytest.raises(ValueError, match="does not match"):
        kernels.max_pool_grad(x[0], pooled[:, :1], pooled[:, :1], **WINDOWS_2X2, ignore_border=True, threads=1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.pool(x[0], **{**WINDOWS_2X2, "wh": 5}, ignore_border=True, mode=kernels.MAX, threads=1)


def test_the_geometry_tuples_match_the_c_structs():
    """The kernels read the geometry by field name from structs of int64s; the named
    tuples of the same fields must have the structs' sizes."""
    assert kernels.struct_sizes() == (8 * len(kernels.ConvShape._fields), 8 * len(kernels.PoolShape._fields))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_grouped_kernels_equal_one_convolution_per_group(flip, threads):
    """Grouped convolution and its gradients against each group computed alone."""
    rng = np.random.default_rng(11)
    groups, x = 3, rng.standard_normal((5, 6, 7, 8))
    kern, params = rng.standard_normal((9, 2, 3, 2)), dict(ph=1, pw=0, sh=2, sw=1, dh=1, dw=2)
    out = kernels.corr2d(x, kern, **params, groups=groups, flip=flip, threads=threads)
    gout = rng.standard_normal(out.shape)
    grad_w = kernels.corr2d_grad_weights(x, gout, kh=3, kw=2, **params, groups=groups, flip=flip, threads=threads)
    grad_x = kernels.corr2d_grad_inputs(kern, gout, height=7, width=8, **params, groups=groups, flip=flip,
                                        threads=threads)
    for g in range(groups):
        channels, filters = slice(2 * g, 2 * g + 2), slice(3 * g, 3 * g + 3)
        alone = dict(**params, groups=1, flip=flip, threads=1)
        np.testing.assert_allclose(out[:, filters], kernels.corr2d(x[:, channels], kern[filters], **alone),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad_w[filters], kernels.corr2d_grad_weights(
            x[:, channels], gout[:, filters], kh=3, kw=2, **alone), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad_x[:, channels], kernels.corr2d_grad_inputs(
            kern[filters], gout[:, filters], height=7, width=8, **alone), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("border, expected", [(kernels.FULL, (4, 2)), (kernels.HALF, (2, 1)), (3, (3, 3))])
def test_full_and_half_padding_come_from_the_filter_size(border, expected):
    """(3, 2) filters dilated by (2, 2) span (5, 3): 'full' pads (4, 2), 'half' (2, 1)."""
    x, kern = np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 2))
    out = kernels.corr2d(x, kern, ph=border, pw=border, sh=1, sw=1, dh=2, dw=2, groups=1, flip=False, threads=1)
    padded = np.pad(x, ((0, 0), (0, 0), (expected[0],) * 2, (expected[1],) * 2))
    np.testing.assert_array_equal(out, kernels.corr2d(padded, kern, ph=0, pw=0, sh=1, sw=1, dh=2, dw=2, groups=1,
                                                      flip=False, threads=1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["sum", "average_inc_pad", "average_exc_pad", "l2"])
@pytest.mark.parametrize("window, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 3))])
@pytest.mark.parametrize("pooled", [(3, 4), (40, 30), (2, 601)])  # one block of windows, several, a long row
def test_sum_pooling_of_whole_windows_equals_the_general_path_to_the_bit(pooled, window, stride, mode, dtype):
    """With the border ignored and no padding, sum, average and L2 pooling take a
    path of whole windows (in blocks of rows where the windows lie side by side);
    ``ignore_border=False`` on a size where every window is whole takes the general
    one.  Same windows, same order of additions."""
    rng = np.random.default_rng(3)
    (wh, ww), (sh, sw), (oh, ow) = window, stride, pooled
    height, width = (oh - 1) * sh + wh, (ow - 1) * sw + ww  # windows fit exactly: no partial one at the border
    x = rng.standard_normal((4, height, width)).astype(dtype)
    geometry = dict(wh=wh, ww=ww, sh=sh, sw=sw, ph=0, pw=0, mode=kernels.POOL_MODES[mode], threads=2)
    fast = kernels.pool(x, ignore_border=True, **geometry)
    general = kernels.pool(x, ignore_border=False, **geometry)
    assert fast.shape == general.shape == (4, oh, ow)
    np.testing.assert_array_equal(fast, general)
    windows = sliding_window_view(x, window, axis=(1, 2))[:, ::sh, ::sw]
    if mode == "l2":
        reference = np.sqrt((windows.astype(np.float64) ** 2).sum(axis=(-2, -1)))
    else:
        reference = windows.astype(np.float64).sum(axis=(-2, -1)) / (1 if mode == "sum" else wh * ww)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(fast, reference, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["sum", "average_exc_pad"])
def test_tiled_sum_pooling_gradient_copies_each_windows_gradient_to_its_inputs(mode, dtype):
    """2x2 windows tiling a 7x9 image (a last row and column in no window): each
    input gets its window's gradient (divided by 4 for the average), those
    outside every window 0, exactly."""
    gz = np.random.default_rng(4).standard_normal((3, 3, 4)).astype(dtype)
    gx = kernels.average_pool_grad(gz, 7, 9, **WINDOWS_2X2, ignore_border=True, mode=kernels.POOL_MODES[mode],
                                   threads=2)
    expected = np.zeros((3, 7, 9), dtype=dtype)
    expected[:, :6, :8] = np.repeat(np.repeat(gz if mode == "sum" else gz / gz.dtype.type(4), 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(gx, expected)


@pytest.mark.parametrize("window, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 3))])
def test_l2_pooling_and_its_gradient_match_numpy(window, stride):
    """Forward: the root of each window's sum of squares.  Backward, for windows
    that tile the image (a row at a time) or overlap (window by window): each
    input ``a`` gets ``a * gz / out`` from every window holding it, nothing from
    a window of zeros (the first one here)."""
    rng = np.random.default_rng(8)
    (wh, ww), (sh, sw) = window, stride
    x = rng.standard_normal((3, 2 * sh + wh + 1, 3 * sw + ww + 1))  # a column (and a row) in no window
    x[:, :wh, :ww] = 0
    geometry = dict(wh=wh, ww=ww, sh=sh, sw=sw, ph=0, pw=0, ignore_border=True, threads=2)
    out = kernels.pool(x, **geometry, mode=kernels.L2)
    oh, ow = out.shape[1:]
    windows = sliding_window_view(x, window, axis=(1, 2))[:, ::sh, ::sw][:, :oh, :ow]
    np.testing.assert_allclose(out, np.sqrt((windows**2).sum(axis=(-2, -1))), rtol=1e-14)
    gz = rng.standard_normal(out.shape)
    expected = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            if out[:, i, j].all():
                block = (slice(None), slice(i * sh, i * sh + wh), slice(j * sw, j * sw + ww))
                expected[block] += x[block] * (gz[:, i, j] / out[:, i, j])[:, None, None]
    assert (out[:, 0, 0] == 0).all()
    np.testing.assert_allclose(kernels.l2_pool_grad(x, out, gz, **geometry), expected, rtol=1e-13, atol=1e-15)
