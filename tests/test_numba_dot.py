"""PyTensor's Dot in the NUMBA mode, split over threads for large float products
(deeplearning_tutorial.ops.numba_dot): the same results as NumPy for every
layout and split, PyTensor's own implementation elsewhere."""

from __future__ import annotations

import functools
import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import deeplearning_tutorial.ops  # noqa: F401  (registers the Numba Dot)
from deeplearning_tutorial.ops import numba_dot

# (m, k, n): split by rows (m >= n), by columns, fewer rows than threads, one
# column, and a product under the parallel threshold.
SHAPES = [(300, 200, 100), (40, 300, 700), (1, 5000, 1000), (5000, 1000, 1), (3, 7, 5)]


@functools.cache
def compiled_dot(dtype, transpose_x):
    x, y = pt.matrix(dtype=dtype), pt.matrix(dtype=dtype)
    return pytensor.function([x, y], pt.dot(x.T, y) if transpose_x else pt.dot(x, y), mode="NUMBA")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("transpose_x", [False, True])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_matches_numpy(m, k, n, transpose_x, dtype):
    rng = np.random.default_rng(3)
    xv = rng.standard_normal((k, m) if transpose_x else (m, k)).astype(dtype)
    yv = rng.standard_normal((k, n)).astype(dtype)
    result = compiled_dot(dtype, transpose_x)(xv, yv)
    expected = (xv.T if transpose_x else xv).astype(np.float64) @ yv
    tol = {"float32": 1e-4, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(result, expected, rtol=tol, atol=tol * np.sqrt(k) * 10)


def test_large_products_really_take_the_parallel_path():
    assert 300 * 200 * 100 >= numba_dot.PARALLEL_MIN > 3 * 7 * 5
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: PyTensor's Dot is kept")
    node = pt.dot(pt.matrix(dtype="float32"), pt.matrix(dtype="float32")).owner
    _, key = numba_dot.numba_funcify_Dot(node.op, node)
    assert key.startswith("deeplearning_tutorial.ops.numba_dot-float32")


def test_other_dtypes_keep_pytensors_dot():
    x, y = pt.matrix(dtype="int64"), pt.matrix(dtype="float32")
    node = pt.dot(x, y).owner
    _, key = numba_dot.numba_funcify_Dot(node.op, node)
    assert key is None or "deeplearning_tutorial" not in key
    xv = np.arange(6).reshape(2, 3)
    yv = np.ones((3, 2), np.float32)
    np.testing.assert_allclose(pytensor.function([x, y], pt.dot(x, y), mode="NUMBA")(xv, yv), xv @ yv)


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError):
        compiled_dot("float64", False)(np.ones((300, 200)), np.ones((201, 100)))
