"""L2 pooling, stochastic pooling and local contrast normalization against NumPy/SciPy
references, in every mode, with verify_grad."""

from __future__ import annotations

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy import signal
from test_ops import JAX, reference_pool

from deeplearning_tutorial.ops import StochasticPool, kernels, local_contrast_normalization, pool_2d, stochastic_pool_2d
from deeplearning_tutorial.ops.kernels import window_uniform

CASES = [
    # (input shape, ws, ignore_border, stride)
    ((2, 3, 6, 6), (2, 2), True, None),
    ((2, 2, 7, 5), (2, 2), False, None),
    ((1, 2, 7, 8), (3, 3), True, (1, 2)),
    ((3, 7, 6), (3, 2), False, (2, 1)),
]


MODES = ["NUMBA", "CVM", "FAST_COMPILE", "JAX"]


def param(*values):
    """A pytest parameter set whose last value is a mode; JAX's is skipped where JAX is missing."""
    return pytest.param(*values, marks=JAX.marks if values[-1] == "JAX" else ())


def cross_section(modes=MODES):
    """Every case in the C VM mode; one or two in each mode that compiles more (NUMBA, JAX) or
    runs the same kernels (FAST_COMPILE, the Python mode)."""
    picks = {"CVM": range(len(CASES)), "NUMBA": (0, 3), "FAST_COMPILE": (1,), "JAX": (2,)}
    return [param(CASES[i], mode) for mode in modes for i in picks[mode]]


def function(inputs, outputs, mode):
    return pytensor.function(inputs, outputs, mode=mode)


def symbolic(value):
    """A tensor variable of value's dtype and rank; static shape (JAX needs it)."""
    return pt.tensor(dtype=value.dtype, shape=value.shape)


def windows(x, ws, ignore_border, stride):
    """Every pooling window of x (..., h, w) as (..., oh, ow, wh * ww), zero-filled past the border."""
    stride = stride or ws
    h, w = x.shape[-2:]
    oh, ow = reference_pool(x, ws, ignore_border, stride).shape[-2:]
    padded = np.zeros((*x.shape[:-2], (oh - 1) * stride[0] + ws[0], (ow - 1) * stride[1] + ws[1]), x.dtype)
    rows, cols = min(h, padded.shape[-2]), min(w, padded.shape[-1])
    padded[..., :rows, :cols] = x[..., :rows, :cols]
    out = np.empty((*x.shape[:-2], oh, ow, ws[0] * ws[1]), x.dtype)
    for i, j in itertools.product(range(oh), range(ow)):
        block = padded[..., i * stride[0]: i * stride[0] + ws[0], j * stride[1]: j * stride[1] + ws[1]]
        out[..., i, j, :] = block.reshape(*x.shape[:-2], -1)
    return out


# ----------------------------------------------------------------------------
# L2 pooling
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("case, mode", cross_section())
def test_l2_pool_is_the_root_of_the_sum_of_squares(case, mode):
    shape, ws, ignore_border, stride = case
    xv = np.random.default_rng(1).normal(size=shape)
    x = symbolic(xv)
    result = function([x], pool_2d(x, ws, ignore_border=ignore_border, stride=stride, mode="l2"), mode)(xv)
    expected = np.sqrt((windows(xv, ws, ignore_border, stride) ** 2).sum(axis=-1))
    np.testing.assert_allclose(result, expected, rtol=1e-12)


def test_l2_pool_with_padding_counts_the_padding_as_zeros():
    xv = np.random.default_rng(2).normal(size=(1, 1, 5, 5))
    x = symbolic(xv)
    result = function([x], pool_2d(x, (3, 3), ignore_border=True, stride=(2, 2), pad=(1, 1), mode="l2"), "CVM")(xv)
    np.testing.assert_allclose(result, np.sqrt(reference_pool(xv**2, (3, 3), True, (2, 2), (1, 1), "sum")))


@pytest.mark.parametrize("case, mode", cross_section(["CVM", "NUMBA", "JAX"]))
def test_l2_pool_gradients(case, mode):
    shape, ws, ignore_border, stride = case
    xv = np.random.default_rng(3).normal(size=shape)
    verify_grad(lambda x: pool_2d(x, ws, ignore_border=ignore_border, stride=stride, mode="l2"), [xv],
                rng=np.random.default_rng(4), mode=mode)


@pytest.mark.parametrize("mode", [param(mode) for mode in MODES])
def test_l2_pool_gradient_is_zero_at_an_all_zero_window(mode):
    # window 1 is all zeros; window 2 has the norm 5
    xv = np.array([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, -4.0]])
    x = symbolic(xv)
    out = pool_2d(x, (2, 2), ignore_border=True, mode="l2")
    values, grad = function([x], [out, pt.grad(out.sum(), x)], mode)(xv)
    np.testing.assert_allclose(values, [[0.0, 5.0]])
    np.testing.assert_allclose(grad, [[0, 0, 0.6, 0], [0, 0, 0, -0.8]])


@pytest.mark.parametrize("mode", ["NUMBA", pytest.param("CVM", marks=pytest.mark.slow)])
def test_l2_pool_second_derivatives(mode):
    """L2PoolGrad's own gradient (a graph of the same values), through a cubed norm."""
    xv = np.random.default_rng(6).normal(size=(2, 1, 4, 6))
    verify_grad(lambda x: pt.grad(pt.sum(pool_2d(x, (2, 3), ignore_border=True, stride=(1, 2), mode="l2") ** 3), x),
                [xv], rng=np.random.default_rng(7), mode=mode)


@pytest.mark.parametrize("mode", ["NUMBA", pytest.param("CVM", marks=pytest.mark.slow)])
def test_deterministic_stochastic_pool_second_derivatives(mode):
    """WeightedAveragePoolGrad's own gradient (the graph of sum poolings it equals)."""
    xv = np.abs(np.random.default_rng(8).normal(size=(2, 1, 4, 6))) + 0.1
    verify_grad(lambda x: pt.grad(pt.sum(stochastic_pool_2d(x, (2, 3), stride=(1, 2), deterministic=True) ** 3), x),
                [xv], rng=np.random.default_rng(9), mode=mode)


def test_pool_2d_lists_l2_among_its_modes():
    with pytest.raises(ValueError, match="'l2'"):
        pool_2d(pt.matrix(), (2, 2), ignore_border=True, mode="l3")


# ----------------------------------------------------------------------------
# Stochastic pooling
# ----------------------------------------------------------------------------


def reference_stochastic_pool(x, u, ws, ignore_border, stride):
    """Per window: the first value whose cumulative sum exceeds u * sum (0 for a window of zeros)."""
    blocks = windows(x, ws, ignore_border, stride)
    cumulative = np.cumsum(blocks, axis=-1)
    out = np.zeros(blocks.shape[:-1])
    for index in np.ndindex(*blocks.shape[:-1]):
        if cumulative[index][-1] > 0:
            k = np.argmax(cumulative[index] > u[index] * cumulative[index][-1])
            out[index] = blocks[index][k]
    return out


def splitmix64_uniforms(seed, shape):
    """The windows' uniform numbers for the draw ``seed``, in NumPy: the top 53 bits of
    SplitMix64's outputs 1, 2, ... (window i in C order gets output i + 1); a negative
    seed is its 64-bit two's complement, as the int64 seed becomes a uint64 in C."""
    index = np.arange(1, np.prod(shape) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed % 2**64) + index * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) / 2.0**53).reshape(shape)


def test_the_windows_numbers_are_splitmix64s():
    # SplitMix64's first output from the state 0 (the reference implementation's)
    assert window_uniform(0, 0) == (0xE220A8397B1DCDAF >> 11) / 2.0**53
    seed = 2**61 + 12345
    np.testing.assert_array_equal([window_uniform(seed, i) for i in range(6)], splitmix64_uniforms(seed, (6,)))


def fixed_draw_pool(ws, ignore_border, stride, seed):
    op = StochasticPool(ws, stride or ws, ignore_border)
    return lambda x: op(x, seed)[0]


@pytest.mark.parametrize("case, mode", cross_section(["CVM", "NUMBA", "FAST_COMPILE"]))
def test_stochastic_pool_picks_the_value_where_the_cumulative_sum_passes_the_draw(case, mode):
    shape, ws, ignore_border, stride = case
    rng = np.random.default_rng(5)
    xv = rng.random(shape)
    xv[..., :2, :2] = 0.0  # an all-zero window
    seed = pt.lscalar("seed")
    x = symbolic(xv)
    f = function([x, seed], fixed_draw_pool(ws, ignore_border, stride, seed)(x), mode)
    for seed_value in (7, 2**62 - 1):
        u = splitmix64_uniforms(seed_value, reference_pool(xv, ws, ignore_border, stride).shape)
        np.testing.assert_array_equal(f(xv, seed_value), reference_stochastic_pool(xv, u, ws, ignore_border, stride))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, stride, ignore_border", [
    ((3, 60, 60), (2, 2), True),  # 900 windows an image: several blocks of rows in the vectorised loop
    ((2, 3, 1203), (2, 2), True),  # one row of 601 windows, longer than a block
    ((4, 9, 10), (1, 3), False),  # overlapping rows, another column stride, windows cut by the border
])
def test_the_2x2_kernel_picks_as_the_reference_in_every_layout(shape, stride, ignore_border, dtype):
    """The kernel's vectorised path for whole 2x2 windows (and the general one for the
    windows the border cuts) against the NumPy reference, with windows of zeros."""
    rng = np.random.default_rng(11)
    xv = rng.random(shape).astype(dtype)
    xv[rng.random(shape) < 0.3] = 0
    seed = -(2**62) + 3
    out, picked = kernels.stochastic_pool(xv, seed, 2, 2, *stride, ignore_border, 2)
    u = splitmix64_uniforms(seed, out.shape)
    np.testing.assert_array_equal(out, reference_stochastic_pool(xv, u, (2, 2), ignore_border, stride))
    assert out.dtype == xv.dtype
    images = np.arange(shape[0])[:, None, None]
    np.testing.assert_array_equal(np.where(picked >= 0, xv.reshape(shape[0], -1)[images, picked], 0), out)
    assert ((picked >= 0) == (out > 0)).all()


@pytest.mark.parametrize("case, mode", cross_section(["CVM", "NUMBA"]))
def test_stochastic_pool_gradient_goes_to_the_value_picked(case, mode):
    shape, ws, ignore_border, stride = case
    rng = np.random.default_rng(6)
    xv = rng.permutation(np.prod(shape)).reshape(shape) / 7.0 + 0.1  # distinct and positive
    verify_grad(fixed_draw_pool(ws, ignore_border, stride, pt.as_tensor(np.int64(6))), [xv],
                rng=np.random.default_rng(7), mode=mode)


def test_stochastic_pool_picks_each_value_with_probability_proportional_to_it():
    n = 40000
    xv = np.tile(np.array([[1.0, 2.0], [3.0, 4.0]]), (n, 1, 1))
    x = pt.tensor3()
    picks = function([x], stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=8)), "NUMBA")(xv).ravel()
    counts = np.array([(picks == value).sum() for value in (1.0, 2.0, 3.0, 4.0)])
    p = np.array([0.1, 0.2, 0.3, 0.4])
    # each count within 5 standard deviations of its expectation
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p))), counts


@pytest.mark.parametrize("mode", ["NUMBA", "CVM"])
def test_stochastic_pool_draws_anew_at_each_call_and_repeats_with_the_seed(mode):
    xv = np.random.default_rng(9).random((4, 3, 8, 8))
    x = pt.tensor4()

    def compiled(seed):
        return function([x], stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=seed)), mode)

    first = compiled(10)
    a, b = first(xv), first(xv)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(compiled(10)(xv), a)
    # every output is one of its window's values
    assert np.all((windows(xv, (2, 2), True, None) == a[..., None]).any(axis=-1))


@pytest.mark.parametrize("mode", ["NUMBA", "CVM", "FAST_COMPILE"])
def test_stochastic_pool_of_a_zero_window_is_zero_with_zero_gradient(mode):
    xv = np.array([[0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    x = pt.matrix()
    out = stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=11))
    values, grad = function([x], [out, pt.grad(out.sum(), x)], mode)(xv)
    np.testing.assert_array_equal(values, [[0.0, 2.0]])
    np.testing.assert_array_equal(grad, [[0, 0, 0, 1], [0, 0, 0, 0]])


def reference_weighted_average(x, ws, ignore_border, stride):
    blocks = windows(x, ws, ignore_border, stride)
    sums = blocks.sum(axis=-1)
    return np.divide((blocks**2).sum(axis=-1), sums, out=np.zeros_like(sums), where=sums > 0)


@pytest.mark.parametrize("case, mode", cross_section())
def test_deterministic_stochastic_pool_is_the_probability_weighted_average(case, mode):
    shape, ws, ignore_border, stride = case
    xv = np.random.default_rng(12).random(shape)
    xv[..., :3, :3] = 0.0
    x = symbolic(xv)
    out = stochastic_pool_2d(x, ws, stride=stride, ignore_border=ignore_border, deterministic=True)
    np.testing.assert_allclose(function([x], out, mode)(xv), reference_weighted_average(xv, ws, ignore_border, stride),
                               rtol=1e-12)


@pytest.mark.parametrize("case, mode", [(CASES[0], "CVM"), (CASES[1], "NUMBA"), (CASES[2], "CVM"), (CASES[3], "CVM"),
                                        pytest.param(CASES[2], "JAX", marks=JAX.marks)])
def test_deterministic_stochastic_pool_gradients(case, mode):
    shape, ws, ignore_border, stride = case
    xv = np.random.default_rng(13).random(shape) + 0.05
    verify_grad(lambda x: stochastic_pool_2d(x, ws, stride=stride, ignore_border=ignore_border, deterministic=True),
                [xv], rng=np.random.default_rng(14), mode=mode)


@pytest.mark.parametrize("deterministic, mode",
                         [(d, m) for d in (False, True) for m in ("NUMBA", "CVM", "FAST_COMPILE")])
def test_stochastic_pool_refuses_negative_activations_when_it_runs(deterministic, mode):
    xv = np.ones((1, 2, 4, 4))
    xv[0, 1, 3, 2] = -0.5
    x = symbolic(xv)
    f = function([x], stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=1), deterministic=deterministic),
                 mode)
    f(np.abs(xv))
    with pytest.raises(ValueError, match="non-negative activations"):
        f(xv)


def test_stochastic_pool_rejects_bad_arguments_when_building():
    x = pt.tensor(shape=(1, 1, 4, 4))
    with pytest.raises(ValueError, match="larger than the input"):
        stochastic_pool_2d(x, (5, 5))
    with pytest.raises(ValueError, match="ws and stride must be >= 1"):
        stochastic_pool_2d(x, (2, 2), stride=(0, 1))
    with pytest.raises(TypeError, match="shared random generator"):
        stochastic_pool_2d(x, (2, 2), rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="2 or more dimensions"):
        stochastic_pool_2d(pt.vector(), (2, 2))
    rng = pt.random.shared_rng(seed=0)
    stochastic_pool_2d(x, (2, 2), rng=rng)
    with pytest.raises(ValueError, match="its own"):
        stochastic_pool_2d(x, (2, 2), rng=rng)


# ----------------------------------------------------------------------------
# Local contrast normalization
# ----------------------------------------------------------------------------


def reference_lcn(x, window, sigma, epsilon):
    """Jarrett et al.'s formula with SciPy correlations, the border renormalized by the window's coverage."""
    offsets = np.arange(window) - window // 2
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    g /= g.sum()
    coverage = signal.correlate2d(np.ones(x.shape[2:]), g, mode="same")

    def mean_across_maps(a):  # (maps, rows, cols) -> (rows, cols)
        return sum(signal.correlate2d(m, g, mode="same") for m in a) / len(a) / coverage

    out = np.empty_like(x)
    for n, image in enumerate(x):
        centred = image - mean_across_maps(image)
        deviation = np.sqrt(np.maximum(mean_across_maps(centred**2), epsilon**2))
        out[n] = centred / np.maximum(deviation.mean(), deviation)
    return out


@pytest.mark.parametrize("shape, window, sigma, mode", [
    ((2, 3, 10, 9), 9, 2.0, "NUMBA"), ((2, 3, 10, 9), 5, 1.0, "CVM"), ((1, 1, 6, 7), 3, 0.7, "FAST_COMPILE"),
    pytest.param((2, 2, 8, 8), 5, 1.5, "JAX", marks=JAX.marks),
])
def test_local_contrast_normalization_matches_the_formula(shape, window, sigma, mode):
    xv = np.random.default_rng(15).normal(size=shape) * 3 + 1
    xv[0, :, :4, :4] = 2.0  # a flat region: the floor c and epsilon matter
    x = symbolic(xv)
    result = function([x], local_contrast_normalization(x, window, sigma), mode)(xv)
    np.testing.assert_allclose(result, reference_lcn(xv, window, sigma, 1e-4), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["CVM", "NUMBA"])
def test_local_contrast_normalization_gradients(mode):
    xv = np.random.default_rng(16).normal(size=(2, 2, 5, 6))
    verify_grad(lambda x: local_contrast_normalization(x, 3, 1.0), [xv], rng=np.random.default_rng(17), mode=mode)


def test_local_contrast_normalization_output_has_zero_local_mean_and_bounded_scale():
    xv = np.random.default_rng(18).normal(size=(1, 4, 16, 16)) * 10 + 5
    x = symbolic(xv)
    y = function([x], local_contrast_normalization(x, 9, 2.0), "CVM")(xv)
    assert abs(y.mean()) < 0.1 and 0.3 < y.std() < 2.0


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(window=4), ValueError, "positive odd integer"),
    (dict(window=0), ValueError, "positive odd integer"),
    (dict(sigma=0.0), ValueError, "sigma and epsilon must be > 0"),
    (dict(epsilon=-1.0), ValueError, "sigma and epsilon must be > 0"),
])
def test_local_contrast_normalization_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        local_contrast_normalization(pt.tensor4(), **kwargs)
    with pytest.raises(TypeError, match="4-D"):
        local_contrast_normalization(pt.matrix())
