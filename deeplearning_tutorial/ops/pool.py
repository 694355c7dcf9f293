"""2-D pooling for PyTensor with Theano's ``pool_2d`` semantics and gradients.

:class:`Pool` pools the last two axes of a tensor of any rank >= 2; its
gradient is :class:`MaxPoolGrad` (every input equal to its window's maximum
receives the window's gradient, as in Theano), :class:`AveragePoolGrad` or,
for the L2 pooling that Theano did not have, :class:`L2PoolGrad`.
Both gradients have gradients of their own (:class:`MaxPoolGradGrad`, Theano's
``DownsampleFactorMaxGradGrad``, and pooling again), so Hessian-vector
products through pooling work.
"""

from __future__ import annotations

import warnings
from typing import Any

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
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
        return kernels.pool_output_size(size, self.ws[axis], self.stride[axis], self.pad[axis], self.ignore_border)

    def pooled_shape(self, shape) -> tuple:
        """The output shape for an input of ``shape`` (..., rows, cols): a static shape (unknown
        sizes stay None) or the symbolic one of ``infer_shape``."""
        *lead, h, w = shape
        return (*lead, None if h is None else self.out_size(h, 0), None if w is None else self.out_size(w, 1))


class Pool(_PoolBase):
    """Pool the last two axes with windows ``ws``, strides ``stride`` and zero padding ``pad``."""

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim < 2:
            raise TypeError(f"pool_2d needs a tensor of 2 or more dimensions, got {x.ndim}-D")
        if x.dtype not in ("float32", "float64"):
            raise TypeError(f"pool_2d pools float32 or float64 tensors, got {x.dtype}")
        shape = self.pooled_shape(x.type.shape)
        return Apply(self, [x], [TensorType(x.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        out = kernels.pool(as_3d(x), *self.window_params, self.ignore_border, kernels.POOL_MODES[self.mode],
                           numba.get_num_threads())
        output_storage[0][0] = out.reshape((*x.shape[:-2], *out.shape[-2:]))

    def infer_shape(self, node, shapes):
        return [self.pooled_shape(shapes[0])]

    def pullback(self, inputs, outputs, output_grads):
        (x,) = inputs
        (gz,) = output_grads
        params = (self.ws, self.stride, self.pad, self.ignore_border, self.mode)
        if self.mode == "max":
            return [MaxPoolGrad(*params)(x, outputs[0], gz)]
        if self.mode == "l2":
            return [L2PoolGrad(*params)(x, outputs[0], gz)]
        return [AveragePoolGrad(*params)(x, gz)]


class GradOfPooled(_PoolBase):
    """A pooling's gradient from its input, a result of the pooling and the output gradient:
    inputs (x, pooled x or what the pooling picked, output gradient), output shaped like x.
    Subclasses name the ``kernel`` that takes the three as (batch, h, w) arrays and the
    window parameters, or define their own ``perform``."""

    kernel: Any = None

    def make_node(self, x, pooled, gz):
        x, pooled, gz = map(pt.as_tensor_variable, (x, pooled, gz))
        return Apply(self, [x, pooled, gz.astype(x.dtype)], [x.type()])

    def perform(self, node, inputs, output_storage):
        x, pooled, gz = inputs
        gx = type(self).kernel(as_3d(x), as_3d(pooled), as_3d(gz), *self.window_params, self.ignore_border,
                               numba.get_num_threads())
        output_storage[0][0] = gx.reshape(x.shape)

    def infer_shape(self, node, shapes):
        return [shapes[0]]


class MaxPoolGrad(GradOfPooled):
    """Gradient of max pooling: inputs (x, pooled x, output gradient)."""

    kernel = kernels.max_pool_grad

    def pullback(self, inputs, outputs, output_grads):
        x, maxout, gz = inputs
        (g_gx,) = output_grads
        # the gradient is linear in gz, and constant in x and maxout wherever it is defined
        # (an input moving off or onto its window's maximum is a jump)
        return [pt.zeros_like(x), pt.zeros_like(maxout), MaxPoolGradGrad(*self._props())(x, maxout, g_gx)]


class MaxPoolGradGrad(_PoolBase):
    """Gradient of :class:`MaxPoolGrad` with respect to its output gradient (Theano's
    ``DownsampleFactorMaxGradGrad``): inputs (x, pooled x, a gradient shaped like x); each
    window gathers that gradient at every input equal to its maximum."""

    def make_node(self, x, maxout, ggx):
        x, maxout, ggx = map(pt.as_tensor_variable, (x, maxout, ggx))
        return Apply(self, [x, maxout, ggx.astype(x.dtype)], [maxout.type()])

    def perform(self, node, inputs, output_storage):
        x, maxout, ggx = inputs
        ggz = kernels.max_pool_grad_grad(as_3d(x), as_3d(maxout), as_3d(ggx), *self.window_params,
                                         self.ignore_border, numba.get_num_threads())
        output_storage[0][0] = ggz.reshape(maxout.shape)

    def infer_shape(self, node, shapes):
        return [shapes[1]]

    def pullback(self, inputs, outputs, output_grads):
        x, maxout, ggx = inputs
        (g_ggz,) = output_grads
        # the adjoint of a gather is the scatter: MaxPoolGrad again
        return [pt.zeros_like(x), pt.zeros_like(maxout), MaxPoolGrad(*self._props())(x, maxout, g_ggz)]


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


class L2PoolGrad(GradOfPooled):
    """Gradient of L2 pooling: inputs (x, pooled x, output gradient); each input ``a``
    gets ``a * gz / out`` from every window holding it, 0 from a window whose result is 0."""

    kernel = kernels.l2_pool_grad

    def pullback(self, inputs, outputs, output_grads):
        x, out, gz = inputs
        (g_gx,) = output_grads
        # gx = x * spread(ratio), ratio = gz / out (0 where out is 0), spread = the sum
        # pooling's gradient, whose adjoint is sum pooling itself
        params = (self.ws, self.stride, self.pad, self.ignore_border, "sum")
        nonzero = pt.neq(out, 0)
        safe_out = pt.switch(nonzero, out, 1)
        ratio = pt.switch(nonzero, gz / safe_out, 0)
        g_ratio = Pool(*params)(x * g_gx)
        return [g_gx * AveragePoolGrad(*params)(x, ratio),
                pt.switch(nonzero, -g_ratio * gz / pt.sqr(safe_out), 0),
                pt.switch(nonzero, g_ratio / safe_out, 0)]


# Theano's warning for an unset ignore_border (its sentences on the GPU back end left out)
IGNORE_BORDER_WARNING = ("{function}() will have the parameter ignore_border default value changed to True "
                         "(currently False). To have consistent behavior with all Theano version, explicitly add "
                         "the parameter ignore_border=True.")


def _renamed(new, old, new_name: str, old_name: str, unset=None):
    """The value of a parameter that Theano renamed: ``old`` (with Theano's deprecation
    warning) where only it is given; an error where both are."""
    if old is None:
        return new
    if new not in (None, unset):
        raise ValueError(f"pool_2d: {old_name!r} is the old name of {new_name!r}; pass only {new_name!r}")
    warnings.warn(f"DEPRECATION: the {old_name!r} parameter is not going to exist anymore as it is going to "
                  f"be replaced by the parameter {new_name!r}.", stacklevel=3)
    return old


def pool_2d(input, ws=None, ignore_border=None, stride=None, pad=(0, 0), mode="max", ds=None, st=None,
            padding=None):
    """Theano 1.0's ``pool_2d``: pool the last two axes of ``input`` (2 or more dimensions).

    Parameters
    ----------
    input : tensor
        float32 or float64, 2 or more dimensions; the last two are pooled.
    ws : int or (int, int)
        The pooling window (rows, cols); an int is a square.
    ignore_border : bool or None
        True drops the partial windows at the bottom/right border; False keeps
        them.  ``None`` (left unset) means False with Theano's warning that
        the default will change: the tutorials pass True.
    stride : int or (int, int) or None
        Steps between windows; ``None``: ``ws`` (smaller strides overlap).
    pad : int or (int, int)
        Zero padding on both sides of rows and cols; needs
        ``ignore_border=True`` and ``pad < ws``.
    mode : {'max', 'sum', 'average_inc_pad', 'average_exc_pad', 'l2'}
        The window's maximum (NaN if it holds one, as NumPy's), its sum, its
        average counting the padding or not, or the square root of its sum of
        squares (:mod:`deeplearning_tutorial.ops.pool_kinds`).
    ds, st, padding
        The old names of ``ws``, ``stride`` and ``pad``: accepted with
        Theano's deprecation warning.

    Returns
    -------
    tensor
        ``input`` pooled, with the same leading axes.

    Raises
    ------
    ValueError
        Where an old and a new name are both given, ``ws`` is missing,
        ``mode`` is unknown, ``ws`` or ``stride`` is below 1, ``pad`` is not
        in ``[0, ws)``, a non-zero ``pad`` comes without
        ``ignore_border=True``, or the window is larger than the padded
        input along an axis of known static size with
        ``ignore_border=True``.  A window larger than the padded input with
        ``ignore_border=True`` is also an error when the graph runs.
    TypeError
        For an input of fewer than 2 dimensions or not of floats, or a
        ``ws``, ``stride`` or ``pad`` that is neither an int nor a pair of
        ints.

    Warns
    -----
    UserWarning
        Theano's warnings: for an unset ``ignore_border``, and for each old
        parameter name used.
    """
    ws = _renamed(ws, ds, "ws", "ds")
    stride = _renamed(stride, st, "stride", "st")
    pad = _renamed(pad, padding, "pad", "padding", unset=(0, 0))
    if ws is None:
        raise ValueError("pool_2d needs ws, the pooling window (rows, cols)")
    if ignore_border is None:
        warnings.warn(IGNORE_BORDER_WARNING.format(function="pool_2d"), stacklevel=2)
        ignore_border = False
    ws = _pair(ws, "ws")
    stride = ws if stride is None else _pair(stride, "stride")
    pad = _pair(pad, "pad")
    if mode not in kernels.POOL_MODES:
        raise ValueError(f"mode must be one of {sorted(kernels.POOL_MODES)}, got {mode!r}")
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
