"""float32_tanh (deeplearning_tutorial.speedups.tanh): accuracy, special values, and only in
graphs compiled with speedups.mode()."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.elemwise import Elemwise

from deeplearning_tutorial import speedups
from deeplearning_tutorial.speedups.tanh import Float32Tanh

FAST = speedups.mode("NUMBA")


def ulp_errors(result: np.ndarray, x: np.ndarray) -> np.ndarray:
    """|result - tanh(x)| in units of the float32 spacing at the exact value (float64 as exact)."""
    exact = np.tanh(x.astype(np.float64))
    return np.abs(result.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32))


def sample_float32() -> np.ndarray:
    rng = np.random.default_rng(0)
    uniform = rng.uniform(-12, 12, 2_000_000)
    magnitudes = 10.0 ** rng.uniform(-38, 1.5, 1_000_000)  # tiny to beyond the clamp, both signs
    near_clamp = rng.uniform(8.5, 9.5, 100_000)
    x = np.concatenate([uniform, magnitudes, -magnitudes, near_clamp, -near_clamp]).astype(np.float32)
    return x[np.isfinite(x) & (x != 0)]


def test_float32_tanh_is_within_half_an_ulp_and_keeps_special_values():
    x = pt.vector("x", dtype="float32")
    f = pytensor.function([x], pt.tanh(x), mode=FAST)
    values = sample_float32()
    assert ulp_errors(f(values), values).max() <= 0.51
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-45], dtype=np.float32)
    result = f(special)
    np.testing.assert_array_equal(result[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(result[1]) and np.isnan(result[4])
    np.testing.assert_array_equal(result[5:], [1.0, -1.0, np.float32(1e-45)])


def test_inside_fused_elementwise_graphs_and_gradients():
    x = pt.matrix("x", dtype="float32")
    b = pt.vector("b", dtype="float32")
    out = pt.tanh(x + b)  # fused into one Composite, as in LeNetConvPoolLayer
    grad = pytensor.grad(out.sum(), x)  # 1 - tanh^2
    f = pytensor.function([x, b], [out, grad], mode=FAST)
    rng = np.random.default_rng(1)
    xv, bv = rng.normal(0, 3, (300, 40)).astype(np.float32), rng.normal(0, 1, 40).astype(np.float32)
    value, gradient = f(xv, bv)
    assert ulp_errors(value, xv + bv).max() <= 0.51
    np.testing.assert_allclose(gradient, 1 - np.tanh((xv + bv).astype(np.float64)) ** 2, rtol=0, atol=2e-7)


def test_float64_keeps_pytensors_tanh():
    x = pt.vector("x", dtype="float64")
    f = pytensor.function([x], pt.tanh(x), mode=FAST)
    values = np.random.default_rng(2).normal(0, 3, 100_000)
    np.testing.assert_allclose(f(values), np.tanh(values), rtol=1e-15, atol=0)


def test_only_the_speedups_mode_gets_it():
    x = pt.vector("x", dtype="float32")
    values = np.random.default_rng(3).normal(0, 3, 10_000).astype(np.float32)

    def uses_float32_tanh(f):
        return any(isinstance(node.op, Elemwise) and isinstance(node.op.scalar_op, Float32Tanh)
                   for node in f.maker.fgraph.toposort())

    fast, default = pytensor.function([x], pt.tanh(x), mode=FAST), pytensor.function([x], pt.tanh(x), mode="NUMBA")
    assert uses_float32_tanh(fast) and not uses_float32_tanh(default)
    # PyTensor's own tanh (the C library's tanhf, within about 2 ulp) is untouched: its bits differ from ours
    assert ulp_errors(default(values), values).max() <= 2.5
    assert not np.array_equal(default(values), fast(values))
