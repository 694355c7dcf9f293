"""conv2d and pool_2d against NumPy/SciPy references, in every mode, with verify_grad."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import run_python
from pytensor.gradient import verify_grad
from scipy import signal

from deeplearning_tutorial.ops import conv2d, pool_2d

# PyTensor's JAX backend, where JAX is installed (the test extra installs it)
JAX = pytest.param("JAX", marks=pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                                   reason="JAX is not installed"))
MODES = ["NUMBA", "CVM", "FAST_COMPILE", JAX]


# ----------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------


def reference_conv2d(x, w, border_mode="valid", subsample=(1, 1), filter_flip=True, dilation=(1, 1)):
    """SciPy convolve2d/correlate2d per (image, filter), summed over channels."""
    n_filters, channels, kh, kw = w.shape
    dilated = np.zeros((n_filters, channels, (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), w.dtype)
    dilated[:, :, :: dilation[0], :: dilation[1]] = w
    dkh, dkw = dilated.shape[2:]
    pad = {"valid": (0, 0), "full": (dkh - 1, dkw - 1), "half": (dkh // 2, dkw // 2)}.get(
        border_mode, border_mode if isinstance(border_mode, tuple) else (border_mode, border_mode))
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    op = signal.convolve2d if filter_flip else signal.correlate2d
    out = np.array([[sum(op(xp[n, c], dilated[f, c], mode="valid") for c in range(channels))
                     for f in range(n_filters)] for n in range(x.shape[0])])
    return out[:, :, :: subsample[0], :: subsample[1]]


def reference_pool(x, ws, ignore_border=True, stride=None, pad=(0, 0), mode="max"):
    """Plain loops over Theano's windows; padding is never a max and counts only for inc_pad."""
    stride = stride or ws
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    xf = x.reshape(-1, h, w)

    def n_out(size, window, st, p):
        padded = size + 2 * p
        if ignore_border:
            return (padded - window) // st + 1
        return (padded - 1) // st + 1 if st >= window else max(0, (padded - 1 - window + st) // st) + 1

    oh, ow = n_out(h, ws[0], stride[0], pad[0]), n_out(w, ws[1], stride[1], pad[1])
    out = np.zeros((len(xf), oh, ow))
    for b, i, j in itertools.product(range(len(xf)), range(oh), range(ow)):
        r0, c0 = i * stride[0], j * stride[1]
        r1, c1 = min(r0 + ws[0], h + 2 * pad[0]), min(c0 + ws[1], w + 2 * pad[1])
        window = xf[b, max(r0 - pad[0], 0): max(r1 - pad[0], 0), max(c0 - pad[1], 0): max(c1 - pad[1], 0)]
        if mode == "max":
            out[b, i, j] = window.max()
        elif mode == "sum":
            out[b, i, j] = window.sum()
        elif mode == "average_inc_pad":
            out[b, i, j] = window.sum() / ((r1 - r0) * (c1 - c0))
        else:
            out[b, i, j] = window.mean()
    return out.reshape(*lead, oh, ow)


# ----------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------

CONV_CASES = [
    # (input shape, filter shape, border_mode, subsample, dilation)
    ((2, 3, 7, 8), (4, 3, 3, 2), "valid", (1, 1), (1, 1)),
    ((2, 3, 7, 8), (4, 3, 3, 2), "full", (1, 1), (1, 1)),
    ((2, 3, 7, 8), (4, 3, 3, 3), "half", (1, 1), (1, 1)),
    ((1, 2, 9, 7), (3, 2, 3, 3), 1, (2, 2), (1, 1)),
    ((2, 1, 9, 10), (2, 1, 2, 3), (2, 1), (2, 3), (2, 1)),
    ((1, 1, 5, 5), (1, 1, 5, 5), "valid", (1, 1), (1, 1)),
    ((3, 2, 11, 6), (2, 2, 3, 2), "half", (3, 1), (1, 2)),
    ((2, 2, 8, 8), (3, 2, 2, 2), "full", (1, 2), (3, 3)),
]


def _conv_params():
    """Every case, flip and dtype in the C VM mode; in the Numba and Python modes
    (which compile more per graph, or run the same kernels) a cross-section."""
    for case, flip, dtype in itertools.product(CONV_CASES, [True, False], ["float64", "float32"]):
        yield pytest.param(case, flip, dtype, "CVM")
    for i, case in enumerate(CONV_CASES[:4]):
        yield pytest.param(case, i % 2 == 0, ["float32", "float64"][i % 2], "NUMBA")
    for case in CONV_CASES[:3]:
        yield pytest.param(case, True, "float64", "FAST_COMPILE")
    for i, case in enumerate(CONV_CASES):
        yield pytest.param(case, i % 2 == 1, ["float64", "float32"][i % 2], "JAX", marks=JAX.marks)


@pytest.mark.parametrize("case, flip, dtype, mode", list(_conv_params()))
def test_conv2d_matches_scipy(case, flip, dtype, mode):
    x_shape, w_shape, border_mode, subsample, dilation = case
    rng = np.random.default_rng(42)
    xv, wv = rng.normal(size=x_shape).astype(dtype), rng.normal(size=w_shape).astype(dtype)
    x, w = pt.tensor4(dtype=dtype), pt.tensor4(dtype=dtype)
    out = conv2d(x, w, filter_shape=w_shape, border_mode=border_mode, subsample=subsample,
                 filter_flip=flip, filter_dilation=dilation)
    result = pytensor.function([x, w], out, mode=mode)(xv, wv)
    expected = reference_conv2d(xv.astype(np.float64), wv.astype(np.float64), border_mode, subsample, flip,
                                dilation)
    assert result.dtype == dtype and result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-4 if dtype == "float32" else 1e-10,
                               atol=1e-4 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("case, mode", [
    *[(case, "CVM") for case in CONV_CASES[:5]],
    (CONV_CASES[0], "NUMBA"), (CONV_CASES[4], "NUMBA"), (CONV_CASES[3], "FAST_COMPILE"),
    *[pytest.param(case, "JAX", marks=JAX.marks) for case in CONV_CASES[:5]],
])
def test_conv2d_gradients(case, mode):
    x_shape, w_shape, border_mode, subsample, dilation = case
    rng = np.random.default_rng(0)
    verify_grad(
        lambda x, w: conv2d(x, w, filter_shape=w_shape, border_mode=border_mode, subsample=subsample,
                            filter_dilation=dilation),
        [rng.normal(size=x_shape), rng.normal(size=w_shape)], rng=rng, mode=mode,
    )


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("wrt", [0, 1])
def test_conv2d_second_derivatives(flip, wrt):
    """Through the gradient Ops' own gradients (of the filter gradient for wrt=1, of the input gradient for 0)."""
    rng = np.random.default_rng(1)

    def grad_of_squared_output(x, w):
        cost = (conv2d(x, w, border_mode=1, subsample=(2, 1), filter_flip=flip) ** 2).sum()
        return pt.grad(cost, [x, w][wrt])

    verify_grad(grad_of_squared_output, [rng.normal(size=(2, 2, 6, 5)), rng.normal(size=(3, 2, 3, 2))], rng=rng)


def test_conv2d_static_shapes_propagate_and_are_checked_at_run_time():
    x, w = pt.tensor4(), pt.tensor4()
    out = conv2d(x, w, input_shape=(5, 1, 28, 28), filter_shape=(20, 1, 5, 5))
    assert out.type.shape == (5, 20, 24, 24)
    f = pytensor.function([x, w], out)
    with pytest.raises(Exception, match="shape"):
        f(np.zeros((4, 1, 28, 28)), np.zeros((20, 1, 5, 5)))


def test_conv2d_accepts_the_old_image_shape_keyword():
    out = conv2d(pt.tensor4(), pt.tensor4(), image_shape=(2, 3, 10, 10), filter_shape=(4, 3, 3, 3))
    assert out.type.shape == (2, 4, 8, 8)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(input_shape=(1, 1, 4, 4), filter_shape=(1, 1, 5, 5)), ValueError, "larger than the padded input"),
    (dict(input_shape=(1, 3, 8, 8), filter_shape=(1, 2, 3, 3)), ValueError, "3 channels"),
    (dict(subsample=(0, 1)), ValueError, "subsample"),
    (dict(filter_dilation=(1, 0)), ValueError, "filter_dilation"),
    (dict(border_mode="same"), ValueError, "border_mode"),
    (dict(border_mode=-1), ValueError, "padding must be >= 0"),
])
def test_conv2d_rejects_bad_arguments_when_building(kwargs, error, message):
    with pytest.raises(error, match=message):
        conv2d(pt.tensor4(), pt.tensor4(), **kwargs)


def test_conv2d_rejects_wrong_ndim_and_integer_or_half_input():
    with pytest.raises(TypeError, match="4-D"):
        conv2d(pt.matrix(), pt.tensor4())
    with pytest.raises(TypeError, match="float32 or float64"):
        conv2d(pt.tensor4(dtype="int32"), pt.tensor4())
    with pytest.raises(TypeError, match="float32 or float64"):
        conv2d(pt.tensor4(), pt.tensor4(dtype="float16"))


@pytest.mark.parametrize("mode", ["NUMBA", "CVM"])
def test_conv2d_channel_mismatch_at_run_time_is_a_clear_error(mode):
    x, w = pt.tensor4(), pt.tensor4()
    f = pytensor.function([x, w], conv2d(x, w), mode=mode)
    with pytest.raises(ValueError, match="channel"):
        f(np.zeros((1, 2, 6, 6)), np.zeros((1, 3, 3, 3)))


# ----------------------------------------------------------------------------
# pool_2d
# ----------------------------------------------------------------------------

POOL_MODES = ["max", "sum", "average_inc_pad", "average_exc_pad"]
POOL_CASES = [
    # (input shape, ws, ignore_border, stride, pad)
    ((2, 3, 6, 6), (2, 2), True, None, (0, 0)),
    ((2, 3, 7, 5), (2, 2), False, None, (0, 0)),
    ((1, 2, 7, 8), (3, 3), True, (1, 2), (0, 0)),
    ((1, 2, 7, 8), (3, 2), False, (2, 1), (0, 0)),
    ((2, 1, 7, 7), (3, 3), True, (2, 2), (1, 1)),
    ((5, 9), (2, 3), False, None, (0, 0)),
    ((2, 2, 2, 6, 5), (2, 2), True, (1, 1), (1, 0)),
]


FULL_WINDOWS_LEFTOVER = ((2, 3, 7, 5), (2, 2), True, None, (0, 0))


def _pool_params():
    """Every case and mode in the C VM mode; a cross-section in the Numba and Python modes."""
    for case, pool_mode in itertools.product(POOL_CASES, POOL_MODES):
        yield pytest.param(case, pool_mode, "CVM")
    for i, case in enumerate(POOL_CASES[1::2]):
        yield pytest.param(case, POOL_MODES[i % 4], "NUMBA")
    # the kernels' fast paths for max pooling with every window inside the image:
    # tiled, tiled with rows and columns left over, overlapping
    for case in (POOL_CASES[0], FULL_WINDOWS_LEFTOVER, POOL_CASES[2]):
        yield pytest.param(case, "max", "NUMBA")
    yield pytest.param(POOL_CASES[1], "max", "FAST_COMPILE")
    yield pytest.param(POOL_CASES[4], "average_inc_pad", "FAST_COMPILE")
    for case, pool_mode in itertools.product(POOL_CASES, POOL_MODES):
        yield pytest.param(case, pool_mode, "JAX", marks=JAX.marks)


@pytest.mark.parametrize("case, pool_mode, mode", list(_pool_params()))
def test_pool_2d_matches_loops(case, pool_mode, mode):
    shape, ws, ignore_border, stride, pad = case
    xv = np.random.default_rng(3).normal(size=shape).astype(pytensor.config.floatX)
    x = pt.tensor(dtype=xv.dtype, shape=(None,) * len(shape))
    out = pool_2d(x, ws, ignore_border=ignore_border, stride=stride, pad=pad, mode=pool_mode)
    result = pytensor.function([x], out, mode=mode)(xv)
    np.testing.assert_allclose(result, reference_pool(xv, ws, ignore_border, stride, pad, pool_mode), rtol=1e-6)


@pytest.mark.parametrize("case, pool_mode, mode", [
    *[(case, pool_mode, "CVM") for case, pool_mode in itertools.product(POOL_CASES, POOL_MODES)],
    (POOL_CASES[2], "max", "NUMBA"), (POOL_CASES[4], "average_exc_pad", "NUMBA"),
    (POOL_CASES[0], "max", "NUMBA"), (FULL_WINDOWS_LEFTOVER, "max", "NUMBA"),
    *[pytest.param(case, pool_mode, "JAX", marks=JAX.marks)
      for i, case in enumerate(POOL_CASES) for pool_mode in ("max", POOL_MODES[1 + i % 3])],
])
def test_pool_2d_gradients(case, pool_mode, mode):
    shape, ws, ignore_border, stride, pad = case
    # distinct values: max pooling is not differentiable at ties
    xv = np.random.default_rng(5).permutation(np.prod(shape)).reshape(shape) / 7.0
    verify_grad(lambda x: pool_2d(x, ws, ignore_border=ignore_border, stride=stride, pad=pad, mode=pool_mode),
                [xv], rng=np.random.default_rng(6), mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_max_pool_gradient_goes_to_every_tied_maximum(mode):
    x = pt.matrix(shape=(2, 4))  # static: JAX computes no shapes at run time
    cost = pool_2d(x, (2, 2), ignore_border=True).sum()
    grad = pytensor.function([x], pt.grad(cost, x), mode=mode)
    xv = np.array([[1.0, 3.0, 0.0, 0.0],
                   [3.0, 2.0, 0.0, 0.0]])
    np.testing.assert_array_equal(grad(xv), [[0, 1, 1, 1], [1, 0, 1, 1]])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(ws=(2, 2), mode="median"), ValueError, "mode must be one of"),
    (dict(ws=(0, 2)), ValueError, "ws must be >= 1"),
    (dict(ws=(2, 2), stride=(0, 1)), ValueError, "stride must be >= 1"),
    (dict(ws=(2, 2), pad=(2, 0)), ValueError, "pad < ws"),
    (dict(ws=(2, 2), pad=(1, 1), ignore_border=False), ValueError, "ignore_border=True"),
    (dict(ws=(5, 5), ignore_border=True), ValueError, "larger than the padded input"),
    (dict(ws="2"), TypeError, "ws must be"),
])
def test_pool_2d_rejects_bad_arguments_when_building(kwargs, error, message):
    with pytest.raises(error, match=message):
        pool_2d(pt.tensor(shape=(1, 1, 4, 4)), **{"ignore_border": True, **kwargs})


def test_pool_2d_needs_two_dimensions_of_floats():
    with pytest.raises(TypeError, match="2 or more dimensions"):
        pool_2d(pt.vector(), (2, 2), ignore_border=True)
    with pytest.raises(TypeError, match="float32 or float64"):
        pool_2d(pt.matrix(dtype="int32"), (2, 2), ignore_border=True)


# ----------------------------------------------------------------------------
# A LeNet-shaped graph trains
# ----------------------------------------------------------------------------


def lenet_like_cost(x, y, rng):
    """The tutorial's two conv+pool layers and a softmax on 20 MNIST-sized images: (cost, parameters)."""
    floatX = pytensor.config.floatX
    W0 = pytensor.shared(rng.uniform(-0.3, 0.3, (4, 1, 5, 5)).astype(floatX))
    W1 = pytensor.shared(rng.uniform(-0.3, 0.3, (6, 4, 5, 5)).astype(floatX))
    W2 = pytensor.shared(np.zeros((6 * 4 * 4, 10), floatX))
    h0 = pt.tanh(pool_2d(conv2d(x.reshape((20, 1, 28, 28)), W0, filter_shape=(4, 1, 5, 5)), (2, 2),
                         ignore_border=True))
    h1 = pt.tanh(pool_2d(conv2d(h0, W1, filter_shape=(6, 4, 5, 5)), (2, 2), ignore_border=True))
    p = pt.special.softmax(pt.dot(h1.flatten(2), W2), axis=-1)
    return -pt.mean(pt.log(p)[pt.arange(y.shape[0]), y]), [W0, W1, W2]


def assert_falls(costs):
    """Small gradient steps on one minibatch: the cost must fall at every step."""
    assert all(later < earlier for earlier, later in zip(costs, costs[1:])), costs
    assert costs[-1] < costs[0] - 0.05, costs


@pytest.mark.parametrize("mode", ["NUMBA", pytest.param("CVM", marks=pytest.mark.slow)])  # CVM: gcc, cold
def test_two_conv_pool_layers_train_with_givens_and_sgd(mode):
    rng = np.random.default_rng(0)
    images = pytensor.shared(rng.random((40, 784)).astype(pytensor.config.floatX))
    labels = pytensor.shared(rng.integers(0, 10, 40).astype("int32"))
    index, x, y = pt.lscalar(), pt.matrix(), pt.ivector()
    cost, params = lenet_like_cost(x, y, rng)
    train = pytensor.function(
        [index], cost, mode=mode,
        updates=[(w, w - 0.1 * g) for w, g in zip(params, pt.grad(cost, params))],
        givens={x: images[index * 20:(index + 1) * 20], y: labels[index * 20:(index + 1) * 20]},
    )
    assert_falls([float(train(0)) for _ in range(10)])


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_two_conv_pool_layers_train_with_jax():
    """The same graph in the JAX mode, the minibatch given as arrays of static shapes
    (with givens: tests/test_jax_mode.py)."""
    rng = np.random.default_rng(0)
    x, y = pt.matrix(shape=(20, 784)), pt.ivector(shape=(20,))
    cost, params = lenet_like_cost(x, y, rng)
    train = pytensor.function([x, y], cost, mode="JAX",
                              updates=[(w, w - 0.1 * g) for w, g in zip(params, pt.grad(cost, params))])
    images, labels = rng.random((20, 784)).astype(pytensor.config.floatX), rng.integers(0, 10, 20).astype("int32")
    assert_falls([float(train(images, labels)) for _ in range(10)])


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_jax_needs_the_sizes_of_strided_gradients_before_run_time():
    x, w = pt.tensor4(), pt.tensor4()
    cost = conv2d(x, w, subsample=(2, 1)).sum()
    with pytest.raises(NotImplementedError, match="filter_shape"):
        pytensor.function([x, w], pt.grad(cost, w), mode="JAX")
    # given them, it computes what the C kernels do
    shaped = conv2d(x, w, subsample=(2, 1), input_shape=(2, 3, 9, 8), filter_shape=(4, 3, 3, 2)).sum()
    xv, wv = np.random.default_rng(1).normal(size=(2, 3, 9, 8)), np.random.default_rng(2).normal(size=(4, 3, 3, 2))
    results = [pytensor.function([x, w], pt.grad(shaped, [x, w]), mode=mode)(xv, wv) for mode in ("JAX", "CVM")]
    for jax_result, c_result in zip(*results):
        np.testing.assert_allclose(jax_result, c_result, rtol=1e-10, atol=1e-10)


JAX_ON_DEMAND = """
import sys
if sys.argv[1] == "first":
    import pytensor.link.jax.dispatch
import numpy as np, pytensor, pytensor.tensor as pt
from deeplearning_tutorial.ops import conv2d, pool_2d
print("jax" in sys.modules)
x = pt.tensor4(shape=(2, 1, 6, 6))
cost = pool_2d(conv2d(x, np.ones((1, 1, 3, 3))), (2, 2), ignore_border=True).sum()
print(pytensor.function([x], pt.grad(cost, x), mode="JAX")(np.arange(72.0).reshape(2, 1, 6, 6)).sum())
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
@pytest.mark.parametrize("pytensor_jax", ["first", "on demand"])
def test_the_jax_backend_is_registered_whenever_pytensor_imports_its_own(pytensor_jax, tmp_path):
    """Importing the package leaves JAX unimported; PyTensor's JAX backend, imported
    before or after, finds conv2d and pool_2d."""
    result = run_python("-c", JAX_ON_DEMAND, pytensor_jax, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(pytensor_jax == "first"), "72.0"]


CACHED_GRAPH = """
import numpy as np, pytensor, pytensor.tensor as pt
from deeplearning_tutorial.ops import conv2d, pool_2d
x, w = pt.tensor4("x"), pt.tensor4("w")
y = pool_2d(conv2d(x, w), (2, 2), ignore_border=True)
f = pytensor.function([x, w], [y.sum(), *pytensor.grad((y ** 2).sum(), [x, w])], mode="NUMBA")
rng = np.random.default_rng(0)
outs = f(rng.standard_normal((4, 2, 9, 9)).astype(x.dtype), rng.standard_normal((3, 2, 4, 4)).astype(x.dtype))
print(repr([float(np.sum(o)) for o in outs]))
"""


def test_a_numba_graph_runs_from_the_disk_cache_in_a_fresh_process(tmp_path):
    """Compiled graphs call the C kernels by symbol name, so a graph that PyTensor
    saved in one process runs, unchanged, in the next."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTENSOR_FLAGS": f"base_compiledir={tmp_path / 'pytensor'}"}
    first = run_python("-c", CACHED_GRAPH, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    saved = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert any(".nbc" in path.name for path in saved), "nothing was cached"
    second = run_python("-c", CACHED_GRAPH, cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    now = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert now == saved, "the second process compiled again instead of loading the cache"
