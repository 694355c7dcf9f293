"""2-D convolution for PyTensor with Theano's ``conv2d`` semantics and gradients.

``conv2d`` hands the work to :class:`Corr2d`, a cross-correlation Op, like
Theano's ``CorrMM``; its ``filter_flip`` prop flips the filters first (a true
convolution, ``conv2d``'s default).  Its gradients are two further Ops,
:class:`Corr2dGradWeights` and :class:`Corr2dGradInputs`, whose own gradients
are built from the three Ops again, so second derivatives work too.

``conv2d`` is Theano 1.0's ``theano.tensor.nnet.conv2d``; its first six
parameters are also those of the older ``theano.tensor.nnet.conv.conv2d``,
so that ``from deeplearning_tutorial.ops import conv`` ports code calling
``conv.conv2d`` unchanged.
"""

from __future__ import annotations

import warnings

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
    """Shared parameters: zero padding ``border`` (rows, cols), each an int or 'full'
    or 'half' (derived from the filter size when the graph runs, so the filters' shape
    may be unknown before), strides and dilation as (rows, cols) pairs,
    ``filter_flip``: the filters are used rotated by 180 degrees (a convolution), and
    ``num_groups``: channels and filters split into that many groups, each group of
    filters seeing its group of channels only (Theano's grouped convolution).

    The flip lives in the Ops rather than in the graph (as a ``[:, :, ::-1, ::-1]``
    view) so that the filter gradient comes out C-contiguous: a negatively strided
    gradient would make the updated filters negatively strided too, and the NUMBA
    backend compiles a function again for each new memory layout of its inputs.
    """

    __props__ = ("border", "subsample", "dilation", "filter_flip", "num_groups")

    def __init__(self, border=(0, 0), subsample: Pair = (1, 1), dilation: Pair = (1, 1),
                 filter_flip: bool = False, num_groups: int = 1):
        self.border = tuple(border)
        self.subsample = tuple(subsample)
        self.dilation = tuple(dilation)
        self.filter_flip = bool(filter_flip)
        self.num_groups = int(num_groups)

    @property
    def params(self) -> tuple[int, ...]:
        """(ph, pw, sh, sw, dh, dw, groups, flip), the kernels' arguments after the arrays;
        'full' and 'half' padding as the kernels' codes FULL and HALF."""
        codes = tuple(kernels.BORDER_MODES.get(b, b) for b in self.border)
        return (*codes, *self.subsample, *self.dilation, self.num_groups, self.filter_flip)

    def _out_size(self, size, kernel, axis: int):
        """Output length along ``axis`` (0: rows, 1: cols): an int, a symbolic size, or
        None when a static size is unknown."""
        if size is None or kernel is None:
            return None
        dilation = self.dilation[axis]
        pad = kernels.conv_padding(self.params[axis], kernel, dilation)
        return kernels.conv_output_size(size, kernel, pad, self.subsample[axis], dilation)


def _static_pair(shape) -> tuple:
    """The two entries of a symbolic shape vector, as ints where they are constants."""
    values: list[int | None] = []
    for i in range(2):
        try:
            values.append(int(get_scalar_constant_value(shape[i])))
        except NotScalarConstantError:
            values.append(None)
    return tuple(values)


def _check_groups(channels, filter_channels, n_filters, num_groups: int):
    """The static channel and filter counts (None: unknown) against ``num_groups``."""
    if channels is not None and channels % num_groups:
        raise ValueError(f"conv2d: num_groups={num_groups} does not divide the input's {channels} channels")
    if n_filters is not None and n_filters % num_groups:
        raise ValueError(f"conv2d: num_groups={num_groups} does not divide the {n_filters} filters")
    if channels is not None and filter_channels is not None and channels != filter_channels * num_groups:
        expected = f"{channels} // num_groups = {channels // num_groups}" if num_groups > 1 else channels
        raise ValueError(f"conv2d: the input has {channels} channels (axis 1), so the filters need {expected} "
                         f"channels each; they have {filter_channels}")


class Corr2d(_Corr2dBase):
    """'Valid' cross-correlation of a zero-padded (n, c, h, w) input with (f, c/num_groups, kh, kw) filters."""

    def make_node(self, img, kern):
        img = _float_tensor(img, 4, "conv2d input")
        kern = _float_tensor(kern, 4, "conv2d filters")
        dtype = upcast(img.dtype, kern.dtype)
        img, kern = img.astype(dtype), kern.astype(dtype)
        n, channels, h, w = img.type.shape
        f, filter_channels, kh, kw = kern.type.shape
        _check_groups(channels, filter_channels, f, self.num_groups)
        for axis, (size, k) in enumerate(((h, kh), (w, kw))):
            out = self._out_size(size, k, axis)
            if out is not None and out < 1:
                pad = kernels.conv_padding(self.params[axis], k, self.dilation[axis])
                raise ValueError(
                    f"conv2d: the dilated filter ({(k - 1) * self.dilation[axis] + 1} along axis "
                    f"{axis + 2}) is larger than the padded input ({size + 2 * pad})"
                )
        shape = (n, f, self._out_size(h, kh, 0), self._out_size(w, kw, 1))
        return Apply(self, [img, kern], [TensorType(dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        img, kern = inputs
        output_storage[0][0] = kernels.corr2d(img, kern, *self.params, numba.get_num_threads())

    def infer_shape(self, node, shapes):
        (n, _, h, w), (f, _, kh, kw) = shapes
        return [(n, f, self._out_size(h, kh, 0), self._out_size(w, kw, 1))]

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
        channels = img.type.shape[1]
        shape = (gout.type.shape[1], None if channels is None else channels // self.num_groups, kh, kw)
        return Apply(self, [img, gout, kernel_shape], [TensorType(img.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        img, gout, (kh, kw) = inputs
        output_storage[0][0] = kernels.corr2d_grad_weights(img, gout, int(kh), int(kw), *self.params,
                                                           numba.get_num_threads())

    def infer_shape(self, node, shapes):
        img, gout, kernel_shape = node.inputs
        return [(shapes[1][1], shapes[0][1] // self.num_groups, kernel_shape[0], kernel_shape[1])]

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
        filter_channels = kern.type.shape[1]
        channels = None if filter_channels is None else filter_channels * self.num_groups
        shape = (gout.type.shape[0], channels, h, w)
        return Apply(self, [kern, gout, image_shape], [TensorType(kern.dtype, shape=shape)()])

    def perform(self, node, inputs, output_storage):
        kern, gout, (h, w) = inputs
        output_storage[0][0] = kernels.corr2d_grad_inputs(kern, gout, int(h), int(w), *self.params,
                                                          numba.get_num_threads())

    def infer_shape(self, node, shapes):
        kern, gout, image_shape = node.inputs
        return [(shapes[1][0], shapes[0][1] * self.num_groups, image_shape[0], image_shape[1])]

    def connection_pattern(self, node):
        return [[True], [True], [False]]

    def pullback(self, inputs, outputs, output_grads):
        kern, gout, image_shape = inputs
        (g_img,) = output_grads
        d_kern = Corr2dGradWeights(*self._props())(g_img, gout, kern.shape[-2:])
        d_gout = Corr2d(*self._props())(g_img, kern)
        return [d_kern, d_gout, DisconnectedType()()]


def _border(border_mode) -> tuple:
    """The Ops' zero padding (rows, cols) for a Theano ``border_mode``: ints, or
    'full'/'half', which the Ops derive from the filter size."""
    if isinstance(border_mode, str):
        if border_mode == "valid":
            return (0, 0)
        if border_mode not in kernels.BORDER_MODES:
            raise ValueError(f"border_mode must be 'valid', 'full', 'half', an int or a pair of ints; "
                             f"got {border_mode!r}")
        return (border_mode, border_mode)
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


# Keywords of Theano's old ``theano.tensor.nnet.conv.conv2d`` that only tuned its
# speed (its ConvOp's loop unrolling, OpenMP, messages): accepted and ignored.
SPEED_ONLY_KEYWORDS = frozenset({"unroll_batch", "unroll_kern", "unroll_patch", "openmp", "verbose", "version",
                                 "direction_hint"})


def conv2d(input, filters, input_shape=None, filter_shape=None, border_mode="valid", subsample=(1, 1),
           filter_flip=True, image_shape=None, filter_dilation=(1, 1), num_groups=1, **speed_keywords):
    """Theano's ``conv2d``: a batch of multi-channel 2-D convolutions.

    The parameters are Theano 1.0's ``theano.tensor.nnet.conv2d``, in its
    positional order; the first six are also those of the older
    ``theano.tensor.nnet.conv.conv2d`` (whose name for ``input_shape`` was
    ``image_shape``), so code written for either calls this function
    unchanged.

    Parameters
    ----------
    input : 4-D tensor
        (batch, channels, rows, cols), float32 or float64.
    filters : 4-D tensor
        (n_filters, channels / num_groups, rows, cols).
    input_shape, filter_shape : tuple of 4 ints or None, optional
        The shapes, ``None`` entries allowed: checked against the tensors'
        static shapes at once and against the arrays when the graph runs,
        and the tensors' static shapes from then on.
    border_mode : {'valid', 'full', 'half'}, int or (int, int)
        Zero padding: none, filter size - 1 (every overlap), filter size // 2
        (the output keeps the input's size for odd filters), or explicit
        amounts for (rows, cols).  'full' and 'half' are computed when the
        graph runs, so the filter size need not be known before.
    subsample : int or (int, int)
        The strides.
    filter_flip : bool
        True: a convolution (the filters rotated by 180 degrees); False: a
        cross-correlation.
    image_shape : tuple, optional
        The old name of ``input_shape``.
    filter_dilation : int or (int, int)
        Spacing between the filter's taps (atrous convolution).
    num_groups : int
        Grouped convolution: the channels and the filters are split into
        this many groups, group g of the filters seeing group g of the
        channels only.
    **speed_keywords
        The old ``conv.conv2d``'s speed settings (``unroll_batch``,
        ``unroll_kern``, ``unroll_patch``, ``openmp``, ``verbose``,
        ``version``, ``direction_hint``): ignored, with a warning, as in
        Theano 1.0.

    Returns
    -------
    4-D tensor
        (batch, n_filters, out_rows, out_cols).

    Raises
    ------
    TypeError
        For an unknown keyword; tensors that are not 4-D, or not float32 or
        float64; ``subsample``, ``filter_dilation`` or a numeric
        ``border_mode`` that is neither an int nor a pair of ints.
    ValueError
        For an unknown border mode or a negative padding; a stride or a
        dilation below 1; ``num_groups`` not an int >= 1; both
        ``input_shape`` and ``image_shape``; an ``input_shape`` or
        ``filter_shape`` without 4 entries or contradicting the tensor's
        static shape; the old ``ConvOp``'s 'logical' shapes
        (``imshp_logical``, ``kshp_logical``, ``kshp_logical_top_aligned``),
        an upsampling this function does not do; or static shapes that do
        not fit together (channel and filter counts against ``num_groups``,
        a dilated filter larger than the padded input).  The kernels check
        the channels and sizes again, with a ``ValueError``, when the graph
        runs.

    Warns
    -----
    UserWarning
        For the old ``conv.conv2d``'s speed keywords, which are ignored.
    """
    unknown = set(speed_keywords) - SPEED_ONLY_KEYWORDS
    if unknown & {"imshp_logical", "kshp_logical", "kshp_logical_top_aligned"}:
        raise ValueError("conv2d: the 'logical' image and filter shapes of Theano's old ConvOp (an upsampling) "
                         "are not supported; upsample the input explicitly instead")
    if unknown:
        raise TypeError(f"conv2d() got unexpected keyword arguments {sorted(unknown)}")
    if speed_keywords:
        warnings.warn(f"conv2d: {sorted(speed_keywords)} only tuned the speed of Theano's old ConvOp and are "
                      f"ignored", stacklevel=2)
    if image_shape is not None:
        if input_shape is not None:
            raise ValueError("conv2d: pass input_shape or its old name image_shape, not both")
        input_shape = image_shape
    input = _with_shape(_float_tensor(input, 4, "conv2d input"), input_shape, "input_shape")
    filters = _with_shape(_float_tensor(filters, 4, "conv2d filters"), filter_shape, "filter_shape")
    subsample = _pair(subsample, "subsample")
    dilation = _pair(filter_dilation, "filter_dilation")
    if min(subsample) < 1:
        raise ValueError(f"subsample (the strides) must be >= 1, got {subsample}")
    if min(dilation) < 1:
        raise ValueError(f"filter_dilation must be >= 1, got {dilation}")
    if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"num_groups must be an int >= 1, got {num_groups!r}")
    return Corr2d(_border(border_mode), subsample, dilation, bool(filter_flip), int(num_groups))(input, filters)
