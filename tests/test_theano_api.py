"""Theano's convolution and pooling API, as ported programs call it: the old and new
names and signatures, border modes with shapes known only at run time, grouped
convolution, second derivatives through pooling, NaN in max pooling; against
NumPy/SciPy references, in every mode."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad
from scipy import signal
from test_ops import JAX, MODES, reference_conv2d, reference_pool

from deeplearning_tutorial import ops
from deeplearning_tutorial.ops import AveragePoolGrad, MaxPoolGrad, MaxPoolGradGrad, Pool, conv, downsample, pool


@contextlib.contextmanager
def no_warnings():
    """A context in which any warning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def run(outputs, inputs, values, mode="CVM"):
    return pytensor.function(inputs, outputs, mode=mode)(*values)


def cross_section(cases, others=(0,)):
    """(case..., mode) parameters: every case in the C VM mode, and the cases at the
    indices ``others`` in the NUMBA, Python and JAX modes (which compile more per graph,
    or run the same kernels)."""
    params = [pytest.param(*case, "CVM") for case in cases]
    for mode in MODES[:1] + MODES[2:]:
        marks = getattr(mode, "marks", ())
        mode = getattr(mode, "values", (mode,))[0]
        params += [pytest.param(*cases[i], mode, marks=marks) for i in others]
    return params


# ----------------------------------------------------------------------------
# pool_2d: Theano 1.0's signature, old names, ignore_border left unset
# ----------------------------------------------------------------------------

XV = np.random.default_rng(3).normal(size=(2, 3, 7, 5))


@pytest.mark.parametrize("old, new, message", [
    (dict(ds=(2, 2)), dict(ws=(2, 2)), "'ds' parameter is not going to exist anymore"),
    (dict(ws=(3, 2), st=(1, 2)), dict(ws=(3, 2), stride=(1, 2)), "replaced by the parameter 'stride'"),
    (dict(ws=(3, 3), padding=(1, 1)), dict(ws=(3, 3), pad=(1, 1)), "'padding' parameter"),
])
def test_pool_2d_takes_the_old_names_with_theanos_warning(old, new, message):
    x = pt.tensor4()
    with pytest.warns(UserWarning, match=message) as record:
        pooled = pool.pool_2d(x, ignore_border=True, mode="average_inc_pad", **old)
    assert [w.filename for w in record] == [__file__]  # the warning names the caller's line
    expected = reference_pool(XV, new["ws"], True, new.get("stride"), new.get("pad", (0, 0)), "average_inc_pad")
    np.testing.assert_allclose(run(pooled, [x], [XV]), expected, rtol=1e-12)


@pytest.mark.parametrize("kwargs, name", [
    (dict(ws=(2, 2), ds=(2, 2)), "'ds' is the old name of 'ws'"),
    (dict(ws=(2, 2), stride=(1, 1), st=(1, 1)), "'st' is the old name of 'stride'"),
    (dict(ws=(2, 2), pad=(1, 1), padding=(1, 1)), "'padding' is the old name of 'pad'"),
])
def test_pool_2d_refuses_an_old_and_a_new_name_together(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pool.pool_2d(pt.tensor4(), ignore_border=True, **kwargs)


def test_pool_2d_unset_ignore_border_keeps_partial_windows_with_theanos_warning():
    x = pt.tensor4()
    with pytest.warns(UserWarning, match="ignore_border default value changed to True") as record:
        pooled = ops.pool_2d(x, (2, 2))
    assert [w.filename for w in record] == [__file__]
    result = run(pooled, [x], [XV])
    assert result.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(result, reference_pool(XV, (2, 2), ignore_border=False), rtol=1e-12)


def test_pool_2d_positional_order_is_theanos():
    x = pt.tensor4()
    with no_warnings():
        pooled = ops.pool_2d(x, (3, 2), True, (1, 2), (1, 1), "average_exc_pad")
    np.testing.assert_allclose(run(pooled, [x], [XV]),
                               reference_pool(XV, (3, 2), True, (1, 2), (1, 1), "average_exc_pad"), rtol=1e-12)


def test_pool_2d_refuses_unknown_keywords():
    with pytest.raises(TypeError, match="unexpected keyword argument 'strides'"):
        ops.pool_2d(pt.tensor4(), (2, 2), ignore_border=True, strides=(1, 1))


# ----------------------------------------------------------------------------
# downsample.max_pool_2d (Theano 0.7) and conv.conv2d (Theano's old nnet.conv)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [downsample, ops], ids=["ops.downsample", "ops as downsample"])
def test_max_pool_2d_of_theanos_downsample_module(module):
    x = pt.tensor4()
    with no_warnings():
        pooled = module.max_pool_2d(input=x, ds=(3, 2), ignore_border=True, st=(2, 1), padding=(1, 1))
    np.testing.assert_allclose(run(pooled, [x], [XV]), reference_pool(XV, (3, 2), True, (2, 1), (1, 1)),
                               rtol=1e-12)
    with pytest.warns(UserWarning, match="max_pool_2d\\(\\) will have the parameter ignore_border") as record:
        kept = module.max_pool_2d(x, (2, 2))
    assert [w.filename for w in record] == [__file__]
    np.testing.assert_allclose(run(kept, [x], [XV]), reference_pool(XV, (2, 2), ignore_border=False), rtol=1e-12)


@pytest.mark.parametrize("module", [conv, ops], ids=["ops.conv", "ops as conv"])
def test_old_conv_conv2d_calls(module):
    """theano.tensor.nnet.conv.conv2d(input, filters, image_shape, filter_shape, border_mode, subsample)."""
    rng = np.random.default_rng(0)
    xv, wv = rng.normal(size=(2, 3, 9, 8)), rng.normal(size=(4, 3, 3, 2))
    x, w = pt.tensor4(), pt.tensor4()
    with no_warnings():
        by_keyword = module.conv2d(input=x, filters=w, filter_shape=wv.shape, image_shape=xv.shape)
        by_position = module.conv2d(x, w, xv.shape, wv.shape, "full", (2, 1))
    assert by_keyword.type.shape == (2, 4, 7, 7)
    np.testing.assert_allclose(run(by_keyword, [x, w], [xv, wv]), reference_conv2d(xv, wv), rtol=1e-10)
    np.testing.assert_allclose(run(by_position, [x, w], [xv, wv]), reference_conv2d(xv, wv, "full", (2, 1)),
                               rtol=1e-10)


def test_old_conv2d_speed_keywords_are_ignored_with_a_warning_and_others_refused():
    x, w = pt.tensor4(), pt.tensor4()
    with pytest.warns(UserWarning, match="unroll_batch.*ignored"):
        conv.conv2d(x, w, unroll_batch=4, unroll_kern=2)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['filters_shape'\\]"):
        conv.conv2d(x, w, filters_shape=(1, 1, 3, 3))
    with pytest.raises(ValueError, match="logical"):
        conv.conv2d(x, w, imshp_logical=(1, 10, 10))
    with pytest.raises(ValueError, match="not both"):
        conv.conv2d(x, w, input_shape=(1, 1, 5, 5), image_shape=(1, 1, 5, 5))


def test_conv2d_positional_order_is_theano_1s():
    """conv2d(input, filters, input_shape, filter_shape, border_mode, subsample, filter_flip,
    image_shape, filter_dilation, num_groups)."""
    rng = np.random.default_rng(1)
    xv, wv = rng.normal(size=(2, 4, 9, 10)), rng.normal(size=(6, 2, 2, 3))
    x, w = pt.tensor4(), pt.tensor4()
    out = ops.conv2d(x, w, None, None, 1, (1, 2), False, None, (2, 1), 2)
    groups = [reference_conv2d(xv[:, 2 * g:2 * g + 2], wv[3 * g:3 * g + 3], 1, (1, 2), False, (2, 1))
              for g in range(2)]
    np.testing.assert_allclose(run(out, [x, w], [xv, wv]), np.concatenate(groups, axis=1), rtol=1e-10)


# ----------------------------------------------------------------------------
# Every border mode with shapes known only at run time
# ----------------------------------------------------------------------------

BORDER_CASES = [("valid", (1, 1), (1, 1)), ("full", (1, 1), (1, 1)), ("half", (1, 1), (1, 1)),
                ("full", (2, 1), (1, 2)), ("half", (1, 2), (2, 1)), ((1, 2), (1, 1), (1, 1)), (2, (2, 2), (1, 1))]


@pytest.mark.parametrize("border_mode, subsample, dilation, mode", cross_section(BORDER_CASES, others=(1, 4)))
def test_border_modes_with_run_time_shapes(border_mode, subsample, dilation, mode):
    rng = np.random.default_rng(2)
    xv, wv = rng.normal(size=(2, 2, 9, 8)), rng.normal(size=(3, 2, 4, 3))  # an even filter size too
    x, w = pt.tensor4(), pt.tensor4()
    out = ops.conv2d(x, w, border_mode=border_mode, subsample=subsample, filter_dilation=dilation)
    assert out.type.shape == (None,) * 4
    expected = reference_conv2d(xv, wv, border_mode, subsample, True, dilation)
    np.testing.assert_allclose(run(out, [x, w], [xv, wv], mode), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("border_mode, mode", [("full", "CVM"), ("half", "CVM"), ("half", "NUMBA")])
def test_gradients_with_run_time_padding(border_mode, mode):
    rng = np.random.default_rng(3)
    verify_grad(lambda x, w: ops.conv2d(x, w, border_mode=border_mode, subsample=(2, 1), filter_dilation=(1, 2)),
                [rng.normal(size=(2, 2, 7, 6)), rng.normal(size=(3, 2, 3, 2))], rng=rng, mode=mode)


@pytest.mark.skipif(JAX.marks[0].args[0], reason="JAX is not installed")
def test_jax_gradients_with_derived_padding_need_the_filter_shape():
    x, w = pt.tensor4(), pt.tensor4()
    cost = ops.conv2d(x, w, border_mode="half").sum()
    with pytest.raises(NotImplementedError, match="filter_shape"):
        pytensor.function([x, w], pt.grad(cost, w), mode="JAX")
    rng = np.random.default_rng(4)
    verify_grad(lambda x, w: ops.conv2d(x, w, border_mode="half", input_shape=(2, 2, 6, 5),
                                        filter_shape=(3, 2, 3, 2)),
                [rng.normal(size=(2, 2, 6, 5)), rng.normal(size=(3, 2, 3, 2))], rng=rng, mode="JAX")


# ----------------------------------------------------------------------------
# Grouped convolution
# ----------------------------------------------------------------------------


def reference_grouped(xv, wv, groups, **kwargs):
    """One SciPy convolution per group, concatenated over the filters."""
    c, f = xv.shape[1] // groups, wv.shape[0] // groups
    return np.concatenate([reference_conv2d(xv[:, g * c:(g + 1) * c], wv[g * f:(g + 1) * f], **kwargs)
                           for g in range(groups)], axis=1)


GROUP_CASES = [((2, 4, 7, 6), (6, 2, 3, 3), 2, "valid", (1, 1)), ((1, 6, 8, 8), (3, 2, 2, 3), 3, "half", (2, 1)),
               ((3, 4, 5, 6), (4, 1, 3, 2), 4, "full", (1, 2))]


@pytest.mark.parametrize("x_shape, w_shape, groups, border_mode, subsample, mode",
                         cross_section(GROUP_CASES, others=(1,)))
def test_grouped_convolution_matches_scipy_per_group(x_shape, w_shape, groups, border_mode, subsample, mode):
    rng = np.random.default_rng(5)
    xv, wv = rng.normal(size=x_shape).astype("float32"), rng.normal(size=w_shape).astype("float32")
    x, w = pt.tensor4(dtype="float32"), pt.tensor4(dtype="float32")
    out = ops.conv2d(x, w, border_mode=border_mode, subsample=subsample, num_groups=groups)
    expected = reference_grouped(xv.astype(float), wv.astype(float), groups, border_mode=border_mode,
                                 subsample=subsample)
    np.testing.assert_allclose(run(out, [x, w], [xv, wv], mode), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, groups, border_mode, subsample, mode",
                         cross_section(GROUP_CASES[:2], others=(1,)))
def test_grouped_convolution_gradients(x_shape, w_shape, groups, border_mode, subsample, mode):
    rng = np.random.default_rng(6)
    verify_grad(lambda x, w: ops.conv2d(x, w, input_shape=x_shape, filter_shape=w_shape, border_mode=border_mode,
                                        subsample=subsample, num_groups=groups),
                [rng.normal(size=x_shape), rng.normal(size=w_shape)], rng=rng, mode=mode)


def test_grouped_second_derivatives():
    rng = np.random.default_rng(7)

    def filter_gradient(x, w):
        return pt.grad((ops.conv2d(x, w, border_mode=1, num_groups=2) ** 2).sum(), w)

    verify_grad(filter_gradient, [rng.normal(size=(2, 4, 5, 5)), rng.normal(size=(4, 2, 3, 3))], rng=rng,
                mode="CVM")


@pytest.mark.parametrize("x_shape, w_shape, groups, message", [
    ((1, 6, 8, 8), (4, 2, 3, 3), 4, "does not divide the input's 6 channels"),
    ((1, 6, 8, 8), (4, 3, 3, 3), 3, "does not divide the 4 filters"),
    ((1, 6, 8, 8), (6, 3, 3, 3), 3, "need 6 // num_groups = 2 channels each; they have 3"),
    ((1, 6, 8, 8), (6, 2, 3, 3), 0, "num_groups must be an int >= 1"),
])
def test_num_groups_that_do_not_fit_are_refused_when_building(x_shape, w_shape, groups, message):
    with pytest.raises(ValueError, match=message):
        ops.conv2d(pt.tensor4(), pt.tensor4(), input_shape=x_shape, filter_shape=w_shape, num_groups=groups)


@pytest.mark.parametrize("mode", ["NUMBA", "CVM"])
def test_num_groups_that_do_not_fit_at_run_time_are_a_clear_error(mode):
    x, w = pt.tensor4(), pt.tensor4()
    f = pytensor.function([x, w], ops.conv2d(x, w, num_groups=2), mode=mode)
    with pytest.raises(ValueError, match="num_groups"):
        f(np.zeros((1, 4, 6, 6)), np.zeros((3, 2, 3, 3)))


# ----------------------------------------------------------------------------
# Gradients of the pooling gradients; Hessian-vector products
# ----------------------------------------------------------------------------

# distinct values: max pooling is not differentiable at ties
DISTINCT = np.random.default_rng(8).permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) / 9.0
GRAD_GRAD_CASES = [((2, 2), True, None, (0, 0)), ((3, 3), True, (2, 1), (1, 1)), ((2, 3), False, (1, 2), (0, 0))]


@pytest.mark.parametrize("ws, ignore_border, stride, pad, mode", cross_section(GRAD_GRAD_CASES, others=(1,)))
def test_max_pool_gradients_have_gradients(ws, ignore_border, stride, pad, mode):
    params = (ws, stride or ws, pad, ignore_border, "max")
    rng = np.random.default_rng(9)
    pooled_shape = reference_pool(DISTINCT, ws, ignore_border, stride, pad).shape
    # as in a second derivative, the pooled input is the pooling of x
    verify_grad(lambda x, gz: MaxPoolGrad(*params)(x, Pool(*params)(x), gz),
                [DISTINCT, rng.normal(size=pooled_shape)], rng=rng, mode=mode)
    verify_grad(lambda x, ggx: MaxPoolGradGrad(*params)(x, Pool(*params)(x), ggx),
                [DISTINCT, rng.normal(size=DISTINCT.shape)], rng=rng, mode=mode)


@pytest.mark.parametrize("pool_mode, mode", cross_section([("sum",), ("average_inc_pad",), ("average_exc_pad",)],
                                                         others=(2,)))
def test_average_pool_gradient_has_a_gradient(pool_mode, mode):
    params = ((3, 2), (2, 2), (1, 1), True, pool_mode)
    rng = np.random.default_rng(10)
    x = pt.constant(DISTINCT)
    pooled_shape = reference_pool(DISTINCT, (3, 2), True, (2, 2), (1, 1)).shape
    verify_grad(lambda gz: AveragePoolGrad(*params)(x, gz), [rng.normal(size=pooled_shape)], rng=rng, mode=mode)


@pytest.mark.parametrize("pool_mode, mode", cross_section([("max",), ("average_exc_pad",)], others=(0,)))
def test_hessian_vector_products_through_pooling(pool_mode, mode):
    """H v of a cost through conv2d and pool_2d by double differentiation, against
    central differences of the gradient."""
    rng = np.random.default_rng(11)
    x, v = pt.tensor4(shape=(2, 1, 8, 8)), pt.tensor4(shape=(2, 1, 8, 8))
    weights = rng.normal(size=(3, 1, 3, 3))
    pooled = ops.pool_2d(ops.conv2d(x, weights, border_mode="half"), (3, 3), ignore_border=True, stride=(2, 2),
                         pad=(1, 1), mode=pool_mode)
    cost = (pt.tanh(pooled) * rng.normal(size=(2, 3, 4, 4))).sum()
    gradient = pt.grad(cost, x)
    hv = pt.grad((gradient * v).sum(), x)
    f_grad = pytensor.function([x], gradient, mode=mode)
    f_hv = pytensor.function([x, v], hv, mode=mode)
    xv, vv = rng.normal(size=(2, 1, 8, 8)), rng.normal(size=(2, 1, 8, 8))
    eps = 1e-6
    numeric = (f_grad(xv + eps * vv) - f_grad(xv - eps * vv)) / (2 * eps)
    np.testing.assert_allclose(f_hv(xv, vv), numeric, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# NaN in max pooling; windows too large for the image at run time
# ----------------------------------------------------------------------------

NAN_CASES = [((2, 2), True, None, (0, 0)),      # the kernels' fast path: full windows
             ((3, 3), True, (1, 1), (0, 0)),    # overlapping full windows
             ((2, 2), False, None, (0, 0)),     # partial windows at the border
             ((3, 3), True, (2, 2), (1, 1))]    # padding


@pytest.mark.parametrize("ws, ignore_border, stride, pad, mode", cross_section(NAN_CASES, others=(0, 2)))
def test_a_nan_anywhere_in_a_max_pooling_window_gives_nan(ws, ignore_border, stride, pad, mode):
    """NumPy's rule (np.max propagates NaN), wherever the NaN lies in the window."""
    xv = np.random.default_rng(12).normal(size=(2, 1, 5, 7))
    for row, col in [(0, 0), (1, 1), (0, 1), (4, 6), (2, 5)]:  # first slots, last slots and others
        xv[0, 0, row, col] = np.nan
    x = pt.tensor4(shape=xv.shape)
    result = run(ops.pool_2d(x, ws, ignore_border=ignore_border, stride=stride, pad=pad), [x], [xv], mode)
    expected = reference_pool(xv, ws, ignore_border, stride, pad)
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_allclose(result[~np.isnan(result)], expected[~np.isnan(expected)], rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_a_window_larger_than_the_image_at_run_time_is_an_error(mode):
    x = pt.tensor4()
    f = pytensor.function([x], ops.pool_2d(x, (5, 5), ignore_border=True), mode=mode)
    with pytest.raises(ValueError, match="larger than the padded input"):
        f(np.zeros((1, 1, 4, 6)))
    assert f(np.zeros((1, 1, 5, 6))).shape == (1, 1, 1, 1)


# ----------------------------------------------------------------------------
# The original tutorial's LeNetConvPoolLayer call pattern, old keywords
# ----------------------------------------------------------------------------


class OldStyleConvPoolLayer:
    """A convolution + max-pooling + tanh layer written as Theano-era programs wrote it:
    ``conv.conv2d`` with ``filter_shape``/``image_shape``, then pooling with ``ds``."""

    def __init__(self, rng, input, filter_shape, image_shape, poolsize, pooling):
        self.W = pytensor.shared(rng.uniform(-0.5, 0.5, filter_shape), borrow=True)
        self.b = pytensor.shared(rng.uniform(-0.5, 0.5, filter_shape[0]), borrow=True)
        conv_out = conv.conv2d(input=input, filters=self.W, filter_shape=filter_shape, image_shape=image_shape)
        if pooling == "downsample":
            pooled_out = downsample.max_pool_2d(input=conv_out, ds=poolsize, ignore_border=True)
        else:
            pooled_out = pool.pool_2d(input=conv_out, ds=poolsize, ignore_border=True)
        self.output = pt.tanh(pooled_out + self.b.dimshuffle("x", 0, "x", "x"))


@pytest.mark.parametrize("pooling, mode", [("downsample", "NUMBA"), ("pool", "CVM")])
def test_the_tutorials_layer_pattern_with_the_old_keywords(pooling, mode):
    rng = np.random.default_rng(13)
    x = pt.matrix("x")
    batch, image_shape, filter_shape = 3, (3, 1, 12, 12), (4, 1, 5, 5)
    context = pytest.warns(UserWarning, match="'ds' parameter") if pooling == "pool" else no_warnings()
    with context:
        layer = OldStyleConvPoolLayer(rng, x.reshape(image_shape), filter_shape, image_shape, (2, 2), pooling)
    images = rng.uniform(0, 1, (batch, 144))
    result = pytensor.function([x], layer.output, mode=mode)(images)
    convolved = np.array([[signal.convolve2d(image.reshape(12, 12), w[0], mode="valid")
                           for w in layer.W.get_value()] for image in images])
    expected = np.tanh(reference_pool(convolved, (2, 2)) + layer.b.get_value()[None, :, None, None])
    assert result.shape == (3, 4, 4, 4)
    np.testing.assert_allclose(result, expected, rtol=1e-10)
