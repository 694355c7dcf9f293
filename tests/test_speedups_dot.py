"""SplitDot (deeplearning_tutorial.speedups.dot): in graphs compiled with speedups.mode() only,
the same results as NumPy for every layout and split, and the BLAS's threads given back."""

from __future__ import annotations

import functools

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import threadpoolctl
from conftest import REPO, run_python
from pytensor.tensor.math import Dot

from deeplearning_tutorial import speedups
from deeplearning_tutorial.ops.kernels import blas_threads
from deeplearning_tutorial.speedups import dot

# (m, k, n): split by rows (m >= n), by columns, fewer rows than threads, one
# column, and a product under the parallel threshold.
SHAPES = [(300, 200, 100), (40, 300, 700), (1, 5000, 1000), (5000, 1000, 1), (3, 7, 5)]


@functools.cache
def compiled_dot(dtype, transpose_x):
    x, y = pt.matrix(dtype=dtype), pt.matrix(dtype=dtype)
    return pytensor.function([x, y], pt.dot(x.T, y) if transpose_x else pt.dot(x, y), mode=speedups.mode("NUMBA"))


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


def product_ops(f) -> list[type]:
    return [type(node.op) for node in f.maker.fgraph.toposort() if isinstance(node.op, Dot)]


def test_large_products_really_take_the_parallel_path():
    assert 300 * 200 * 100 >= dot.PARALLEL_MIN > 3 * 7 * 5
    assert product_ops(compiled_dot("float32", False)) == [dot.SplitDot]
    code = ("import pytensor.tensor as pt; from deeplearning_tutorial.speedups import dot;"
            "node = dot.SplitDot()(pt.matrix(dtype='float32'), pt.matrix(dtype='float32')).owner;"
            "print(dot.numba_funcify_SplitDot(node.op, node)[1])")
    result = run_python("-c", code, cwd=REPO, env={"NUMBA_NUM_THREADS": "2"})  # two threads split it
    assert result.stdout.startswith("deeplearning_tutorial.speedups.dot-float32-threads2-"), result.stderr


def test_only_the_speedups_mode_and_float_products_get_it():
    x, y = pt.matrix(dtype="float32"), pt.matrix(dtype="float32")
    assert product_ops(pytensor.function([x, y], pt.dot(x, y), mode="NUMBA")) == [Dot]
    assert product_ops(pytensor.function([x, y], pt.dot(x, y), mode=speedups.mode("CVM"))) == []  # CVM's own Gemm
    assert speedups.mode("CVM") == pytensor.compile.mode.get_mode("CVM")


def test_other_dtypes_keep_pytensors_dot():
    x, y = pt.matrix(dtype="int64"), pt.matrix(dtype="float32")
    f = pytensor.function([x, y], pt.dot(x, y), mode=speedups.mode("NUMBA"))
    assert product_ops(f) == [Dot]
    xv = np.arange(6).reshape(2, 3)
    yv = np.ones((3, 2), np.float32)
    np.testing.assert_allclose(f(xv, yv), xv @ yv)


def test_the_blas_gets_its_threads_back():
    path = blas_threads.numba_blas_path()
    controller = threadpoolctl.ThreadpoolController().select(filepath=path) if path else None
    if not controller or not controller.lib_controllers:
        pytest.skip("SciPy's BLAS is not one threadpoolctl controls")
    with controller.limit(limits=2):  # more than the one thread the product sets while it runs
        compiled_dot("float64", False)(np.ones((300, 200)), np.ones((200, 100)))
        assert controller.info()[0]["num_threads"] == 2


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError):
        compiled_dot("float64", False)(np.ones((300, 200)), np.ones((201, 100)))


def _layouts(array):
    """The same matrix in several memory layouts: (name, view)."""
    rows, cols = array.shape
    doubled = np.zeros((2 * rows, 2 * cols), array.dtype)
    doubled[::2, ::2] = array
    return [
        ("C", array), ("F", np.asfortranarray(array)),
        ("reversed rows", np.ascontiguousarray(array[::-1])[::-1]),
        ("reversed columns", np.asfortranarray(array[:, ::-1])[:, ::-1]),
        ("every other row and column", doubled[::2, ::2]),
        ("padded rows", np.pad(array, ((0, 0), (0, 3)))[:, :cols]),
        ("padded columns, F", np.asfortranarray(np.pad(array, ((0, 3), (0, 0))))[:rows]),
    ]


@functools.cache
def callable_gemm(dtype):
    """``gemm_into`` behind a wrapper Python can call (it is compiled for calls from Numba only)."""
    gemm = dot.gemm_into(np.dtype(dtype))
    return numba.njit(lambda a, b, out: gemm(a, b, out))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", [(6, 5, 4), (1, 5, 4), (6, 1, 4), (6, 5, 1), (1, 1, 1)])
def test_gemm_block_reads_every_layout(m, k, n, dtype):
    """The BLAS call behind every block: each operand layout, into whole results and into
    blocks of rows and of columns of a C-contiguous result, against NumPy."""
    rng = np.random.default_rng(5)
    gemm = callable_gemm(dtype)
    a0, b0 = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    tol = {"float32": 1e-5, "float64": 1e-13}[dtype]
    for (a_name, a), (b_name, b) in ((la, lb) for la in _layouts(a0) for lb in _layouts(b0)):
        out = np.full((m + 2, n + 2), np.nan, dtype)
        gemm(a, b, out[1:m + 1, 1:n + 1])
        np.testing.assert_allclose(out[1:m + 1, 1:n + 1], a0.astype(np.float64) @ b0, rtol=tol, atol=tol,
                                   err_msg=f"a {a_name}, b {b_name}")
        assert np.isnan(out[0]).all() and np.isnan(out[:, 0]).all(), "wrote outside its block"
        assert np.isnan(out[-1]).all() and np.isnan(out[:, -1]).all(), "wrote outside its block"


def test_empty_products():
    gemm = callable_gemm("float64")
    out = np.full((3, 2), np.nan)
    gemm(np.ones((3, 0)), np.ones((0, 2)), out)
    np.testing.assert_array_equal(out, 0)
    gemm(np.ones((0, 4)), np.ones((4, 2)), np.empty((0, 2)))
    gemm(np.ones((3, 4)), np.ones((4, 0)), np.empty((3, 0)))


def test_reversed_and_strided_operands_in_a_graph():
    """Views PyTensor hands to Dot unchanged (reversed, strided), through the parallel path."""
    x, y = pt.matrix(dtype="float64"), pt.matrix(dtype="float64")
    f = pytensor.function([x, y], pt.dot(x[::-1, ::2], y[:, ::-1]), mode=speedups.mode("NUMBA"))
    rng = np.random.default_rng(6)
    xv, yv = rng.standard_normal((400, 800)), rng.standard_normal((400, 300))
    np.testing.assert_allclose(f(xv, yv), xv[::-1, ::2] @ yv[:, ::-1], rtol=1e-12, atol=1e-10)
