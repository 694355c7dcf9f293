"""2-D convolution for PyTensor with Theano's ``conv2d`` semantics and gradients.

``conv2d`` hands the work to :class:`Corr2d`, a cross-correlation Op, like
Theano's ``CorrMM``; its ``filter_flip`` prop flips the filters first (a true
convolution, ``conv2d``'s default).  Its gradients are two further Ops,
:class:`Corr2dGradWeights` and :class:`Corr2dGradInputs`, whose own gradients
are built from the three Ops again, so second derivatives work too.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.scalar import upcast
from pytensor.tensor.basic import get_scalar_constant_value
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.type import TensorType

from deeplearning_tutorial.ops import kernels

Pair = tuple[int, int]


def _pair(value, name: str) -> Pair:
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def _float_tensor(x, ndim: int, what: str):
    x = pt.as_tensor_variable(x)
    if x.ndim != ndim:
        raise TypeError(f"{what} must be a {ndim}-D tensor, got {x.ndim}-D ({x.type})")
    if x.dtype not in ("float32", "float64"):
        raise TypeError(f"{what} must be a float32 or float64 tensor, got {x.dtype}")
    return x


class _Corr2dBase(Op):
    """Shared parameters: zero padding, strides and dilation, as (rows, cols) pairs, and
    ``filter_flip``: the filters are used rotated by 180 degrees (a convolution).

    The flip lives in the Ops rather than in the graph (as a ``[:, :, ::-1, ::-1]``
    view) so that the filter gradient comes out C-contiguous: a negatively strided
    gradient would make the updated filters negatively strided too, and the NUMBA
    backend compiles a function again for each new memory layout of its inputs.
    """

    __props__ = ("border", "subsample", "dilation", "filter_flip")
    # graphs pickled before the prop existed flipped with a view, outside the Op
    filter_flip = False

    def __init__(self, border: Pair = (0, 0), subsample: Pair = (1, 1), dilation: Pair = (1, 1),
                 filter_flip: bool = False):
        self.border = tuple(border)
        self.subsample = tuple(subsample)
        self.dilation = tuple(dilation)
        self.filter_flip = bool(filter_flip)

    @property
    def params(self) -> tuple[int, ...]:
        """(ph, pw, sh, sw, dh, dw), the order the kernels take them in."""
        return (*self.border, *self.subsample, *self.dilation)

    def _symbolic_out(self, size, kernel, axis: int):
        return (size + 2 * self.border[axis] - (kernel - 1) * self.dilation[axis] - 1) // self.subsample[axis] + 1

    def _static_out(self, size, kernel, axis: int):
        if size is None or kernel is None:
            return None
        return kernels.conv_output_size(size, kernel, self.border[axis], self.subsample[axis],
                                        self.dilation[axis])


def _static_pair(shape) -> tuple:
    """The two entries of a symbolic shape vector, as ints where they are constants."""
    values: list[int | None] = []
    for i in range(2):
        try:
            values.append(int(get_scalar_constant_value(shape[i])))
        except NotScalarConstantError:
            values.append(None)
    return tuple(values)


class Corr2d(_Corr2dBase):
    """'Valid' cross-correlation of a zero-padded (n, c, h, w) input with (f, c, kh, kw) filters."""

    def make_node(self, img, kern):
        img = _float_tensor(img, 4, "conv2d input")
        kern = _float_tensor(kern, 4, "conv2d filters")
        dtype = upcast(img.dtype, kern.dtype)
        img, kern = img.astype(dtype), kern.astype(dtype)
        n, _, h, w = img.type.shape
        f, _, kh, kw = kern.type.shape
        for axis, (size, k) in enumerate(((h, kh), (w, kw))):
            if size is not None and k is not None and self._static_out(size, k, axis) < 1:
                raise ValueError(
                    f"conv2d: the dilated filter ({(k - 1) * self.dilation[axis] + 1} along axis "
                    f"{axis + 2}) is larger than the padded input ({size + 2 * self.border[axis]})"
                )
        shape = (n, f, self._static_out(h, kh, 0), self._static_out(w, kw, 1))
        return Apply(self, [img, kern], [TensorType(dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        img, kern = inputs
        output_storage[0][0] = kernels.corr2d(img, kern, *self.params, self.filter_flip, numba.get_num_threads())

    def infer_shape(self, node, shapes):
        (n, _, h, w), (f, _, kh, kw) = shapes
        return [(n, f, self._symbolic_out(h, kh, 0), self._symbolic_out(w, kw, 1))]

    def pullback(self, inputs, outputs, output_grads):
        img, kern = inputs
        (gout,) = output_grads
        d_img = Corr2dGradInputs(*self._props())(kern, gout, img.shape[-2:])
        d_kern = Corr2dGradWeights(*self._props())(img, gout, kern.shape[-2:])
        return [d_img, d_kern]


class Corr2dGradWeights(_Corr2dBase):
    """Gradient of :class:`Corr2d` with respect to the filters: inputs (img, gout, (kh, kw))."""

    def make_node(self, img, gout, kernel_shape):
        img = _float_tensor(img, 4, "conv2d input")
        gout = _float_tensor(gout, 4, "conv2d output gradient").astype(img.dtype)
        kernel_shape = pt.as_tensor_variable(kernel_shape).astype("int64")
        kh, kw = _static_pair(kernel_shape)
        shape = (gout.type.shape[1], img.type.shape[1], kh, kw)
        return Apply(self, [img, gout, kernel_shape], [TensorType(img.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        img, gout, (kh, kw) = inputs
        output_storage[0][0] = kernels.corr2d_grad_weights(img, gout, int(kh), int(kw), *self.params,
                                                           self.filter_flip, numba.get_num_threads())

    def infer_shape(self, node, shapes):
        img, gout, kernel_shape = node.inputs
        return [(shapes[1][1], shapes[0][1], kernel_shape[0], kernel_shape[1])]

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def pullback(self, inputs, outputs, output_grads):
        img, gout, kernel_shape = inputs
        (g_kern,) = output_grads
        d_img = Corr2dGradInputs(*self._props())(g_kern, gout, img.shape[-2:])
        d_gout = Corr2d(*self._props())(img, g_kern)
        return [d_img, d_gout, DisconnectedType()()]


class Corr2dGradInputs(_Corr2dBase):
    """Gradient of :class:`Corr2d` with respect to its input: inputs (kern, gout, (h, w))."""

    def make_node(self, kern, gout, image_shape):
        kern = _float_tensor(kern, 4, "conv2d filters")
        gout = _float_tensor(gout, 4, "conv2d output gradient").astype(kern.dtype)
        image_shape = pt.as_tensor_variable(image_shape).astype("int64")
        h, w = _static_pair(image_shape)
        shape = (gout.type.shape[0], kern.type.shape[1], h, w)
        return Apply(self, [kern, gout, image_shape], [TensorType(kern.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        kern, gout, (h, w) = inputs
        output_storage[0][0] = kernels.corr2d_grad_inputs(kern, gout, int(h), int(w), *self.params,
                                                          self.filter_flip, numba.get_num_threads())

    def infer_shape(self, node, shapes):
        kern, gout, image_shape = node.inputs
        return [(shapes[1][0], shapes[0][1], image_shape[0], image_shape[1])]

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def pullback(self, inputs, outputs, output_grads):
        kern, gout, image_shape = inputs
        (g_img,) = output_grads
        d_kern = Corr2dGradWeights(*self._props())(g_img, gout, kern.shape[-2:])
        d_gout = Corr2d(*self._props())(g_img, kern)
        return [d_kern, d_gout, DisconnectedType()()]


def _border(border_mode, kernel: Sequence, dilation: Pair) -> Pair:
    """Zero padding (rows, cols) for a Theano ``border_mode``."""
    if isinstance(border_mode, str):
        if border_mode == "valid":
            return (0, 0)
        if border_mode not in ("full", "half"):
            raise ValueError(f"border_mode must be 'valid', 'full', 'half', an int or a pair of ints; "
                             f"got {border_mode!r}")
        if None in kernel:
            raise ValueError(f"border_mode={border_mode!r} needs the filter size: pass filter_shape= "
                             f"or filters with a static shape")
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        if border_mode == "full":
            return (dilated[0] - 1, dilated[1] - 1)
        return (dilated[0] // 2, dilated[1] // 2)
    pad = _pair(border_mode, "border_mode")
    if min(pad) < 0:
        raise ValueError(f"border_mode padding must be >= 0, got {pad}")
    return pad


def _with_shape(x, shape, name: str):
    """Check a caller's shape against the static one and attach it (checked again at run time)."""
    if shape is None:
        return x
    shape = tuple(None if s is None else int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"{name} must have 4 entries, got {shape}")
    for axis, (given, static) in enumerate(zip(shape, x.type.shape)):
        if given is not None and static is not None and given != static:
            raise ValueError(f"{name}={shape} contradicts the tensor's static shape {x.type.shape} "
                             f"on axis {axis}")
    return pt.specify_shape(x, shape)


def conv2d(input, filters, input_shape=None, filter_shape=None, border_mode="valid",
           subsample=(1, 1), filter_flip=True, filter_dilation=(1, 1), image_shape=None):
    """Theano's ``conv2d``: a batch of multi-channel 2-D convolutions.

    ``input`` is (batch, channels, rows, cols), ``filters`` (n_filters,
    channels, rows, cols); the result is (batch, n_filters, out_rows,
    out_cols).  ``border_mode`` is 'valid', 'full', 'half', an int or a pair
    of ints (zero padding); ``filter_flip=True`` computes a convolution,
    False a cross-correlation.  ``input_shape``/``filter_shape`` (``None``
    entries allowed; ``image_shape`` is the old name of the former) are
    checked against the tensors when the graph runs and become their static
    shapes.
    """
    if image_shape is not None:
        if input_shape is not None:
            raise TypeError("pass input_shape or its old name image_shape, not both")
        input_shape = image_shape
    input = _with_shape(_float_tensor(input, 4, "conv2d input"), input_shape, "input_shape")
    filters = _with_shape(_float_tensor(filters, 4, "conv2d filters"), filter_shape, "filter_shape")
    subsample = _pair(subsample, "subsample")
    dilation = _pair(filter_dilation, "filter_dilation")
    if min(subsample) < 1:
        raise ValueError(f"subsample (the strides) must be >= 1, got {subsample}")
    if min(dilation) < 1:
        raise ValueError(f"filter_dilation must be >= 1, got {dilation}")
    n, channels, rows, cols = input.type.shape
    _, filter_channels, krows, kcols = filters.type.shape
    if channels is not None and filter_channels is not None and channels != filter_channels:
        raise ValueError(f"the input has {channels} channels (axis 1) but the filters expect "
                         f"{filter_channels}")
    border = _border(border_mode, (krows, kcols), dilation)
    return Corr2d(border, subsample, dilation, bool(filter_flip))(input, filters)
