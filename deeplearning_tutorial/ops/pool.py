"""2-D pooling for PyTensor with Theano's ``pool_2d`` semantics and gradients.

:class:`Pool` pools the last two axes of a tensor of any rank >= 2; its
gradient is :class:`MaxPoolGrad` (every input equal to its window's maximum
receives the window's gradient, as in Theano) or :class:`AveragePoolGrad`.
"""

from __future__ import annotations

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor.type import TensorType

from deeplearning_tutorial.ops import kernels
from deeplearning_tutorial.ops.conv import Pair, _pair


def as_3d(x: np.ndarray) -> np.ndarray:
    """(..., h, w) -> (batch, h, w), the layout of the pooling kernels (also compiled by Numba)."""
    return np.ascontiguousarray(x).reshape((-1, x.shape[-2], x.shape[-1]))


class _PoolBase(Op):
    __props__ = ("ws", "stride", "pad", "ignore_border", "mode")

    def __init__(self, ws: Pair, stride: Pair, pad: Pair, ignore_border: bool, mode: str):
        self.ws, self.stride, self.pad = tuple(ws), tuple(stride), tuple(pad)
        self.ignore_border = bool(ignore_border)
        self.mode = mode

    @property
    def window_params(self) -> tuple[int, ...]:
        """(wh, ww, sh, sw, ph, pw), the order the kernels take them in."""
        return (*self.ws, *self.stride, *self.pad)

    def out_size(self, size, axis: int):
        """Pooled length along ``axis`` (0: rows, 1: cols); symbolic sizes give a symbolic result."""
        window, stride, pad = self.ws[axis], self.stride[axis], self.pad[axis]
        if isinstance(size, (int, np.integer)):
            return int(kernels.pool_output_size(size, window, stride, pad, self.ignore_border))
        padded = size + 2 * pad
        if self.ignore_border:
            return pt.maximum(0, (padded - window) // stride + 1)
        if stride >= window:
            return (padded - 1) // stride + 1
        return pt.maximum(0, (padded - 1 - window + stride) // stride) + 1


class Pool(_PoolBase):
    """Pool the last two axes with windows ``ws``, strides ``stride`` and zero padding ``pad``."""

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim < 2:
            raise TypeError(f"pool_2d needs a tensor of 2 or more dimensions, got {x.ndim}-D")
        if x.dtype not in ("float32", "float64"):
            raise TypeError(f"pool_2d pools float32 or float64 tensors, got {x.dtype}")
        *lead, h, w = x.type.shape
        shape = (*lead, None if h is None else self.out_size(h, 0), None if w is None else self.out_size(w, 1))
        return Apply(self, [x], [TensorType(x.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        out = kernels.pool(as_3d(x), *self.window_params, self.ignore_border, kernels.POOL_MODES[self.mode],
                           numba.get_num_threads())
        output_storage[0][0] = out.reshape((*x.shape[:-2], *out.shape[-2:]))

    def infer_shape(self, node, shapes):
        *lead, h, w = shapes[0]
        return [(*lead, self.out_size(h, 0), self.out_size(w, 1))]

    def pullback(self, inputs, outputs, output_grads):
        (x,) = inputs
        (gz,) = output_grads
        params = (self.ws, self.stride, self.pad, self.ignore_border, self.mode)
        if self.mode == "max":
            return [MaxPoolGrad(*params)(x, outputs[0], gz)]
        return [AveragePoolGrad(*params)(x, gz)]


class MaxPoolGrad(_PoolBase):
    """Gradient of max pooling: inputs (x, pooled x, output gradient)."""

    def make_node(self, x, maxout, gz):
        x, maxout, gz = map(pt.as_tensor_variable, (x, maxout, gz))
        return Apply(self, [x, maxout, gz.astype(x.dtype)], [x.type()])

    def perform(self, node, inputs, output_storage):
        x, maxout, gz = inputs
        gx = kernels.max_pool_grad(as_3d(x), as_3d(maxout), as_3d(gz), *self.window_params, self.ignore_border,
                                   numba.get_num_threads())
        output_storage[0][0] = gx.reshape(x.shape)

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def pullback(self, inputs, outputs, output_grads):
        return [grad_not_implemented(self, i, var) for i, var in enumerate(inputs)]


class AveragePoolGrad(_PoolBase):
    """Gradient of sum / average pooling: inputs (x, output gradient); x gives the shape."""

    def make_node(self, x, gz):
        x, gz = pt.as_tensor_variable(x), pt.as_tensor_variable(gz)
        return Apply(self, [x, gz.astype(x.dtype)], [x.type()])

    def perform(self, node, inputs, output_storage):
        x, gz = inputs
        gx = kernels.average_pool_grad(as_3d(gz), x.shape[-2], x.shape[-1], *self.window_params,
                                       self.ignore_border, kernels.POOL_MODES[self.mode], numba.get_num_threads())
        output_storage[0][0] = gx.reshape(x.shape)

    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def connection_pattern(self, node):
        return [[False], [True]]

    def pullback(self, inputs, outputs, output_grads):
        x, gz = inputs
        (g_gx,) = output_grads
        # the gradient is linear in gz: its adjoint is pooling g_gx the same way
        pool = Pool(self.ws, self.stride, self.pad, self.ignore_border, self.mode)
        return [DisconnectedType()(), pool(g_gx)]


def pool_2d(input, ws=None, ignore_border=None, stride=None, pad=(0, 0), mode="max"):
    """Theano's ``pool_2d``: pool the last two axes of ``input`` (2 or more dimensions).

    ``ws`` is the window (rows, cols); ``stride`` defaults to ``ws`` (smaller
    strides overlap); ``pad`` zero-pads both sides and needs
    ``ignore_border=True``; ``ignore_border=False`` keeps partial windows at
    the bottom/right border.  ``mode``: 'max', 'sum', 'average_inc_pad'
    (padding counts in the average), 'average_exc_pad' or 'l2' (the square root
    of the sum of squares, :mod:`deeplearning_tutorial.ops.pool_kinds`).
    """
    if ws is None:
        raise ValueError("pool_2d needs ws, the pooling window (rows, cols)")
    if ignore_border is None:
        ignore_border = True  # Theano's default since 0.9
    ws = _pair(ws, "ws")
    stride = ws if stride is None else _pair(stride, "stride")
    pad = _pair(pad, "pad")
    if mode == "l2":
        from deeplearning_tutorial.ops.pool_kinds import l2_pool

        return l2_pool(input, ws, ignore_border, stride, pad)
    if mode not in kernels.POOL_MODES:
        raise ValueError(f"mode must be one of {sorted([*kernels.POOL_MODES, 'l2'])}, got {mode!r}")
    if min(ws) < 1:
        raise ValueError(f"ws must be >= 1, got {ws}")
    if min(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if min(pad) < 0 or pad[0] >= ws[0] or pad[1] >= ws[1]:
        raise ValueError(f"pad must satisfy 0 <= pad < ws, got pad={pad} for ws={ws}")
    if pad != (0, 0) and not ignore_border:
        raise ValueError("padding works only with ignore_border=True (as in Theano)")
    input = pt.as_tensor_variable(input)
    op = Pool(ws, stride, pad, ignore_border, mode)
    *_, rows, cols = input.type.shape if input.ndim >= 2 else (None, None)
    for axis, size in enumerate((rows, cols)):
        if size is not None and op.out_size(size, axis) < 1:
            raise ValueError(f"the pooling window {ws} is larger than the padded input along axis "
                             f"{input.ndim - 2 + axis} ({size} + 2*{pad[axis]})")
    return op(input)
