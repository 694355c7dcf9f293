"""Pooling kinds beyond max and average: L2 pooling and stochastic pooling.

    from deeplearning_tutorial.ops import pool_2d, stochastic_pool_2d
    l2 = pool_2d(x, (2, 2), ignore_border=True, mode="l2")
    train = stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=1))
    test = stochastic_pool_2d(x, (2, 2), deterministic=True)

**L2 pooling** (``pool_2d(..., mode='l2')``, PyTorch's ``LPPool2d`` with
p=2) outputs ``sqrt(sum of a**2 over the window)``.  It is a graph over sum
pooling.  The norm is not differentiable where a window is all zeros (its
gradient there would be 0/0); this module gives such windows the gradient 0,
the smallest subgradient of the norm, instead of NaN.  The same holds where
every square in a window underflows to 0 (float32 values below about 1e-23).

**Stochastic pooling** (Zeiler & Fergus, 2013, "Stochastic Pooling for
Regularization of Deep Convolutional Neural Networks") is defined for
non-negative activations ``a`` (after a rectifier, say).  In training each
window outputs one of its values, ``a_k`` with probability
``p_k = a_k / sum(a)``: with ``u`` uniform in [0, 1), the first ``k`` (in
row-major order) whose cumulative sum ``a_0 + ... + a_k`` exceeds
``u * sum(a)``.  The gradient goes to the value picked, as max pooling's goes
to the maximum.  At test time (``deterministic=True``) a window outputs the
probability-weighted average ``sum(p_k a_k) = sum(a**2) / sum(a)``.  A
window of zeros outputs 0 in both cases, with gradient 0.  A negative
activation makes the probabilities meaningless, so both raise a ``ValueError``
when the graph runs on one (except in the JAX mode, where PyTensor drops such
run-time checks: there the test-time formula is applied as it is; the
training Op has no JAX implementation).
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key
from pytensor.raise_op import CheckAndRaise
from pytensor.tensor.random.variable import RandomGeneratorSharedVariable
from pytensor.tensor.type import TensorType

from deeplearning_tutorial.ops import kernels
from deeplearning_tutorial.ops.conv import _pair
from deeplearning_tutorial.ops.numba_dispatch import as_3d as numba_as_3d
from deeplearning_tutorial.ops.numba_dispatch import source_hash
from deeplearning_tutorial.ops.pool import _PoolBase, as_3d, pool_2d

NEGATIVE_ACTIVATION = ("stochastic_pool_2d needs non-negative activations (its probabilities are "
                       "a / sum(a)); pool the output of a rectifier such as pt.maximum(a, 0)")


def _sqrt_with_zero_gradient_at_zero(s):
    """sqrt(s) for s >= 0, whose gradient at s == 0 is 0 instead of infinite."""
    positive = pt.gt(s, 0)
    return pt.switch(positive, pt.sqrt(pt.switch(positive, s, 1)), 0)


def _ratio_or_zero(numerator, denominator):
    """numerator / denominator, and 0 (with gradient 0) where the denominator is 0."""
    positive = pt.gt(denominator, 0)
    return pt.switch(positive, numerator / pt.switch(positive, denominator, 1), 0)


def l2_pool(input, ws, ignore_border, stride, pad):
    """``sqrt(sum(a**2))`` over each window: ``pool_2d(..., mode='l2')`` (see the module docstring)."""
    input = pt.as_tensor_variable(input)
    sums_of_squares = pool_2d(pt.sqr(input), ws, ignore_border=ignore_border, stride=stride, pad=pad,
                              mode="sum")
    return _sqrt_with_zero_gradient_at_zero(sums_of_squares)


# ----------------------------------------------------------------------------
# Stochastic pooling: the kernels (Numba, on (batch, rows, cols) arrays)
# ----------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True, nogil=True)
def _pick(x, u, wh, ww, sh, sw):
    """Per window the value picked and its flat index ``row * cols + col`` (-1 for a
    window of zeros, which outputs 0); per image whether it had a negative value."""
    n, rows, cols = x.shape
    _, oh, ow = u.shape
    out = np.zeros(u.shape, x.dtype)
    picked = np.full(u.shape, -1, np.int64)
    negative = np.zeros(n, np.bool_)
    for b in numba.prange(n):
        for i in range(oh):
            r0, r1 = i * sh, min(i * sh + wh, rows)
            for j in range(ow):
                c0, c1 = j * sw, min(j * sw + ww, cols)
                total = x.dtype.type(0)
                last_positive = -1
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        value = x[b, r, c]
                        if value < 0:
                            negative[b] = True
                        elif value > 0:
                            last_positive = r * cols + c
                        total += value
                if last_positive < 0:
                    continue
                # the first value whose cumulative sum exceeds u * total; the last
                # positive one if rounding leaves none (u * total == total)
                target = u[b, i, j] * total
                cumulative = x.dtype.type(0)
                choice, found = last_positive, False
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        cumulative += x[b, r, c]
                        if not found and cumulative > target:
                            choice, found = r * cols + c, True
                picked[b, i, j] = choice
                out[b, i, j] = x[b, choice // cols, choice % cols]
    return out, picked, negative


# the pooled length, the kernels' one formula, compiled for the Numba functions below
_pool_output_size = kernels.jit(kernels.pool_output_size)


@kernels.jit
def stochastic_pool(x, u, wh, ww, sh, sw, ignore_border):
    """Stochastic pooling of ``x`` (n, rows, cols) given the draws ``u`` (n, pooled rows, pooled cols):
    the picked values and their flat indices in the image (-1 for a window of zeros, which outputs 0)."""
    x, u = np.ascontiguousarray(x), np.ascontiguousarray(u)
    n, rows, cols = x.shape
    if u.shape != (n, _pool_output_size(rows, wh, sh, 0, ignore_border),
                   _pool_output_size(cols, ww, sw, 0, ignore_border)):
        raise ValueError("stochastic pooling: u needs one draw per window of the input")
    out, picked, negative = _pick(x, u, wh, ww, sh, sw)
    if negative.any():
        raise ValueError(NEGATIVE_ACTIVATION)
    return out, picked


@numba.njit(parallel=True, cache=True, nogil=True)
def stochastic_pool_grad(picked, gz, rows, cols):
    """Each window's output gradient, added at the position of the value it picked."""
    picked, gz = np.ascontiguousarray(picked), np.ascontiguousarray(gz)
    n, oh, ow = gz.shape
    gx = np.zeros((n, rows * cols), gz.dtype)
    for b in numba.prange(n):
        for i in range(oh):
            for j in range(ow):
                k = picked[b, i, j]
                if k >= 0:
                    gx[b, k] += gz[b, i, j]
    return gx.reshape((n, rows, cols))


# ----------------------------------------------------------------------------
# Stochastic pooling: the Ops
# ----------------------------------------------------------------------------


class StochasticPool(_PoolBase):
    """Stochastic pooling of ``x`` given one uniform draw ``u`` in [0, 1) per window.

    Outputs the picked values and their flat indices in the image (int64, -1
    for a window of zeros), which the gradient uses.  :func:`stochastic_pool_2d`
    draws ``u``.
    """

    def __init__(self, ws, stride, ignore_border):
        super().__init__(ws, stride, (0, 0), ignore_border, "stochastic")

    def make_node(self, x, u):
        x = _float_tensor(x)
        u = pt.as_tensor_variable(u).astype(x.dtype)
        if u.ndim != x.ndim:
            raise TypeError(f"u must have the {x.ndim} dimensions of x, got {u.ndim}")
        *lead, h, w = x.type.shape
        shape = (*lead, None if h is None else self.out_size(h, 0), None if w is None else self.out_size(w, 1))
        return Apply(self, [x, u], [TensorType(x.dtype, shape=shape)(), TensorType("int64", shape=shape)()])

    def perform(self, node, inputs, output_storage):
        x, u = inputs
        out, picked = stochastic_pool(as_3d(x), as_3d(u), *self.ws, *self.stride, self.ignore_border)
        output_storage[0][0] = out.reshape(u.shape)
        output_storage[1][0] = picked.reshape(u.shape)

    def infer_shape(self, node, shapes):
        return [shapes[1], shapes[1]]

    def connection_pattern(self, node):
        return [[True, False], [False, False]]

    def pullback(self, inputs, outputs, output_grads):
        x, _ = inputs
        grad = StochasticPoolGrad(self.ws, self.stride, self.ignore_border)(x, outputs[1], output_grads[0])
        return [grad, DisconnectedType()()]


class StochasticPoolGrad(_PoolBase):
    """Gradient of stochastic pooling: inputs (x for the shape, picked indices, output gradient)."""

    def __init__(self, ws, stride, ignore_border):
        super().__init__(ws, stride, (0, 0), ignore_border, "stochastic")

    def make_node(self, x, picked, gz):
        x, picked, gz = map(pt.as_tensor_variable, (x, picked, gz))
        return Apply(self, [x, picked, gz.astype(x.dtype)], [x.type()])

    def perform(self, node, inputs, output_storage):
        x, picked, gz = inputs
        gx = stochastic_pool_grad(as_3d(picked), as_3d(gz), x.shape[-2], x.shape[-1])
        output_storage[0][0] = gx.reshape(x.shape)

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def connection_pattern(self, node):
        return [[False], [False], [True]]

    def pullback(self, inputs, outputs, output_grads):
        return [DisconnectedType()(), DisconnectedType()(), grad_not_implemented(self, 2, inputs[2])]


# The NUMBA backend calls the same Numba functions from the graph's compiled function.
_SOURCE_HASH = source_hash(__file__)


def _register_numba(op_type):
    def decorator(funcify):
        def funcify_and_key(op, node, **kwargs):
            return funcify(op), f"{op_type.__module__}.{op_type.__qualname__}{op._props()}-{_SOURCE_HASH}"

        register_funcify_and_cache_key(op_type)(funcify_and_key)
        return funcify

    return decorator


@_register_numba(StochasticPool)
def numba_funcify_StochasticPool(op):
    wh, ww, sh, sw, _, _ = op.window_params
    ignore_border = op.ignore_border

    @numba_njit
    def stochastic_pool_node(x, u):
        out, picked = stochastic_pool(numba_as_3d(x), numba_as_3d(u), wh, ww, sh, sw, ignore_border)
        return out.reshape(u.shape), picked.reshape(u.shape)

    return stochastic_pool_node


@_register_numba(StochasticPoolGrad)
def numba_funcify_StochasticPoolGrad(op):
    @numba_njit
    def stochastic_pool_grad_node(x, picked, gz):
        gx = stochastic_pool_grad(numba_as_3d(picked), numba_as_3d(gz), x.shape[-2], x.shape[-1])
        return gx.reshape(x.shape)

    return stochastic_pool_grad_node


# ----------------------------------------------------------------------------
# The user-facing function
# ----------------------------------------------------------------------------


def _float_tensor(x):
    x = pt.as_tensor_variable(x)
    if x.ndim < 2:
        raise TypeError(f"stochastic_pool_2d needs a tensor of 2 or more dimensions, got {x.ndim}-D")
    if x.dtype not in ("float32", "float64"):
        raise TypeError(f"stochastic_pool_2d pools float32 or float64 tensors, got {x.dtype}")
    return x


def stochastic_pool_2d(input, ws, stride=None, ignore_border=True, rng=None, deterministic=False):
    """Stochastic pooling (Zeiler & Fergus, 2013) of the last two axes of ``input``.

    Parameters
    ----------
    input : tensor of 2 or more dimensions, float32 or float64
        Non-negative activations, e.g. rectified feature maps (batch, maps, rows, cols).
    ws : pair of int
        The pooling window (rows, cols).
    stride : pair of int, optional
        Distance between windows; defaults to ``ws`` (smaller strides overlap).
    ignore_border : bool
        False keeps the partial windows at the bottom and right border.
    rng : shared random generator, optional
        ``pytensor.tensor.random.shared_rng(seed=...)``, from which the training
        output draws one uniform number per window.  The draw becomes the
        generator's ``default_update``, so each call of a compiled function
        draws anew (as RandomStream variables did); one generator therefore
        drives one pooling.  None makes a new, unseeded one.  Unused when
        ``deterministic``.
    deterministic : bool
        False (training): each window outputs one of its values, ``a_k`` with
        probability ``a_k / sum(a)``.  True (test time): the probability-weighted
        average ``sum(a**2) / sum(a)``.  A window of zeros outputs 0 either way.

    Returns
    -------
    tensor
        ``input`` with its last two axes pooled; its gradient goes to the value
        picked (training) or is that of the weighted average (0 in windows of zeros).

    Raises
    ------
    ValueError
        When the graph runs on a negative activation (the probabilities are
        undefined), and when building it: a window or stride below 1, a window
        larger than the input, an ``rng`` that already drives another draw.
    TypeError
        ``input`` not a float tensor of 2 or more dimensions, ``rng`` not a shared
        random generator.
    """
    input = _float_tensor(input)
    ws = _pair(ws, "ws")
    stride = ws if stride is None else _pair(stride, "stride")
    if min(ws) < 1 or min(stride) < 1:
        raise ValueError(f"ws and stride must be >= 1, got ws={ws}, stride={stride}")
    op = StochasticPool(ws, stride, ignore_border)
    *lead, rows, cols = input.shape
    for axis, size in enumerate(input.type.shape[-2:]):
        if size is not None and op.out_size(size, axis) < 1:
            raise ValueError(f"the pooling window {ws} is larger than the input along axis "
                             f"{input.ndim - 2 + axis} ({size})")
    if deterministic:
        nonnegative = CheckAndRaise(ValueError, NEGATIVE_ACTIVATION)(input, pt.all(pt.ge(input, 0)))
        sums = pool_2d(nonnegative, ws, ignore_border=ignore_border, stride=stride, mode="sum")
        sums_of_squares = pool_2d(pt.sqr(nonnegative), ws, ignore_border=ignore_border, stride=stride, mode="sum")
        return _ratio_or_zero(sums_of_squares, sums)
    if rng is None:
        rng = pt.random.shared_rng(np.random.default_rng())
    if not isinstance(rng, RandomGeneratorSharedVariable):
        raise TypeError(f"rng must be a shared random generator (pytensor.tensor.random.shared_rng), got {rng!r}")
    if rng.default_update is not None:
        raise ValueError("this rng already drives another random draw (its default_update is set); "
                         "give each stochastic_pool_2d its own pytensor.tensor.random.shared_rng(...)")
    next_rng, u = rng.uniform(0.0, 1.0, size=(*lead, op.out_size(rows, 0), op.out_size(cols, 1)),
                              dtype=input.dtype)
    # The generator's default update makes every compiled function that uses the draw
    # advance it at each call, as RandomStream did. PyTensor 3.3 deprecates setting it
    # (it asks callers to pass updates= themselves) but offers no other way to draw anew
    # without them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rng.default_update = next_rng
    return op(input, u)[0]
