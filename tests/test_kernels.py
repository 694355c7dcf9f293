"""The compiled kernels split a minibatch into chunks of images, one parallel
loop over them: every split (many chunks, a ragged last one, more threads
than chunks) must give the same result as a NumPy reference, with the
filters flipped or not.  Also: the BLAS they call is the one given a single
thread, and they refuse what they cannot compute."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import threadpoolctl
from numpy.lib.stride_tricks import sliding_window_view

from deeplearning_tutorial.ops import blas_threads, kernels


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

    out = kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, flip, threads)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * 10)

    # <gout, corr(x, k)> is linear in each argument: its gradients by the adjoint identities
    grad_w = kernels.corr2d_grad_weights(x, gout, k_shape[2], k_shape[3], 0, 0, 1, 1, 1, 1, flip, threads)
    expected_w = np.einsum("ncijuv,nfij->fcuv", sliding_window_view(x, k_shape[2:], axis=(2, 3)), gout)
    if flip:
        expected_w = expected_w[:, :, ::-1, ::-1]
    np.testing.assert_allclose(grad_w, expected_w, rtol=tol, atol=tol * 100)
    assert grad_w.flags.c_contiguous

    grad_x = kernels.corr2d_grad_inputs(kern, gout, x_shape[2], x_shape[3], 0, 0, 1, 1, 1, 1, flip, threads)
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
    count = controller.info()[0]["num_threads"]
    library = ctypes.CDLL(kernels._kernels.__file__)
    library.dlt_blas_restore_threads.argtypes = [ctypes.c_int]
    assert library.dlt_blas_single_thread() == count  # what a kernel does when it starts
    assert controller.info()[0]["num_threads"] == 1
    library.dlt_blas_restore_threads(count)  # and when it returns
    assert controller.info()[0]["num_threads"] == count
    x, kern = np.ones((64, 3, 12, 12), np.float32), np.ones((4, 3, 5, 5), np.float32)
    kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, True, 2)
    assert controller.info()[0]["num_threads"] == count


def test_an_empty_batch_gives_empty_outputs_and_a_zero_filter_gradient():
    x = np.zeros((0, 2, 6, 6), np.float32)
    kern = np.ones((3, 2, 3, 3), np.float32)
    assert kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, True, 2).shape == (0, 3, 4, 4)
    gout = np.zeros((0, 3, 4, 4), np.float32)
    grad_w = kernels.corr2d_grad_weights(x, gout, 3, 3, 0, 0, 1, 1, 1, 1, True, 2)
    assert grad_w.shape == kern.shape and not grad_w.any()
    assert kernels.corr2d_grad_inputs(kern, gout, 6, 6, 0, 0, 1, 1, 1, 1, True, 2).shape == x.shape


def test_zero_channels_give_a_zero_result():
    x, kern = np.ones((2, 0, 6, 6), np.float32), np.ones((3, 0, 3, 3), np.float32)
    out = kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, False, 2)
    assert out.shape == (2, 3, 4, 4) and not out.any()


def test_other_dtypes_are_refused():
    x, kern = np.ones((1, 1, 4, 4), np.int32), np.ones((1, 1, 2, 2), np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, False, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.corr2d(x.astype(np.float32), kern.astype(np.float64), 0, 0, 1, 1, 1, 1, False, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.pool(x[0], 2, 2, 2, 2, 0, 0, True, kernels.MAX, 1)


def test_mismatched_shapes_are_refused():
    x, kern = np.ones((1, 2, 4, 4), np.float32), np.ones((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="channel count"):
        kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, False, 1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernels.corr2d(x, np.ones((1, 2, 5, 5), np.float32), 0, 0, 1, 1, 1, 1, False, 1)
    pooled = kernels.pool(x[0], 2, 2, 2, 2, 0, 0, True, kernels.MAX, 1)
    with pytest.raises(ValueError, match="does not match"):
        kernels.max_pool_grad(x[0], pooled[:, :1], pooled[:, :1], 2, 2, 2, 2, 0, 0, True, 1)
