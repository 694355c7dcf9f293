"""The kernels behind the convolution and pooling Ops, as functions of NumPy arrays.

The arithmetic is C (``csrc/kernels.c``), compiled once when the package is
installed: Theano's CorrMM technique for the convolutions (im2col, one BLAS
product, col2im), direct loops for pooling, both split over threads.  The
functions here are small Numba functions that check shapes, allocate the
results and call that C code by its symbol name.  So the same code serves
every PyTensor backend: the Ops' ``perform`` (C VM and Python modes) calls
them directly, the NUMBA backend compiles them into the graph's function,
and neither compiles the kernels themselves, so a graph's first call does
not spend time compiling them.

All convolution kernels compute a cross-correlation; ``flip`` rotates the
filters by 180 degrees first (a true convolution, Theano's default).
"""

from __future__ import annotations

import collections
import ctypes
from typing import Any

import llvmlite.binding
import numba
import numpy as np
import pytensor.tensor as pt
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from pytensor.graph.basic import Variable

from deeplearning_tutorial.ops.kernels import blas_threads

try:
    from deeplearning_tutorial.ops.kernels import _kernels  # type: ignore[attr-defined]
except ImportError as error:  # pragma: no cover - an installation problem
    raise ImportError(
        "deeplearning_tutorial's compiled kernels (deeplearning_tutorial/ops/kernels/_kernels) are missing or "
        "broken: install the package, which compiles them (`make setup`, or `pip install -e .` in the "
        f"repository; it needs a C compiler): {error}"
    ) from error

# Pooling modes, as the C kernels number them.
MAX, SUM, AVERAGE_INC_PAD, AVERAGE_EXC_PAD, L2 = 0, 1, 2, 3, 4
POOL_MODES = {"max": MAX, "sum": SUM, "average_inc_pad": AVERAGE_INC_PAD,
              "average_exc_pad": AVERAGE_EXC_PAD, "l2": L2}

jit: Any = numba.njit(cache=True, nogil=True)  # numba's decorator, typed loosely for mypy
# inlined into their callers at Numba's IR level: no separately compiled function
# (each costs compile time; these two are called from every kernel)
inline = numba.njit(cache=True, nogil=True, inline="always")


def _cython_blas_address(name: str) -> int:
    """Address of a BLAS function exported by ``scipy.linalg.cython_blas`` (the BLAS Numba calls)."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


# Numba-compiled code finds the kernels by name in the libraries loaded
# "permanently"; the name survives in cached compiled graphs, an address would not.
llvmlite.binding.load_library_permanently(_kernels.__file__)
_library = ctypes.CDLL(_kernels.__file__)
_library.dlt_set_blas.argtypes = [ctypes.c_void_p] * 4
_library.dlt_set_blas(_cython_blas_address("sgemm"), _cython_blas_address("dgemm"), *blas_threads.thread_functions())


def _c_function(name: str, pointers: int, integers: int) -> types.ExternalFunction:
    """The C kernel ``name``: status (itemsize, *pointers, geometry struct, *int64 arguments)."""
    return types.ExternalFunction(name, types.int32(types.int64, *[types.voidptr] * pointers, types.voidptr,
                                                    *[types.int64] * integers))


# The geometry structs of kernels.c, field for field, all int64 (the C code reads
# them by name); built as named tuples in the compiled code, handed over by _as_struct.
ConvShape = collections.namedtuple("ConvShape", ["images", "channels", "height", "width", "filters", "kh", "kw",
                                                 "oh", "ow", "ph", "pw", "sh", "sw", "dh", "dw", "groups"])
PoolShape = collections.namedtuple("PoolShape", ["batch", "height", "width", "oh", "ow", "wh", "ww", "sh", "sw",
                                                 "ph", "pw", "ignore_border"])


@intrinsic
def _as_struct(typingctx, fields):
    """A pointer to a copy of the int64 tuple ``fields`` in the caller's stack frame:
    the C struct of the same fields, valid until the caller returns."""
    if not isinstance(fields, types.BaseTuple) or any(field != types.int64 for field in fields):
        raise numba.core.errors.TypingError(f"the kernels' geometry must be a tuple of int64, got {fields}")

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, args[0].type)
        builder.store(args[0], slot)
        return builder.bitcast(slot, cgutils.voidptr_t)

    return types.voidptr(fields), codegen

_c_corr2d = _c_function("dlt_corr2d", 3, 2)
_c_corr2d_grad_weights = _c_function("dlt_corr2d_grad_weights", 3, 2)
_c_corr2d_grad_inputs = _c_function("dlt_corr2d_grad_inputs", 3, 2)
_c_pool = _c_function("dlt_pool", 2, 2)
_c_max_pool_grad = _c_function("dlt_max_pool_grad", 4, 1)
_c_max_pool_grad_grad = _c_function("dlt_max_pool_grad_grad", 4, 1)
_c_average_pool_grad = _c_function("dlt_average_pool_grad", 2, 2)
_c_l2_pool_grad = _c_function("dlt_l2_pool_grad", 4, 1)
_c_stochastic_pool = _c_function("dlt_stochastic_pool", 3, 2)


def struct_sizes() -> tuple[int, int]:
    """sizeof the C structs conv_shape and pool_shape (the named tuples above must match them)."""
    result = (ctypes.c_int64 * 2)()
    _library.dlt_struct_sizes(result)
    return tuple(result)


def chunking(n_images: int, rows: int, positions: int, itemsize: int, threads: int) -> tuple[int, int, int]:
    """How the convolution kernels split ``n_images`` whose unrolled columns are
    ``rows x positions`` each: (images per chunk, chunks, threads used)."""
    result = (ctypes.c_int64 * 3)()
    _library.dlt_chunking(*(ctypes.c_int64(v) for v in (n_images, rows, positions, itemsize, threads)), result)
    return tuple(result)


def _float_size(*arrays):
    """In compiled code: the element size of arrays that are all float32 or all float64,
    and 0 for any other dtypes (which the C kernels refuse)."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_float_size)
def _float_size_of_types(*arrays):
    dtypes = {array.dtype for array in arrays}
    size = {types.float32: 4, types.float64: 8}.get(dtypes.pop(), 0) if len(dtypes) == 1 else 0
    return lambda *arrays: size


NEGATIVE_ACTIVATION = ("stochastic_pool_2d needs non-negative activations (its probabilities are "
                       "a / sum(a)); pool the output of a rectifier such as pt.maximum(a, 0)")


@jit
def _check_status(status):
    if status == 4:
        raise ValueError(NEGATIVE_ACTIVATION)
    if status == 1:
        raise MemoryError("conv2d/pool_2d: out of memory for the kernels' work buffers")
    if status == 2:
        raise RuntimeError("conv2d: the kernels were given no BLAS (scipy.linalg.cython_blas)")
    if status != 0:
        raise TypeError("conv2d/pool_2d: the kernels take arrays of one dtype, float32 or float64")


# --------------------------------------------------------------------------
# Output sizes: one function per operation, for ints (the kernels, compiled
# by Numba; the JAX backend) and for symbolic sizes (the Ops' shapes) alike
# --------------------------------------------------------------------------

# Border modes that derive the zero padding from the filter size (Theano's).
FULL, HALF = -1, -2
BORDER_MODES = {"full": FULL, "half": HALF}


def _nonnegative(value):
    """max(value, 0), for an int or a symbolic integer."""
    return pt.maximum(value, 0) if isinstance(value, Variable) else max(value, 0)


@overload(_nonnegative)
def _nonnegative_compiled(value):
    return lambda value: max(value, 0)


def conv_padding(border, kernel, dilation):
    """Zero padding along one axis: ``border`` itself when >= 0; derived from the
    (dilated) filter size for ``FULL`` (every overlap) and ``HALF`` (Theano's 'half')."""
    if border == FULL:
        return (kernel - 1) * dilation
    if border == HALF:
        return ((kernel - 1) * dilation + 1) // 2
    return border


def conv_output_size(size, kernel, pad, stride, dilation):
    """Length of a 'valid' correlation along one axis after zero padding by ``pad``."""
    return (size + 2 * pad - (kernel - 1) * dilation - 1) // stride + 1


def pool_output_size(size, window, stride, pad, ignore_border):
    """Theano's pooled length along one axis."""
    padded = size + 2 * pad
    if ignore_border:
        return _nonnegative((padded - window) // stride + 1)
    if stride >= window:
        return (padded - 1) // stride + 1
    return _nonnegative((padded - 1 - window + stride) // stride) + 1


_conv_padding, _conv_output_size, _pool_output_size = map(jit, (conv_padding, conv_output_size, pool_output_size))


# --------------------------------------------------------------------------
# The geometry structs: one function per operation checks the sizes and
# fills the struct
# --------------------------------------------------------------------------


@inline
def _conv_geometry(images, channels, height, width, filters, filter_channels, kh, kw, ph, pw, sh, sw, dh, dw,
                   groups):
    """The conv_shape struct of a correlation; ``ph``/``pw`` may be ``FULL`` or ``HALF``."""
    if groups < 1 or filters % groups != 0:
        raise ValueError("conv2d: num_groups must be >= 1 and divide the number of filters (axis 0)")
    if channels != filter_channels * groups:
        raise ValueError("conv2d: the input's channel count (axis 1) differs from the filters' (axis 1) "
                         "times num_groups")
    ph, pw = _conv_padding(ph, kh, dh), _conv_padding(pw, kw, dw)
    oh, ow = _conv_output_size(height, kh, ph, sh, dh), _conv_output_size(width, kw, pw, sw, dw)
    if oh < 1 or ow < 1:
        raise ValueError("conv2d: the (dilated) filters are larger than the padded input")
    return ConvShape(images=images, channels=channels, height=height, width=width, filters=filters, kh=kh, kw=kw,
                     oh=oh, ow=ow, ph=ph, pw=pw, sh=sh, sw=sw, dh=dh, dw=dw, groups=groups)


@inline
def _pool_geometry(batch, height, width, wh, ww, sh, sw, ph, pw, ignore_border):
    """The pool_shape struct of pooling (batch, height, width) arrays."""
    if ignore_border and (height + 2 * ph < wh or width + 2 * pw < ww):
        raise ValueError("pool_2d: the pooling window is larger than the padded input (ignore_border=True "
                         "leaves no window); use a smaller ws or ignore_border=False")
    return PoolShape(batch=batch, height=height, width=width, oh=_pool_output_size(height, wh, sh, ph, ignore_border),
                     ow=_pool_output_size(width, ww, sw, pw, ignore_border), wh=wh, ww=ww, sh=sh, sw=sw, ph=ph, pw=pw,
                     ignore_border=np.int64(ignore_border))


# --------------------------------------------------------------------------
# Convolution (cross-correlation)
# --------------------------------------------------------------------------


@jit
def corr2d(x, kern, ph, pw, sh, sw, dh, dw, groups, flip, threads):
    """'Valid' cross-correlation of zero-padded ``x`` (n, c, h, w) with ``kern`` (f, c/groups, kh, kw);
    ``ph``/``pw`` may be ``FULL`` or ``HALF``."""
    x, kern = np.ascontiguousarray(x), np.ascontiguousarray(kern)
    n_images, channels, height, width = x.shape
    n_filters, filter_channels, kh, kw = kern.shape
    shape = _conv_geometry(images=n_images, channels=channels, height=height, width=width, filters=n_filters,
                           filter_channels=filter_channels, kh=kh, kw=kw, ph=ph, pw=pw, sh=sh, sw=sw, dh=dh, dw=dw,
                           groups=groups)
    out = np.empty((n_images, n_filters, shape.oh, shape.ow), dtype=x.dtype)
    _check_status(_c_corr2d(_float_size(x, kern), x.ctypes, kern.ctypes, out.ctypes, _as_struct(shape), flip, threads))
    return out


@jit
def corr2d_grad_weights(x, gout, kh, kw, ph, pw, sh, sw, dh, dw, groups, flip, threads):
    """Gradient of :func:`corr2d` with respect to the (f, c/groups, kh, kw) filters, given the output gradient."""
    x, gout = np.ascontiguousarray(x), np.ascontiguousarray(gout)
    n_images, channels, height, width = x.shape
    n_filters = gout.shape[1]
    filter_channels = channels // groups if groups > 0 else 0
    shape = _conv_geometry(images=n_images, channels=channels, height=height, width=width, filters=n_filters,
                           filter_channels=filter_channels, kh=kh, kw=kw, ph=ph, pw=pw, sh=sh, sw=sw, dh=dh, dw=dw,
                           groups=groups)
    if gout.shape[0] != n_images or gout.shape[2] != shape.oh or gout.shape[3] != shape.ow:
        raise ValueError("conv2d gradient: the output gradient's shape does not match the input's")
    d_kern = np.empty((n_filters, filter_channels, kh, kw), dtype=x.dtype)
    _check_status(_c_corr2d_grad_weights(_float_size(x, gout), x.ctypes, gout.ctypes, d_kern.ctypes, _as_struct(shape),
                                         flip, threads))
    return d_kern


@jit
def corr2d_grad_inputs(kern, gout, height, width, ph, pw, sh, sw, dh, dw, groups, flip, threads):
    """Gradient of :func:`corr2d` with respect to its (n, c, height, width) input, given the output gradient."""
    kern, gout = np.ascontiguousarray(kern), np.ascontiguousarray(gout)
    n_filters, filter_channels, kh, kw = kern.shape
    n_images = gout.shape[0]
    shape = _conv_geometry(images=n_images, channels=filter_channels * groups, height=height, width=width,
                           filters=n_filters, filter_channels=filter_channels, kh=kh, kw=kw, ph=ph, pw=pw, sh=sh,
                           sw=sw, dh=dh, dw=dw, groups=groups)
    if gout.shape[1] != n_filters or gout.shape[2] != shape.oh or gout.shape[3] != shape.ow:
        raise ValueError("conv2d gradient: the output gradient's shape does not match the filters'")
    dx = np.empty((n_images, filter_channels * groups, height, width), dtype=gout.dtype)
    _check_status(_c_corr2d_grad_inputs(_float_size(kern, gout), kern.ctypes, gout.ctypes, dx.ctypes, _as_struct(shape),
                                        flip, threads))
    return dx


# --------------------------------------------------------------------------
# Pooling over the last two axes of a (batch, h, w) array
# --------------------------------------------------------------------------


@jit
def pool(x, wh, ww, sh, sw, ph, pw, ignore_border, mode, threads):
    """Theano's pooling of ``x`` (b, h, w); padding never wins a max and only
    'average_inc_pad' counts it; a NaN in a window makes its max NaN."""
    x = np.ascontiguousarray(x)
    batch, height, width = x.shape
    shape = _pool_geometry(batch, height, width, wh, ww, sh, sw, ph, pw, ignore_border)
    out = np.empty((batch, shape.oh, shape.ow), dtype=x.dtype)
    _check_status(_c_pool(_float_size(x), x.ctypes, out.ctypes, _as_struct(shape), mode, threads))
    return out


@jit
def max_pool_grad(x, maxout, gz, wh, ww, sh, sw, ph, pw, ignore_border, threads):
    """Gradient of max pooling: each window's gradient goes to every input equal to its maximum."""
    x, maxout, gz = np.ascontiguousarray(x), np.ascontiguousarray(maxout), np.ascontiguousarray(gz)
    batch, height, width = x.shape
    shape = _pool_geometry(batch, height, width, wh, ww, sh, sw, ph, pw, ignore_border)
    if maxout.shape != (batch, shape.oh, shape.ow) or gz.shape != maxout.shape:
        raise ValueError("pool_2d gradient: the pooled input or its gradient does not match the input's shape")
    gx = np.empty_like(x)
    _check_status(_c_max_pool_grad(_float_size(x, maxout, gz), x.ctypes, maxout.ctypes, gz.ctypes, gx.ctypes,
                                   _as_struct(shape), threads))
    return gx


@jit
def max_pool_grad_grad(x, maxout, ggx, wh, ww, sh, sw, ph, pw, ignore_border, threads):
    """Gradient of :func:`max_pool_grad` with respect to its output gradient, given ``ggx``
    (shaped like ``x``): each window gathers ``ggx`` at every input equal to its maximum."""
    x, maxout, ggx = np.ascontiguousarray(x), np.ascontiguousarray(maxout), np.ascontiguousarray(ggx)
    batch, height, width = x.shape
    shape = _pool_geometry(batch, height, width, wh, ww, sh, sw, ph, pw, ignore_border)
    if maxout.shape != (batch, shape.oh, shape.ow) or ggx.shape != x.shape:
        raise ValueError("pool_2d second derivative: the pooled input or the gradient does not match the "
                         "input's shape")
    ggz = np.empty_like(maxout)
    _check_status(_c_max_pool_grad_grad(_float_size(x, maxout, ggx), x.ctypes, maxout.ctypes, ggx.ctypes,
                                        ggz.ctypes, _as_struct(shape), threads))
    return ggz


@jit
def average_pool_grad(gz, height, width, wh, ww, sh, sw, ph, pw, ignore_border, mode, threads):
    """Gradient of sum and average pooling: each window's gradient spread over its (b, height, width) inputs."""
    gz = np.ascontiguousarray(gz)
    batch = gz.shape[0]
    shape = _pool_geometry(batch, height, width, wh, ww, sh, sw, ph, pw, ignore_border)
    if gz.shape[1] != shape.oh or gz.shape[2] != shape.ow:
        raise ValueError("pool_2d gradient: the output gradient does not match the input's shape")
    gx = np.empty((batch, height, width), dtype=gz.dtype)
    _check_status(_c_average_pool_grad(_float_size(gz), gz.ctypes, gx.ctypes, _as_struct(shape), mode, threads))
    return gx


@jit
def l2_pool_grad(x, out, gz, wh, ww, sh, sw, ph, pw, ignore_border, threads):
    """Gradient of L2 pooling: each input ``a`` gets ``a * gz / out`` from every window
    holding it, nothing from a window whose result is 0."""
    x, out, gz = np.ascontiguousarray(x), np.ascontiguousarray(out), np.ascontiguousarray(gz)
    batch, height, width = x.shape
    shape = _pool_geometry(batch, height, width, wh, ww, sh, sw, ph, pw, ignore_border)
    if out.shape != (batch, shape.oh, shape.ow) or gz.shape != out.shape:
        raise ValueError("pool_2d gradient: the pooled input or its gradient does not match the input's shape")
    gx = np.empty_like(x)
    _check_status(_c_l2_pool_grad(_float_size(x, out, gz), x.ctypes, out.ctypes, gz.ctypes, gx.ctypes,
                                  _as_struct(shape), threads))
    return gx


@jit
def stochastic_pool(x, seed, wh, ww, sh, sw, ignore_border, threads):
    """Stochastic pooling of ``x`` (n, rows, cols) for the draw ``seed`` (an int): the picked
    values and their flat indices in the image (-1 for a window of zeros, which outputs 0).
    Each window's uniform number is SplitMix64's (:func:`window_uniform`) for its flat index
    in the pooled output."""
    x = np.ascontiguousarray(x)
    batch, height, width = x.shape
    shape = PoolShape(batch=batch, height=height, width=width, oh=_pool_output_size(height, wh, sh, 0, ignore_border),
                      ow=_pool_output_size(width, ww, sw, 0, ignore_border), wh=wh, ww=ww, sh=sh, sw=sw, ph=0, pw=0,
                      ignore_border=np.int64(ignore_border))
    out = np.empty((batch, shape.oh, shape.ow), dtype=x.dtype)
    picked = np.empty((batch, shape.oh, shape.ow), dtype=np.int64)
    _check_status(_c_stochastic_pool(_float_size(x), x.ctypes, out.ctypes, picked.ctypes, _as_struct(shape), seed,
                                     threads))
    return out, picked


_library.dlt_window_uniform.restype = ctypes.c_double
_library.dlt_window_uniform.argtypes = [ctypes.c_int64, ctypes.c_int64]


def window_uniform(seed: int, index: int) -> float:
    """Stochastic pooling's uniform number in [0, 1) for window ``index`` (its flat index in the
    pooled output) of the draw ``seed``: the top 53 bits of SplitMix64's output number
    ``index + 1`` (Steele, Lea and Flood, 2014), the number the C kernel draws."""
    return _library.dlt_window_uniform(seed, index)
