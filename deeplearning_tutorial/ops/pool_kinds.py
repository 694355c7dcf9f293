"""Pooling kinds beyond max and average: L2 pooling and stochastic pooling.

    from deeplearning_tutorial.ops import pool_2d, stochastic_pool_2d
    l2 = pool_2d(x, (2, 2), ignore_border=True, mode="l2")
    train = stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=1))
    test = stochastic_pool_2d(x, (2, 2), deterministic=True)

**L2 pooling** (``pool_2d(..., mode='l2')``, PyTorch's ``LPPool2d`` with
p=2) outputs ``sqrt(sum of a**2 over the window)``: a mode of
:class:`~deeplearning_tutorial.ops.pool.Pool`, whose kernels square and sum in
one pass; its gradient is :class:`~deeplearning_tutorial.ops.pool.L2PoolGrad`,
``a * gz / out`` for each input ``a``.  The norm is not differentiable where a
window is all zeros (its gradient there would be 0/0); such windows get the
gradient 0, the smallest subgradient of the norm, instead of NaN.  The same
holds where every square in a window underflows to 0 (float32 values below
about 1e-23).

**Stochastic pooling** (Zeiler & Fergus, 2013, "Stochastic Pooling for
Regularization of Deep Convolutional Neural Networks") is defined for
non-negative activations ``a`` (after a rectifier, say).  In training each
window outputs one of its values, ``a_k`` with probability
``p_k = a_k / sum(a)``: with ``u`` uniform in [0, 1), the first ``k`` (in
row-major order) whose cumulative sum ``a_0 + ... + a_k`` exceeds
``u * sum(a)``.  Each call draws one 64-bit seed from the generator; each
window's ``u`` is a hash of that seed and the window's position.  The
gradient goes to the value picked, as max pooling's goes to the maximum.
At test time (``deterministic=True``) a window outputs the probability-weighted
average ``sum(p_k a_k) = sum(a**2) / sum(a)``.  A
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
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.replace import clone_replace
from pytensor.tensor.random.variable import RandomGeneratorSharedVariable
from pytensor.tensor.type import TensorType

from deeplearning_tutorial.ops import kernels
from deeplearning_tutorial.ops.conv import _pair
from deeplearning_tutorial.ops.kernels.stochastic import (
    stochastic_pool_grad,
    weighted_average_pool,
    weighted_average_pool_grad,
)
from deeplearning_tutorial.ops.pool import GradOfPooled, _PoolBase, as_3d, pool_2d


def _ratio_or_zero(numerator, denominator):
    """numerator / denominator, and 0 (with gradient 0) where the denominator is 0."""
    positive = pt.gt(denominator, 0)
    return pt.switch(positive, numerator / pt.switch(positive, denominator, 1), 0)


# ----------------------------------------------------------------------------
# Stochastic pooling: the Ops
# ----------------------------------------------------------------------------


class StochasticPool(_PoolBase):
    """Stochastic pooling of ``x`` for the draw ``seed`` (an int64 scalar).

    Each window's uniform number in [0, 1) is a hash of ``seed`` and the
    window's position (SplitMix64, :func:`~deeplearning_tutorial.ops.kernels.window_uniform`),
    so the kernel makes them on every thread without a generator's state;
    :func:`stochastic_pool_2d` draws a new ``seed`` at each call.  Outputs the
    picked values and their flat indices in the image (int64, -1 for a window
    of zeros), which the gradient uses.
    """

    def __init__(self, ws, stride, ignore_border):
        super().__init__(ws, stride, (0, 0), ignore_border, "stochastic")

    def make_node(self, x, seed):
        x = _float_tensor(x)
        seed = pt.as_tensor_variable(seed)
        if seed.ndim != 0 or not seed.dtype.startswith(("int", "uint")):
            raise TypeError(f"seed must be an integer scalar, got {seed.type}")
        shape = self.pooled_shape(x.type.shape)
        return Apply(self, [x, seed.astype("int64")],
                     [TensorType(x.dtype, shape=shape)(), TensorType("int64", shape=shape)()])

    def perform(self, node, inputs, output_storage):
        x, seed = inputs
        out, picked = kernels.stochastic_pool(as_3d(x), int(seed), *self.ws, *self.stride, self.ignore_border,
                                             numba.get_num_threads())
        shape = x.shape[:-2] + out.shape[-2:]
        output_storage[0][0] = out.reshape(shape)
        output_storage[1][0] = picked.reshape(shape)

    def infer_shape(self, node, shapes):
        shape = self.pooled_shape(shapes[0])
        return [shape, shape]

    def connection_pattern(self, node):
        return [[True, False], [False, False]]

    def pullback(self, inputs, outputs, output_grads):
        x, _ = inputs
        grad = StochasticPoolGrad(self.ws, self.stride, self.ignore_border)(x, outputs[1], output_grads[0])
        return [grad, DisconnectedType()()]


class StochasticPoolGrad(GradOfPooled):
    """Gradient of stochastic pooling: inputs (x for the shape, picked indices, output gradient)."""

    def __init__(self, ws, stride, ignore_border):
        super().__init__(ws, stride, (0, 0), ignore_border, "stochastic")

    def perform(self, node, inputs, output_storage):
        x, picked, gz = inputs
        gx = stochastic_pool_grad(as_3d(picked), as_3d(gz), x.shape[-2], x.shape[-1])
        output_storage[0][0] = gx.reshape(x.shape)

    def connection_pattern(self, node):
        return [[False], [False], [True]]

    def pullback(self, inputs, outputs, output_grads):
        return [DisconnectedType()(), DisconnectedType()(), grad_not_implemented(self, 2, inputs[2])]


class WeightedAveragePool(_PoolBase):
    """Stochastic pooling at test time: each window's ``sum(a**2) / sum(a)``, 0 for a window of zeros.

    One pass over the input (and the check for negative values in the same
    pass); its gradient, :class:`WeightedAveragePoolGrad`, is one pass too.
    """

    def __init__(self, ws, stride, ignore_border):
        super().__init__(ws, stride, (0, 0), ignore_border, "weighted_average")

    def make_node(self, x):
        x = _float_tensor(x)
        shape = self.pooled_shape(x.type.shape)
        return Apply(self, [x], [TensorType(x.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        out = weighted_average_pool(as_3d(x), *self.ws, *self.stride, self.ignore_border)
        output_storage[0][0] = out.reshape(x.shape[:-2] + out.shape[-2:])

    def infer_shape(self, node, shapes):
        return [self.pooled_shape(shapes[0])]

    def pullback(self, inputs, outputs, output_grads):
        (x,), (out,), (g,) = inputs, outputs, output_grads
        return [WeightedAveragePoolGrad(self.ws, self.stride, self.ignore_border)(x, out, g)]


class WeightedAveragePoolGrad(GradOfPooled):
    """Gradient of :class:`WeightedAveragePool`: inputs (x, pooled x, output gradient);
    ``d out / d a_k = (2 a_k - out) / sum(a)`` summed over the windows holding ``a_k``
    (0 in windows of zeros), in one pass."""

    def __init__(self, ws, stride, ignore_border):
        super().__init__(ws, stride, (0, 0), ignore_border, "weighted_average")

    def perform(self, node, inputs, output_storage):
        x, out, gz = inputs
        gx = weighted_average_pool_grad(as_3d(x), as_3d(out), as_3d(gz), *self.ws, *self.stride)
        output_storage[0][0] = gx.reshape(x.shape)

    def as_graph(self, x, out, gz):
        """The same gradient as a graph of sum poolings (used for its own gradient)."""
        pooling = dict(ws=self.ws, ignore_border=self.ignore_border, stride=self.stride, mode="sum")
        sums = pool_2d(x, **pooling)
        squares = pool_2d(pt.sqr(x), **pooling)
        # out = squares / sums: d out / d squares = 1 / sums, d out / d sums = -out / sums
        g_squares = _ratio_or_zero(gz, sums)
        return pytensor.grad(None, x, known_grads={squares: g_squares, sums: -g_squares * out})

    def pullback(self, inputs, outputs, output_grads):
        # differentiate the graph on stand-ins for the inputs, which may depend on one another
        stand_ins = [variable.type() for variable in inputs]
        grads = pytensor.grad(None, stand_ins, known_grads={self.as_graph(*stand_ins): output_grads[0]},
                              disconnected_inputs="ignore", null_gradients="return")
        return clone_replace(grads, replace=dict(zip(stand_ins, inputs)))


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
    ws : int or pair of int
        The pooling window (rows, cols); an int is a square.
    stride : int or pair of int, optional
        Distance between windows; defaults to ``ws`` (smaller strides overlap).
    ignore_border : bool
        False keeps the partial windows at the bottom and right border.
    rng : shared random generator, optional
        ``pytensor.tensor.random.shared_rng(seed=...)``, from which the training
        output draws one seed per call (each window's uniform number is a hash
        of it and the window's position).  The draw becomes the
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
        undefined; not in the JAX mode, see the module docstring), and when
        building it: a window or stride below 1, a window larger than the
        input along an axis of known static size, an ``rng`` that already
        drives another draw.
    TypeError
        ``input`` not a float tensor of 2 or more dimensions, ``ws`` or
        ``stride`` neither an int nor a pair of ints, ``rng`` not a shared
        random generator.
    """
    input = _float_tensor(input)
    ws = _pair(ws, "ws")
    stride = ws if stride is None else _pair(stride, "stride")
    if min(ws) < 1 or min(stride) < 1:
        raise ValueError(f"ws and stride must be >= 1, got ws={ws}, stride={stride}")
    op = StochasticPool(ws, stride, ignore_border)
    for axis, size in enumerate(input.type.shape[-2:]):
        if size is not None and op.out_size(size, axis) < 1:
            raise ValueError(f"the pooling window {ws} is larger than the input along axis "
                             f"{input.ndim - 2 + axis} ({size})")
    if deterministic:
        return WeightedAveragePool(ws, stride, ignore_border)(input)
    if rng is None:
        rng = pt.random.shared_rng(np.random.default_rng())
    if not isinstance(rng, RandomGeneratorSharedVariable):
        raise TypeError(f"rng must be a shared random generator (pytensor.tensor.random.shared_rng), got {rng!r}")
    if rng.default_update is not None:
        raise ValueError("this rng already drives another random draw (its default_update is set); "
                         "give each stochastic_pool_2d its own pytensor.tensor.random.shared_rng(...)")
    next_rng, seed = rng.integers(0, 2**62, dtype="int64")  # one draw per call; the windows' numbers hash it
    # The generator's default update makes every compiled function that uses the draw
    # advance it at each call, as RandomStream did. PyTensor 3.3 deprecates setting it
    # (it asks callers to pass updates= themselves) but offers no other way to draw anew
    # without them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rng.default_update = next_rng
    return op(input, seed)[0]
