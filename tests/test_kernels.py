"""The compiled convolution kernels split a minibatch into chunks of images,
one parallel loop over them: every split (many chunks, a ragged last one,
more threads than chunks) must give the same result as a NumPy reference.
Also: the BLAS that Numba calls is the one given a single thread."""

from __future__ import annotations

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
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("x_shape, k_shape", SHAPES)
def test_every_chunking_gives_the_reference(x_shape, k_shape, threads, dtype):
    assert kernels._chunking(10, 8 * 25, 24 * 24, 4, 1)[1] > 1, "the first shape no longer spans several chunks"
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    kern = rng.standard_normal(k_shape).astype(dtype)
    expected = correlate(x.astype(np.float64), kern.astype(np.float64))
    gout = rng.standard_normal(expected.shape).astype(dtype)
    tol = {"float32": 1e-4, "float64": 1e-10}[dtype]

    out = kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, threads)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * 10)

    # <gout, corr(x, k)> is linear in each argument: its gradients by the adjoint identities
    grad_w = kernels.corr2d_grad_weights(x, gout, k_shape[2], k_shape[3], 0, 0, 1, 1, 1, 1, threads)
    expected_w = np.einsum("ncijuv,nfij->fcuv", sliding_window_view(x, k_shape[2:], axis=(2, 3)), gout)
    np.testing.assert_allclose(grad_w, expected_w, rtol=tol, atol=tol * 100)

    grad_x = kernels.corr2d_grad_inputs(kern, gout, x_shape[2], x_shape[3], 0, 0, 1, 1, 1, 1, threads)
    probe = rng.standard_normal(x_shape)
    np.testing.assert_allclose(np.sum(grad_x * probe), np.sum(gout * correlate(probe, kern)),
                               rtol=tol * 10)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_chunks_cover_every_image_once(threads):
    for n_images in [1, 2, 3, 15, 16, 17, 100, 500]:
        for rows, positions in [(25, 576), (500, 64), (1, 1), (2000, 4096)]:
            step, n_chunks = kernels._chunking(n_images, rows, positions, 4, threads)
            bounds = [kernels._chunk_bounds(chunk, step, n_images) for chunk in range(n_chunks)]
            covered = [n for n0, n1 in bounds for n in range(n0, n1)]
            assert covered == list(range(n_images))
            assert all(n1 > n0 for n0, n1 in bounds)
            assert step <= -(-n_images // threads)  # no chunk larger than a thread's share


def test_the_blas_numba_calls_has_one_thread():
    path = blas_threads.numba_blas_path()
    if path is None:
        pytest.skip("SciPy's BLAS symbols could not be located on this platform")
    assert os.path.isfile(path)
    libraries = {os.path.realpath(lib["filepath"]): lib for lib in threadpoolctl.threadpool_info()}
    assert path in libraries, f"{path} is not among the loaded thread pools"
    assert libraries[path]["num_threads"] == 1


def test_an_empty_batch_gives_empty_outputs_and_a_zero_filter_gradient():
    x = np.zeros((0, 2, 6, 6), np.float32)
    kern = np.ones((3, 2, 3, 3), np.float32)
    assert kernels.corr2d(x, kern, 0, 0, 1, 1, 1, 1, 2).shape == (0, 3, 4, 4)
    gout = np.zeros((0, 3, 4, 4), np.float32)
    grad_w = kernels.corr2d_grad_weights(x, gout, 3, 3, 0, 0, 1, 1, 1, 1, 2)
    assert grad_w.shape == kern.shape and not grad_w.any()
    assert kernels.corr2d_grad_inputs(kern, gout, 6, 6, 0, 0, 1, 1, 1, 1, 2).shape == x.shape
